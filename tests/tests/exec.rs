//! `map --exec`: persistent Python line workers (the shipped `examples/python_worker.py` and
//! small scripts that misbehave on purpose): exact output in order and unordered, a worker
//! killed mid-run, an exception on one line (isolated and named), a hung line, a command that
//! prints two lines for one input (named as a protocol error). And `map TASK --input` for byte
//! tasks, one item per line.

use powerpool_tests::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python_worker.py")
}

fn numbers(n: u64) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

fn squares(n: u64) -> String {
    (1..=n).map(|i| format!("{}\n", i * i)).collect()
}

/// A Python line worker made of `body` (run for each `line`, printing its answer).
fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    let text = format!(
        "import os, sys, time\nfor line in sys.stdin:\n    line = line.rstrip('\\n')\n{}\n",
        body.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    );
    std::fs::write(&path, text).expect("writes the script");
    format!("python3 {}", path.display())
}

fn exec(command: &str, input: &Path, extra: &[&str]) -> std::process::Output {
    run_with_timeout(
        powerpool(["map", "--workers", "2", "--exec", command, "--input"]).arg(input).args(extra),
        Duration::from_secs(60),
    )
}

fn input_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("input.txt");
    std::fs::write(&path, text).expect("writes the input");
    path
}

#[test]
fn the_example_worker_gives_every_answer_in_order_and_unordered() {
    let dir = TempDir::new("exec-example");
    let input = input_file(&dir.0, &numbers(5000));
    let command = format!("python3 {}", example().display());
    let out = exec(&command, &input, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), squares(5000));
    let out = exec(&command, &input, &["--unordered"]);
    assert!(out.status.success());
    let mut got: Vec<u64> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.parse().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=5000u64).map(|i| i * i).collect::<Vec<_>>());
}

#[test]
fn a_python_worker_killed_mid_run_changes_nothing_in_the_output() {
    let dir = TempDir::new("exec-kill");
    let pids = dir.0.join("pids");
    std::fs::create_dir(&pids).unwrap();
    let input = input_file(&dir.0, &numbers(3000));
    let body = format!(
        "open(os.path.join({:?}, str(os.getpid())), 'w').close()\n\
         time.sleep(0.001)\nprint(int(line) ** 2, flush=True)",
        pids.display().to_string()
    );
    let command = script(&dir.0, "slow.py", &body);
    let child = powerpool(["map", "--workers", "2", "--exec", &command, "--input"])
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    assert!(wait_for(Duration::from_secs(20), || {
        std::fs::read_dir(&pids).ok().and_then(|mut rd| rd.next()).is_some()
    }));
    std::thread::sleep(Duration::from_millis(400));
    // A command still answering lines (its file touched a moment ago): one whose worker got a
    // short batch may be done already, its worker shut down as every line is out.
    let mut victim = None;
    assert!(wait_for(Duration::from_secs(20), || {
        victim = std::fs::read_dir(&pids).ok().and_then(|rd| {
            rd.filter_map(Result::ok).find_map(|e| {
                let age = e.metadata().ok()?.modified().ok()?.elapsed().ok()?;
                (age < Duration::from_millis(100)).then_some(())?;
                e.file_name().to_str()?.parse::<u32>().ok()
            })
        });
        victim.is_some()
    }));
    kill(victim.unwrap(), libc::SIGKILL);
    let out = wait_output(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), squares(3000));
    assert!(stderr.contains("killed by signal 9") || stderr.contains("SIGKILL"), "{stderr}");
}

