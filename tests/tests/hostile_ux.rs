//! Issue 17, what users see when things go wrong around the results: write errors of every
//! command (a full disk, a closed pipe), and the messages and pages listed under its item 18.
//! Each test is named after its defect.

use powerpool_tests::*;
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};

/// Every command that prints something, with arguments that make it print.
fn printing_commands(shards: &[std::path::PathBuf]) -> Vec<Command> {
    let mut cmds: Vec<Command> = [
        vec!["tasks"],
        vec!["man"],
        vec!["man", "map"],
        vec!["completions", "bash"],
        vec!["completions", "zsh"],
        vec!["--help"],
        vec!["--version"],
        vec!["map", "--help"],
        vec!["map", "square", "--range", "0..100000"],
        vec!["map", "square", "--range", "0..100000", "--format", "bin"],
    ]
    .into_iter()
    .map(powerpool)
    .collect();
    let mut merge = powerpool(["merge"]);
    merge.args(shards);
    cmds.push(merge);
    cmds
}

fn shard_pair(dir: &TempDir) -> Vec<std::path::PathBuf> {
    (0..2)
        .map(|k| {
            let path = dir.0.join(format!("s{k}"));
            let mut cmd = powerpool(["map", "square", "--range", "0..100000", "--shard"]);
            assert!(run(cmd.arg(format!("{k}/2")).arg("-o").arg(&path)).status.success());
            path
        })
        .collect()
}

fn describe(cmd: &Command) -> String {
    cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

fn run_into(cmd: &mut Command, stdout: Stdio) -> Output {
    let child = cmd.stdout(stdout).stderr(Stdio::piped()).spawn().expect("spawns");
    let mut child = child;
    let err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let status = wait_timeout(&mut child, TIMEOUT).expect("finishes");
    Output { status, stdout: Vec::new(), stderr: reader.join().expect("reader").into_bytes() }
}

#[test]
fn defect_17_17_a_full_disk_is_one_line_and_exit_1_for_every_command() {
    let Ok(full) = File::options().write(true).open("/dev/full") else {
        eprintln!("SKIPPED defect_17_17 (full disk): this machine has no /dev/full");
        return;
    };
    let dir = TempDir::new("full");
    for mut cmd in printing_commands(&shard_pair(&dir)) {
        let what = describe(&cmd);
        let out = run_into(&mut cmd, Stdio::from(full.try_clone().expect("dup")));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.contains("No space left on device"), "{what}: {stderr}");
        assert!(!stderr.contains("internal error"), "{what}: {stderr}");
    }
}

#[test]
fn defect_17_17_a_closed_pipe_is_a_quiet_success_for_every_command() {
    let dir = TempDir::new("epipe");
    let shards = shard_pair(&dir);
    for round in 0..3 {
        for mut cmd in printing_commands(&shards) {
            let what = describe(&cmd);
            let mut fds = [0; 2];
            // SAFETY: pipe fills the two descriptors it is given.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: both descriptors are fresh and owned here alone.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            drop(read); // the reader went away before a byte was written
            let out = run_into(&mut cmd, Stdio::from(write));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{what} (round {round}): {stderr}");
            assert!(stderr.is_empty(), "{what} (round {round}): {stderr}");
        }
    }
}

#[test]
fn defect_17_18_man_makes_a_page_for_every_subcommand() {
    let out = run(&mut powerpool(["man", "map"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH powerpool-map 1"));
    let dir = TempDir::new("man");
    let out = run(powerpool(["man", "--dir"]).arg(&dir.0));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pages = ["map", "run", "fetch", "merge", "tasks", "completions", "man"];
    let mut expected: Vec<String> = pages.iter().map(|p| format!("powerpool-{p}.1")).collect();
    expected.push("powerpool.1".to_owned());
    expected.sort();
    assert_eq!(dir.entries(), expected);
    for name in &expected {
        let text = std::fs::read_to_string(dir.0.join(name)).expect("written");
        let title = name.trim_end_matches(".1");
        assert!(text.contains(&format!(".TH {title} 1")), "{name}: {text:.200}");
    }
    // The top-level page refers to them.
    let top = std::fs::read_to_string(dir.0.join("powerpool.1")).expect("written");
    assert!(top.contains("powerpool\\-map(1)"), "{top:.400}");
    assert_usage_error(&run(&mut powerpool(["man", "frobnicate"])), "man of no command");
}

#[test]
fn defect_17_18_the_progress_bar_starts_without_an_eta_and_rounds_its_rate() {
    let command = format!(
        "POWERPOOL_TEST_TASKS=1 {} map slow-square --range 0..2000 --workers 2 --chunk-size 20 \
         > /dev/null",
        bin("powerpool").display()
    );
    let out = run(Command::new("script").args(["-qefc", &command, "/dev/null"]));
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        eprintln!("SKIPPED defect_17_18 (progress): util-linux script cannot run here: {why}");
        return;
    }
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    let frames: Vec<&str> = screen.split('\r').filter(|f| f.contains(" items ")).collect();
    assert!(!frames.is_empty(), "no progress bar: {screen:?}");
    assert!(!frames[0].contains("ETA 0s"), "an ETA before any result: {:?}", frames[0]);
    for frame in &frames {
        for (at, _) in frame.match_indices("/s") {
            let before = &frame.as_bytes()[at.saturating_sub(5)..at];
            let four_decimals = before.len() == 5
                && before[0] == b'.'
                && before[1..].iter().all(u8::is_ascii_digit);
            assert!(!four_decimals, "a rate with four decimals: {frame:?}");
        }
    }
}

#[test]
fn defect_17_18_a_worker_that_cannot_be_started_is_named_without_a_pid() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("nostart");
    let garbage = dir.0.join("not-a-program");
    std::fs::write(&garbage, b"\0\x01garbage").expect("writes");
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = run(powerpool(["map", "square", "--range", "0..5", "--worker-cmd"]).arg(&garbage));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("cannot start a worker ("), "{stderr}");
    assert!(last.contains("Exec format error"), "{stderr}");
    assert!(!stderr.contains("pid ?") && !stderr.contains("never started"), "{stderr}");
}
