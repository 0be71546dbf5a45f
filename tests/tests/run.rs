//! `powerpool run` against GNU parallel (`parallel -k`, installed by scripts/setup): the same
//! inputs and command give byte-identical output, for every replacement string but `{%}`,
//! `--tag`, several `:::` sources, `--colsep`, `-n`, `-0`, and inputs with spaces, quotes,
//! unicode and leading dashes. Commands are ones that behave the same as a shell builtin and
//! as a program (parallel runs jobs through a shell; `-q` makes it pass words as words, which
//! is what `run` does). Then failures, exit codes, the joblog and --resume.

use powerpool_tests::*;
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `cmd` with `stdin` fed to it, under the watchdog.
fn with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = wait_output(child, TIMEOUT);
    feeder.join().expect("feeder");
    out
}

fn parallel(args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new("parallel");
    cmd.args(["--will-cite", "-k", "-j", "4"]).args(args);
    with_stdin(&mut cmd, stdin)
}

fn pp_run(args: &[&str], stdin: &[u8]) -> Output {
    with_stdin(powerpool(["run", "--workers", "2"]).args(args), stdin)
}

/// Both give the same stdout, and both succeed.
fn same(pp_args: &[&str], par_args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let ours = pp_run(pp_args, stdin);
    let theirs = parallel(par_args, stdin);
    assert!(theirs.status.success(), "parallel: {}", String::from_utf8_lossy(&theirs.stderr));
    assert!(ours.status.success(), "run: {}", String::from_utf8_lossy(&ours.stderr));
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&theirs.stdout),
        "run {pp_args:?} vs parallel {par_args:?}"
    );
    ours.stdout
}

const AWKWARD: &str = "plain\nwith space\n  leading and trailing  \nit's\n\"double\"\n\
    -n\n--help\n-e\nunicode: héllo wörld ✓ 日本\na/b.c/d\nfoo.tar.gz\n.bashrc\n/a\na/\n\n\
    dir/.hidden\nx/.y.z\n$HOME\n*\n;echo pwned\n";

/// The inputs for `echo`: all but `--help`, where `/bin/echo` and the shell's builtin differ.
fn for_echo() -> String {
    AWKWARD.replace("--help\n", "")
}

#[test]
fn seq_1000_echo_is_what_parallel_k_prints() {
    let input: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    let out = same(&["--", "echo", "{}"], &["echo", "{}"], input.as_bytes());
    assert_eq!(out, input.as_bytes());
}

#[test]
fn every_replacement_string_on_awkward_inputs() {
    let words = ["{}", "{.}", "{/}", "{//}", "{/.}", "{#}", "x{}y"];
    let mut ours = vec!["--", "printf", "[%s]\n"];
    ours.extend(words);
    let mut theirs = vec!["-q", "printf", "[%s]\n"];
    theirs.extend(words);
    same(&ours, &theirs, AWKWARD.as_bytes());
    // echo, with its leading-dash inputs: the builtin and /bin/echo agree on these.
    same(&["--", "echo", "{}"], &["-q", "echo", "{}"], for_echo().as_bytes());
}

#[test]
fn tag_several_sources_colsep_and_n() {
    same(&["--tag", "--", "echo", "{}"], &["--tag", "-q", "echo", "{}"], for_echo().as_bytes());
    let sources = ["echo", "{2}", "{1}", "{}", ":::", "a", "b c", "-n", ":::", "1", "2", "é"];
    let mut ours = vec!["--"];
    ours.extend(sources);
    let mut theirs = vec!["-q"];
    theirs.extend(sources);
    same(&ours, &theirs, b"");
    let mut tagged = vec!["--tag"];
    tagged.extend(&ours);
    let mut tagged_par = vec!["--tag"];
    tagged_par.extend(&theirs);
    same(&tagged, &tagged_par, b"");
    let csv = "a,b,c\nd,e,f\n1,2 3,'4'\n";
    same(
        &["--colsep", ",", "--", "printf", "<%s>\n", "{3}", "{1}", "{2}"],
        &["--colsep", ",", "-q", "printf", "<%s>\n", "{3}", "{1}", "{2}"],
        csv.as_bytes(),
    );
    same(
        &["--colsep", ",", "--tag", "--", "echo", "{2}"],
        &["--colsep", ",", "--tag", "-q", "echo", "{2}"],
        csv.as_bytes(),
    );
    let input: String = (1..=9).map(|i| format!("{i}\n")).collect();
    same(&["-n", "2", "--", "echo", "{}"], &["-n", "2", "-q", "echo", "{}"], input.as_bytes());
    same(&["-n", "3", "--", "echo"], &["-n", "3", "-q", "echo"], input.as_bytes());
    same(&["-0", "--", "echo", "[{}]"], &["-0", "-q", "echo", "[{}]"], b"a b\0c\nd\0");
}