#[test]
fn an_exception_on_one_line_is_isolated_and_named() {
    let dir = TempDir::new("exec-raise");
    let input = input_file(&dir.0, &numbers(300));
    let body = "if line == '137':\n    raise ValueError('cannot take 137')\nprint(int(line) ** 2, flush=True)";
    let command = script(&dir.0, "raise.py", body);
    let out = exec(&command, &input, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("line 137 failed 3 time(s)"), "{stderr}");
    // The warning as the line is given up, and the error that ends the run: one name, the
    // line's number as the user counts (never the item's index from 0).
    assert_eq!(stderr.matches("line 137 failed 3 time(s)").count(), 2, "{stderr}");
    assert!(!stderr.contains("item 136"), "{stderr}");
    assert!(stderr.contains("ValueError: cannot take 137"), "the traceback: {stderr}");
    assert!(stderr.contains("[worker "), "stderr is prefixed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), squares(136), "everything before it");
    let out = exec(&command, &input, &["--keep-going", "--on-fail", "mark"]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = squares(300).replace("18769\n", "ERR:failed\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn a_hung_line_is_ended_by_the_per_line_timeout() {
    let dir = TempDir::new("exec-hang");
    let input = input_file(&dir.0, &numbers(40));
    let body = "if line == '5':\n    time.sleep(60)\nprint(int(line) ** 2, flush=True)";
    let command = script(&dir.0, "hang.py", body);
    // The first line's wait includes the command's start: room for a slow start, and a retry.
    let out = exec(&command, &input, &["--task-timeout", "3s", "--retries", "1", "--keep-going"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("failed line 5") && stderr.contains("--task-timeout"), "{stderr}");
    let expected: String =
        (1..=40u64).filter(|&i| i != 5).map(|i| format!("{}\n", i * i)).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn two_lines_for_one_input_is_named_as_a_protocol_error() {
    let dir = TempDir::new("exec-two");
    let input = input_file(&dir.0, &numbers(50));
    let body = "print(int(line) ** 2, flush=True)\nif line == '7':\n    print('again', flush=True)";
    let command = script(&dir.0, "two.py", body);
    let out = exec(&command, &input, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("protocol error") && stderr.contains("worker"), "{stderr}");
    assert!(stderr.contains("exactly one line per input line"), "{stderr}");
}

#[test]
fn a_line_printed_at_the_end_of_input_by_a_worker_done_early_loses_no_other_line() {
    // One line is slow. The other worker answers its line, and, with every line handed out,
    // is shut down before the slow one is answered; its command then prints a line with no
    // input outstanding. The contract is broken at the end, as it always was: every answer is
    // still written, then the run fails with the protocol error.
    let dir = TempDir::new("exec-late-extra");
    let path = dir.0.join("late.py");
    let text = "import sys, time\nfor line in sys.stdin:\n    line = line.rstrip('\\n')\n    \
                if line == 'slow':\n        time.sleep(2)\n    print(line, flush=True)\n\
                print('bye', flush=True)\n";
    std::fs::write(&path, text).expect("writes the script");
    let command = format!("python3 {}", path.display());
    let mut child = powerpool(["map", "--workers", "2", "--exec", &command, "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let mut stdin = child.stdin.take().expect("piped");
    std::io::Write::write_all(&mut stdin, b"slow\n").expect("writes");
    std::thread::sleep(Duration::from_millis(300));
    std::io::Write::write_all(&mut stdin, b"fast\n").expect("writes");
    std::thread::sleep(Duration::from_millis(300));
    drop(stdin);
    let out = wait_output(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("with no input line outstanding"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "slow\nfast\n", "{stderr}");
    assert!(!stderr.contains("exited with"), "no death is reported: {stderr}");
}

#[test]
fn byte_tasks_take_one_item_per_line() {
    let dir = TempDir::new("lines-sha");
    let text = "abc\n\nhello world\nunicode ✓\nno newline at the end";
    let input = input_file(&dir.0, text);
    let out = run(powerpool(["map", "sha256", "--workers", "2", "--input"]).arg(&input));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected: String = text
        .split('\n')
        .map(|l| {
            Sha256::digest(l.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>()
                + "\n"
        })
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn a_failed_line_of_a_byte_task_is_named_as_a_line() {
    // `map TASK --input`, as `map --exec`: the warning and the final error name the line as the
    // user counts (line 3), never the item's index from 0 (item 2).
    let dir = TempDir::new("lines-poison");
    let input = input_file(&dir.0, "a\nb\npanic here\nd\n");
    let out = run(powerpool(["map", "poison-bytes", "--workers", "2", "--input"])
        .arg(&input)
        .env("POWERPOOL_TEST_TASKS", "1")
        .env_remove("RUST_BACKTRACE"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert_eq!(stderr.matches("line 3 failed 3 time(s)").count(), 2, "{stderr}");
    assert!(!stderr.contains("item 2"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0 1 1\n0 1 1\n", "the lines before it");
}

#[test]
fn max_tasks_per_worker_restarts_the_command_and_the_output_is_exact() {
    let dir = TempDir::new("exec-recycle");
    let input = input_file(&dir.0, &numbers(50_000));
    // The command answers each line with the line and its own pid.
    let command = script(&dir.0, "pid.py", "print(line, os.getpid(), flush=True)");
    let out = exec(&command, &input, &["--max-tasks-per-worker", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<(&str, &str)> = text.lines().map(|l| l.split_once(' ').unwrap()).collect();
    let lines: Vec<&str> = rows.iter().map(|r| r.0).collect();
    assert_eq!(lines.join("\n") + "\n", numbers(50_000), "every line once, in order");
    let pids: std::collections::HashSet<&str> = rows.iter().map(|r| r.1).collect();
    assert!(pids.len() > 2, "2 workers, recycled: the command restarted: {}", pids.len());
}

#[test]
fn long_lines_whose_answers_and_next_batch_both_outgrow_the_socket_buffers_do_not_deadlock() {
    // 60 lines of 150 KB: a unit's answers come back while the next unit, as large, is being
    // written to the same worker. A slot that stopped reading while it wrote waited for ever
    // on a worker that was waiting to write its answers.
    let dir = TempDir::new("exec-long-lines");
    let text: String = (0..60).map(|i| format!("{i}-{}\n", "x".repeat(150_000))).collect();
    let input = input_file(&dir.0, &text);
    let out = exec("cat", &input, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == text.as_bytes(), "the output differs from the input");
}
