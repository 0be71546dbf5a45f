//! Issue 17, the files a hostile user points powerpool at: `-o` to a device, a FIFO or a
//! symlink; a stale temporary file from a pid that repeats; two flags naming one file; a forged
//! `lines` shard; the mode of a replaced file; fsync around the rename; FIFOs as `--joblog`,
//! `--report` and `merge` input. Each test is named after its defect.
//!
//! Where a test needs a privilege (root for `mknod`, `unshare` for a pid namespace, `strace`),
//! it says on stderr that it was skipped and why, and passes.

use powerpool_tests::*;
use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL")
}

fn mkfifo(path: &Path) {
    // SAFETY: a valid C string; mkfifo touches no memory of ours.
    let rc = unsafe { libc::mkfifo(cstr(path).as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// A character device like `/dev/null` (1,3) or `/dev/full` (1,7) inside `dir`; `None` when
/// this machine does not let us make one (not root).
fn mknod_char(path: &Path, major: u32, minor: u32) -> Option<()> {
    let dev = libc::makedev(major, minor);
    // SAFETY: a valid C string; mknod touches no memory of ours.
    let rc = unsafe { libc::mknod(cstr(path).as_ptr(), libc::S_IFCHR | 0o666, dev) };
    (rc == 0).then_some(())
}

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// The temporary files powerpool left in `dir`.
fn leftovers(dir: &TempDir) -> Vec<String> {
    dir.entries().into_iter().filter(|n| n.contains("powerpool")).collect()
}

#[test]
fn defect_17_1_output_to_a_device_is_written_through_and_stays_a_device() {
    let dir = TempDir::new("dev");
    let null = dir.0.join("null");
    let full = dir.0.join("full");
    if mknod_char(&null, 1, 3).is_none() || mknod_char(&full, 1, 7).is_none() {
        return skip("defect_17_1 (devices)", "mknod needs root (CAP_MKNOD)");
    }
    let out = run(powerpool(["map", "square", "--range", "0..1000", "-o"]).arg(&null));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::metadata(&null).expect("there").file_type().is_char_device());
    let out = run(powerpool(["map", "square", "--range", "0..1000", "-o"]).arg(&full));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("No space left"), "{stderr}");
    assert!(std::fs::metadata(&full).expect("there").file_type().is_char_device());
    assert!(leftovers(&dir).is_empty(), "{:?}", dir.entries());
}

#[test]
fn defect_17_1_output_to_a_fifo_is_written_through() {
    let dir = TempDir::new("fifo-out");
    let fifo = dir.0.join("results");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).expect("reads the FIFO"))
    };
    let out = run(powerpool(["map", "square", "--range", "0..5000", "-o"]).arg(&fifo));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Checked first: had the FIFO been replaced, its reader would wait forever.
    assert!(std::fs::metadata(&fifo).expect("there").file_type().is_fifo(), "still a FIFO");
    assert_eq!(reader.join().expect("reader"), squares_lines(0, 5000));
    assert!(leftovers(&dir).is_empty(), "{:?}", dir.entries());
}

#[test]
fn defect_17_1_a_fifo_without_reader_does_not_stop_signals() {
    let dir = TempDir::new("fifo-wait");
    let fifo = dir.0.join("results");
    mkfifo(&fifo);
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let child = powerpool(["map", "square", "--range", "0..10", "-o"])
            .arg(&fifo)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        std::thread::sleep(Duration::from_millis(500));
        kill(child.id(), sig);
        let out = wait_output(child, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(code), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(std::fs::metadata(&fifo).expect("there").file_type().is_fifo());
        assert!(leftovers(&dir).is_empty(), "{:?}", dir.entries());
    }
}

#[test]
fn defect_17_1_output_through_a_symlink_replaces_its_target() {
    let dir = TempDir::new("link");
    let target = dir.0.join("target.txt");
    std::fs::write(&target, b"old\n").expect("writes");
    let link = dir.0.join("link.txt");
    std::os::unix::fs::symlink("target.txt", &link).expect("links");
    let out = run(powerpool(["map", "square", "--range", "0..100", "-o"]).arg(&link));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::symlink_metadata(&link).expect("there").file_type().is_symlink());
    assert_eq!(std::fs::read(&target).expect("target"), squares_lines(0, 100));
    // A dangling link gets its target created.
    std::fs::remove_file(&target).expect("removes");
    let out = run(powerpool(["map", "square", "--range", "0..10", "-o"]).arg(&link));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::symlink_metadata(&link).expect("there").file_type().is_symlink());
    assert_eq!(std::fs::read(&target).expect("target"), squares_lines(0, 10));
    assert!(leftovers(&dir).is_empty(), "{:?}", dir.entries());
}