#[test]
fn shell_mode_runs_sh_with_quoted_values() {
    let out = pp_run(&["--shell", "--", "echo {} | tr a-z A-Z; echo {#}"], b"it's\n$HOME\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "IT'S\n1\n$HOME\n2\n");
    let theirs = parallel(&["echo {} '|' tr a-z A-Z';' echo {#}"], b"it's\n$HOME\n");
    assert!(theirs.status.success());
}

#[test]
fn dry_run_prints_the_commands_and_runs_nothing() {
    let dir = TempDir::new("dry");
    let marker = dir.0.join("ran");
    let out = pp_run(&["--dry-run", "--", "touch", marker.to_str().unwrap(), "{}"], b"a b\nit's\n");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("'a b'") && text.contains(r#"'it'"'"'s'"#), "{text}");
    assert!(!marker.exists(), "--dry-run ran a job");
}

#[test]
fn failing_signalled_and_timed_out_jobs_are_listed_with_exit_5() {
    let dir = TempDir::new("fails");
    let log = dir.0.join("log");
    let script = "case $1 in 2) exit 3;; 3) kill -9 $$;; 4) sleep 30;; esac; echo out $1";
    let out = run_with_timeout(
        powerpool(["run", "--workers", "2", "--task-timeout", "1s", "--joblog"])
            .arg(&log)
            .args(["--", "sh", "-c", script, "sh", "{}", ":::", "1", "2", "3", "4", "5"]),
        std::time::Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out 1\nout 5\n");
    assert!(stderr.contains("failed job 2 (2): exited with status 3"), "{stderr}");
    assert!(stderr.contains("failed job 3 (3): killed by SIGKILL"), "{stderr}");
    assert!(stderr.contains("failed job 4 (4): timed out"), "{stderr}");
    assert!(stderr.contains("3 of 5 job(s) failed"), "{stderr}");
    let log = std::fs::read_to_string(&log).expect("joblog");
    let cols: Vec<Vec<&str>> = log.lines().skip(1).map(|l| l.split('\t').collect()).collect();
    let by_seq = |s: &str| cols.iter().find(|c| c[0] == s).expect("logged").clone();
    assert_eq!((by_seq("2")[6], by_seq("2")[7]), ("3", "0"));
    assert_eq!((by_seq("3")[6], by_seq("3")[7]), ("0", "9"));
    assert_eq!((by_seq("4")[6], by_seq("4")[7]), ("-1", "15"));
    assert_eq!((by_seq("5")[5], by_seq("5")[6]), ("6", "0"), "Receive is stdout's bytes");
}

#[test]
fn halt_on_error_stops_at_the_first_failure_with_exit_4() {
    let input: String = (1..=50).map(|i| format!("{i}\n")).collect();
    let out = pp_run(
        &["--halt-on-error", "--", "sh", "-c", "echo $1; [ $1 != 7 ]", "sh", "{}"],
        input.as_bytes(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let expected: String = (1..=7).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "every output up to the failure");
    assert!(stderr.contains("job 7 failed (exited with status 1)"), "{stderr}");
    // --retries runs a failed job again; one that passes the second time is no failure.
    let dir = TempDir::new("retry");
    let flag = dir.0.join("once");
    let script = format!("[ -e {0} ] || {{ touch {0}; exit 1; }}; echo ok", flag.display());
    let out = pp_run(&["--retries", "1", "--", "sh", "-c", &script, ":::", "x"], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"ok\n");
}

#[test]
fn our_joblog_is_accepted_by_parallels_resume_and_ours_runs_exactly_the_missing_jobs() {
    let dir = TempDir::new("resume");
    let ours = dir.0.join("ours.log");
    let out =
        pp_run(&["--joblog", ours.to_str().unwrap(), "--", "echo", ":::", "1", "2", "3"], b"");
    assert!(out.status.success());
    let theirs = dir.0.join("theirs.log");
    std::fs::copy(&ours, &theirs).expect("copy");
    let all = ["echo", ":::", "1", "2", "3", "4", "5"];
    let mut par = vec!["--resume", "--joblog", theirs.to_str().unwrap()];
    par.extend(all);
    let par = parallel(&par, b"");
    assert!(par.status.success(), "{}", String::from_utf8_lossy(&par.stderr));
    assert!(par.stderr.is_empty(), "parallel complained: {}", String::from_utf8_lossy(&par.stderr));
    assert_eq!(String::from_utf8_lossy(&par.stdout), "4\n5\n");
    let mut again = vec!["--resume", "--joblog", ours.to_str().unwrap(), "--"];
    again.extend(all);
    let resumed = pp_run(&again, b"");
    assert!(resumed.status.success());
    assert_eq!(String::from_utf8_lossy(&resumed.stdout), "4\n5\n");
    let log = std::fs::read_to_string(&ours).expect("log");
    let seqs: Vec<&str> = log.lines().skip(1).map(|l| l.split('\t').next().unwrap()).collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(sorted, ["1", "2", "3", "4", "5"], "appended, each once: {log}");
    assert_eq!(log.lines().filter(|l| l.starts_with("Seq\t")).count(), 1, "one header");
    // --resume-failed runs the failed ones again, and only them.
    let failing = dir.0.join("failing.log");
    let script = ["sh", "-c", "echo $1; [ $1 != 2 ]", "sh", "{}", ":::", "1", "2", "3"];
    let mut first = vec!["--joblog", failing.to_str().unwrap(), "--"];
    first.extend(script);
    assert_eq!(pp_run(&first, b"").status.code(), Some(5));
    let mut retry = vec!["--resume-failed", "--joblog", failing.to_str().unwrap(), "--"];
    retry.extend(script);
    let retried = pp_run(&retry, b"");
    assert_eq!(String::from_utf8_lossy(&retried.stdout), "2\n");
}

#[test]
fn run_shards_merge_into_the_single_run() {
    let dir = TempDir::new("runshard");
    let input = dir.0.join("in");
    std::fs::write(&input, (1..=25).map(|i| format!("{i}\n")).collect::<String>()).unwrap();
    let whole = pp_run(&["--input", input.to_str().unwrap(), "--", "echo", "x{}"], b"");
    let mut shards = Vec::new();
    for k in 0..4 {
        let file = dir.0.join(format!("s{k}"));
        let out = pp_run(
            &[
                "--input",
                input.to_str().unwrap(),
                "--shard",
                &format!("{k}/4"),
                "-o",
                file.to_str().unwrap(),
                "--",
                "echo",
                "x{}",
            ],
            b"",
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        shards.push(file);
    }
    shards.reverse();
    let merged = run(powerpool(["merge"]).args(&shards));
    assert!(merged.status.success(), "{}", String::from_utf8_lossy(&merged.stderr));
    assert_eq!(merged.stdout, whole.stdout);
    let missing = run(powerpool(["merge"]).args(&shards[1..]));
    assert_usage_error(&missing, "a missing run shard");
}

#[test]
fn bad_run_command_lines_get_one_line_and_exit_2() {
    for (args, what) in [
        (vec!["run"], "no command"),
        (vec!["run", "--", ":::", "a"], "no command before :::"),
        (vec!["run", "--input", "/nonexistent/in", "--", "echo"], "unreadable input"),
        (vec!["run", "--resume", "--", "echo"], "--resume without --joblog"),
        (vec!["run", "--shard", "0/2", "--", "echo"], "--shard without --input"),
        (vec!["run", "-n", "0", "--", "echo"], "-n 0"),
        (vec!["run", "--buffer", "0", "--", "echo"], "--buffer 0"),
        (vec!["run", "--input", "x", "--", "echo", ":::", "a"], "--input with :::"),
        (vec!["map", "--exec", "", "--input", "-"], "an empty --exec"),
        (vec!["map", "--exec", "no-such-program-here"], "an --exec program not found"),
        (vec!["map", "--exec", "cat 'unclosed"], "an unclosed quote in --exec"),
        (vec!["map", "square", "--input", "-"], "an integer task over lines"),
        (vec!["map", "sha256"], "a byte task without --input"),
    ] {
        assert_usage_error(&run(&mut powerpool(args)), what);
    }
}

#[test]
fn flags_naming_the_same_file_are_refused_before_any_is_touched() {
    let dir = TempDir::new("samefile");
    let input = dir.0.join("in");
    std::fs::write(&input, "1\n2\n").unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (inp, other) = (path(&input), path(&dir.0.join("other")));
    for (args, what) in [
        (vec!["--input", &inp, "--joblog", &inp], "--joblog over --input"),
        (vec!["--input", &inp, "--report", &inp], "--report over --input"),
        (vec!["--input", &inp, "--shard", "0/2", "-o", &inp], "a shard over --input"),
        (vec!["--input", &inp, "--joblog", &other, "--report", &other], "--joblog is --report"),
        (vec!["--input", &inp, "--joblog", &other, "--shard", "0/2", "-o", &other], "log is -o"),
    ] {
        let out = run(powerpool(["run"]).args(&args).args(["--", "echo"]));
        assert_usage_error(&out, what);
        assert!(String::from_utf8_lossy(&out.stderr).contains("the same file"), "{what}");
        assert_eq!(std::fs::read(&input).unwrap(), b"1\n2\n", "{what}: the input was touched");
    }
    let out = run(&mut powerpool(["map", "--exec", "cat", "--input", &inp, "--joblog", &inp]));
    assert_usage_error(&out, "map --joblog over --input");
    assert_eq!(std::fs::read(&input).unwrap(), b"1\n2\n", "map: the input was touched");
}

#[test]
fn replacement_strings_naming_no_argument_are_refused() {
    for (args, what) in [
        (vec!["--", "echo", "{0}"], "{0}"),
        (vec!["--", "echo", "x{0.}"], "{0.}"),
        (vec!["--", "echo", "{2}"], "{2} with one line per job"),
        (vec!["-n", "2", "--", "echo", "{3}"], "{3} with -n 2"),
        (vec!["--", "echo", "{3}", ":::", "a", ":::", "b"], "{3} with two sources"),
    ] {
        let out = pp_run(&args, b"x\n");
        assert_usage_error(&out, what);
    }
    // What can be there is accepted: a column of --colsep, the last of -n's inputs.
    let out = pp_run(&["--colsep", ",", "--", "echo", "{3}"], b"a,b,c\na\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "c\n\n");
    let out = pp_run(&["-n", "2", "--", "echo", "{2}"], b"a\nb\nc\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b\n\n");
}

#[test]
fn a_joblog_cut_mid_line_or_with_commands_that_are_not_utf8_resumes() {
    let dir = TempDir::new("cutlog");
    let log = dir.0.join("log");
    let first = pp_run(&["--joblog", log.to_str().unwrap(), "--", "echo"], b"a\xff\nb\n");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(b"3\t:\t1795672781.270\t     0.0"); // a run killed mid-line
    std::fs::write(&log, &bytes).unwrap();
    let again =
        pp_run(&["--resume", "--joblog", log.to_str().unwrap(), "--", "echo"], b"a\xff\nb\nc\n");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(again.stdout, b"c\n", "job 3 was cut from the log: it runs again, alone");
    let log = std::fs::read(&log).unwrap();
    assert!(log.ends_with(b"\n"), "the cut line is gone, not continued");
    // Lines are written as jobs finish: 1 and 2 in either order.
    let mut seqs: Vec<Vec<u8>> = log
        .split(|&b| b == b'\n')
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| l.split(|&b| b == b'\t').next().unwrap_or_default().to_vec())
        .collect();
    seqs.sort();
    assert_eq!(seqs, [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()], "whole lines, each job once");
}

#[test]
fn a_failed_job_with_a_huge_input_is_named_in_a_short_line() {
    let input = format!("{}\n", "x".repeat(300_000));
    let out = pp_run(&["--", "false"], input.as_bytes());
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.len() < 2000, "{} bytes of stderr", stderr.len());
    assert!(stderr.contains("(300000 bytes)"), "{stderr}");
}

#[test]
fn a_nul_byte_in_a_line_fails_its_job_with_a_hint_at_dash_0() {
    let out = pp_run(&["--", "echo"], b"a\0b\nc\n");
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(out.stdout, b"c\n", "the other jobs run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NUL byte") && stderr.contains("-0"), "{stderr}");
}

#[test]
fn an_unknown_flag_before_the_command_is_refused_and_dash_j_sets_the_workers() {
    // clap takes every word from the first it cannot place as the command: `-j` and `--bogus`
    // ran as programs, each job failing, exit 5.
    for flag in ["--bogus", "--jobs", "-x"] {
        let out = pp_run(&[flag, "2", "--", "echo", ":::", "a"], b"");
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(flag) && out.stdout.is_empty(), "{stderr}");
    }
    let out = with_stdin(&mut powerpool(["run", "-j", "2", "--", "echo", ":::", "a", "b"]), b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"a\nb\n");
}

#[test]
fn jobs_and_exec_lines_keep_the_normal_scheduling_policy() {
    // Workers that compute in their own process run as batch jobs; the user's commands do not
    // inherit that: field 41 of /proc/PID/stat is the policy, 0 (SCHED_OTHER) by default.
    let policy = "cut -d' ' -f41 /proc/$$/stat";
    let out = pp_run(&["--", "sh", "-c", policy], b"x\ny\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n0\n");
    let exec = format!("while read -r _; do {policy}; done");
    let out = with_stdin(
        &mut powerpool(["map", "--workers", "2", "--shell", "--input", "-", "--exec", &exec]),
        b"a\nb\nc\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n0\n0\n");
}