#[test]
fn defect_17_2_a_stale_temporary_file_from_a_repeated_pid_does_not_block_a_rerun() {
    let dir = TempDir::new("pid1");
    let out_path = dir.0.join("out.txt");
    // What a run killed as pid 1 of a container left behind, under the old naming scheme.
    std::fs::write(dir.0.join(".out.txt.powerpool-1.tmp"), b"partial").expect("writes");
    let probe = Command::new("unshare").args(["--pid", "--fork", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return skip("defect_17_2", "unshare --pid is not permitted here (needs root)");
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork"]).arg(bin("powerpool"));
    cmd.args(["map", "square", "--range", "0..1000", "-o"]).arg(&out_path);
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&out_path).expect("written"), squares_lines(0, 1000));
}

#[test]
fn defect_17_3_two_flags_naming_one_file_are_refused() {
    let dir = TempDir::new("same");
    let x = dir.0.join("x");
    let x_str = x.to_string_lossy().into_owned();
    let dotted = dir.0.join(".").join("x").to_string_lossy().into_owned();
    let base = ["map", "square", "--range", "0..5"];
    let cases: Vec<Vec<&str>> = vec![
        vec!["-o", &x_str, "--report", &x_str],
        vec!["-o", &x_str, "--joblog", &dotted],
        vec!["--report", &x_str, "--joblog", &x_str],
    ];
    for case in &cases {
        let out = run(powerpool(base).args(case));
        assert_usage_error(&out, &case.join(" "));
        assert!(!x.exists(), "{case:?} wrote something");
    }
    // Links to one existing file are the same file too.
    std::fs::write(&x, b"keep").expect("writes");
    std::fs::hard_link(&x, dir.0.join("hard")).expect("links");
    std::os::unix::fs::symlink(&x, dir.0.join("soft")).expect("links");
    let out = run(powerpool(base).arg("-o").arg(dir.0.join("hard")).arg("--report").arg(&x));
    assert_usage_error(&out, "hard link");
    let out = run(powerpool(base).arg("-o").arg(dir.0.join("soft")).arg("--joblog").arg(&x));
    assert_usage_error(&out, "symlink");
    assert_eq!(std::fs::read(&x).expect("there"), b"keep");
}

#[test]
fn defect_17_3_merge_into_one_of_its_own_shards_is_refused() {
    let dir = TempDir::new("same-merge");
    let shard = |k: u32| {
        let path = dir.0.join(format!("s{k}.bin"));
        let mut cmd = powerpool(["map", "square", "--range", "0..10", "--shard"]);
        cmd.arg(format!("{k}/2")).arg("-o").arg(&path);
        assert!(run(&mut cmd).status.success());
        path
    };
    let (s0, s1) = (shard(0), shard(1));
    let before = std::fs::read(&s0).expect("there");
    let out = run(powerpool(["merge"]).arg(&s0).arg(&s1).arg("-o").arg(&s0));
    assert_usage_error(&out, "merge s0 s1 -o s0");
    assert_eq!(std::fs::read(&s0).expect("there"), before, "the input shard is intact");
}

/// A `lines` shard of `0..3` in 1 shard whose payload is `payload`, with a valid checksum.
fn forged_lines_shard(path: &Path, payload: &[u8]) {
    use powerpool::shard::{Header, Shard};
    let header = Header {
        format: powerpool_shared::Format::Lines,
        range: (0, 3),
        shard: Shard { index: 0, count: 1 },
        items: 3,
        payload_len: payload.len() as u64,
        checksum: xxhash_rust::xxh3::xxh3_64(payload),
        task: "square".into(),
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(payload);
    std::fs::write(path, bytes).expect("writes");
}

#[test]
fn defect_17_4_merge_checks_every_lines_payload_before_writing_anything() {
    let dir = TempDir::new("forged");
    let good = dir.0.join("good.shard");
    forged_lines_shard(&good, b"0\n1\n4\n");
    let out = run(powerpool(["merge"]).arg(&good).args(["--format", "bin"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (name, payload) in [
        ("five lines for three inputs", &b"0\n1\n4\n9\n16\n"[..]),
        ("a line that is not a number", b"0\nhello\n4\n"),
        ("no final newline", b"0\n1\n4"),
        ("a padded number", b"0\n01\n4\n"),
        ("two lines for three inputs", b"0\n1\n\n"),
    ] {
        let path = dir.0.join("bad.shard");
        forged_lines_shard(&path, payload);
        for format in ["lines", "bin", "sum"] {
            let out = run(powerpool(["merge"]).arg(&path).args(["--format", format]));
            assert_usage_error(&out, &format!("{name} (--format {format})"));
        }
    }
}

#[test]
fn defect_17_5_output_keeps_the_mode_of_the_file_it_replaces() {
    let dir = TempDir::new("mode");
    let private = dir.0.join("private.txt");
    std::fs::write(&private, b"old").expect("writes");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = run(powerpool(["map", "square", "--range", "0..10", "-o"]).arg(&private));
    assert!(out.status.success());
    let mode = std::fs::metadata(&private).expect("there").mode() & 0o777;
    assert_eq!(mode, 0o600, "an existing file keeps its mode");
    for (umask, expected) in [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)] {
        let fresh = dir.0.join(format!("new-{umask:o}.txt"));
        let mut cmd = powerpool(["map", "square", "--range", "0..10", "-o"]);
        cmd.arg(&fresh);
        // SAFETY: umask is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask);
                Ok(())
            });
        }
        assert!(run(&mut cmd).status.success());
        let mode = std::fs::metadata(&fresh).expect("there").mode() & 0o777;
        assert_eq!(mode, expected, "a new file under umask {umask:o}");
    }
}

#[test]
fn defect_17_6_output_is_fsynced_before_the_rename_and_its_directory_after() {
    let dir = TempDir::new("fsync");
    let log = dir.0.join("strace.log");
    let out_path = dir.0.join("out.txt");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e", "signal=none", "-e"])
        .arg("trace=fsync,fdatasync,rename,renameat,renameat2")
        .arg("-o")
        .arg(&log)
        .arg(bin("powerpool"))
        .args(["map", "square", "--range", "0..1000", "-o"])
        .arg(&out_path);
    let Ok(out) = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output() else {
        return skip("defect_17_6", "strace is not installed");
    };
    if !out.status.success() || !log.exists() {
        let why = String::from_utf8_lossy(&out.stderr).into_owned();
        return skip("defect_17_6", &format!("strace cannot trace here: {why}"));
    }
    let text = std::fs::read_to_string(&log).expect("log");
    let calls: Vec<&str> = text.lines().filter(|l| !l.contains("resumed")).collect();
    let rename = calls
        .iter()
        .position(|l| l.contains("rename") && l.contains("out.txt\""))
        .unwrap_or_else(|| panic!("no rename into out.txt: {text}"));
    assert!(calls[..rename].iter().any(|l| l.contains("sync(")), "no fsync before: {text}");
    assert!(calls[rename + 1..].iter().any(|l| l.contains("sync(")), "no fsync after: {text}");
    assert_eq!(std::fs::read(&out_path).expect("written"), squares_lines(0, 1000));
}

#[test]
fn defect_17_9_merge_refuses_a_fifo_and_a_directory() {
    let dir = TempDir::new("merge-fifo");
    let fifo = dir.0.join("shard");
    mkfifo(&fifo);
    let started = Instant::now();
    let out = run_with_timeout(powerpool(["merge"]).arg(&fifo), Duration::from_secs(10));
    assert_usage_error(&out, "merge FIFO");
    assert!(started.elapsed() < Duration::from_secs(5));
    let out = run(powerpool(["merge"]).arg(&dir.0));
    assert_usage_error(&out, "merge DIR");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is a directory"), "{stderr}");
}

#[test]
fn defect_17_9_joblog_and_report_fifos_leave_signals_working() {
    let dir = TempDir::new("log-fifo");
    let fifo = dir.0.join("log");
    mkfifo(&fifo);
    for flag in ["--joblog", "--report"] {
        for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
            let child = powerpool(["map", "square", "--range", "0..10", flag])
                .arg(&fifo)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawns");
            std::thread::sleep(Duration::from_millis(700));
            kill(child.id(), sig);
            let out = wait_output(child, Duration::from_secs(10));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(code), "{flag}: {stderr}");
        }
        // With a reader, the FIFO gets what a file would.
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read_to_string(fifo).expect("reads"))
        };
        let out = run(powerpool(["map", "square", "--range", "0..10", flag]).arg(&fifo));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(reader.join().expect("reader").contains('{'), "{flag} wrote JSON");
    }
}
