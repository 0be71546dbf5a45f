//! Helpers for the end-to-end tests: the binaries under test, a runner with a watchdog,
//! independent reference outputs, process inspection and a loopback HTTP server.

pub mod b9;
pub mod http;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Default watchdog for one command under test.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A binary of this workspace, built next to the test executable (`scripts/test` builds them).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (scripts/test does: cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// An example binary of this workspace (`cargo build --examples`, which scripts/test runs).
pub fn example(name: &str) -> PathBuf {
    let path = bin("powerpool").with_file_name("examples").join(name);
    assert!(path.exists(), "{} is missing: build the examples first", path.display());
    path
}

/// `powerpool` with `args`, its environment cleared of proxies, logging settings and the
/// test-task switch (tests that need the hidden tasks set it themselves).
pub fn powerpool<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(bin("powerpool"));
    cmd.args(args);
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "RUST_LOG",
        "RUST_BACKTRACE",
        "POWERPOOL_TEST_TASKS",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    with_default_signals(&mut cmd);
    cmd
}

/// Gives the child the default action for the signals powerpool handles: a test runner
/// started in the background of a non-interactive shell ignores SIGINT and SIGQUIT, and
/// powerpool keeps a signal ignored at start ignored (as `nohup` expects), which tests of
/// those signals must not inherit.
pub fn with_default_signals(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec this only calls signal(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGQUIT,
                libc::SIGUSR1,
                libc::SIGUSR2,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
}

/// Runs `cmd` to completion, killing it and failing the test after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawns");
    wait_output(child, timeout)
}

/// Runs `cmd` with the default watchdog.
pub fn run(cmd: &mut Command) -> Output {
    run_with_timeout(cmd, TIMEOUT)
}

/// Collects a spawned child's output (stdout and stderr must be piped) under a watchdog.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let status = wait_timeout(&mut child, timeout).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("command did not finish within {timeout:?}");
    });
    Output {
        status,
        stdout: out_thread.join().expect("stdout reader"),
        stderr: err_thread.join().expect("stderr reader"),
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The expected `lines` output for `start..end`, computed here in 128-bit arithmetic: what
/// Python prints for `print(*map(lambda x: x*x, range(start, end)), sep="\n")`.
pub fn squares_lines(start: i64, end: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for x in start..end.max(start) {
        let x = i128::from(x);
        out.extend_from_slice(format!("{}\n", x * x).as_bytes());
    }
    out
}

/// The expected `bin` output: 16-byte little-endian squares.
pub fn squares_bin(start: i64, end: i64) -> Vec<u8> {
    (start..end.max(start)).flat_map(|x| (i128::from(x) * i128::from(x)).to_le_bytes()).collect()
}

/// Pids of the direct children of `pid` (Linux: /proc/PID/task/*/children).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return kids };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            kids.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    kids.sort_unstable();
    kids.dedup();
    kids
}

/// Waits (up to 20 s) until `coordinator` has exactly `n` children, its workers; returns them.
pub fn wait_for_workers(coordinator: u32, n: usize) -> Vec<u32> {
    let mut kids = Vec::new();
    let seen = wait_for(Duration::from_secs(20), || {
        kids = children_of(coordinator);
        kids.len() == n
    });
    assert!(seen, "expected {n} workers, saw {kids:?}");
    kids
}

/// Whether `pid` names a live process (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        }
        Err(_) => false,
    }
}

/// A process's resident memory in KiB (`VmRSS`), 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Live processes whose environment holds `key=value`: a way to find the workers of one pool
/// among every other process (tests running beside this one start workers too).
pub fn processes_with_env(key: &str, value: &str) -> Vec<u32> {
    let needle = format!("{key}={value}");
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// Sends `sig` to `pid`.
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) touches no memory; a stale pid only fails.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A fresh empty directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let dir = std::env::temp_dir().join(format!("pp-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// The names of the entries in the directory.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Asserts that a run was refused cleanly: exit 2 and exactly one line on stderr, no panic.
pub fn assert_usage_error(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: expected exit 2, stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{what}: expected one line, got: {stderr:?}");
    assert!(stderr.starts_with("powerpool: error: "), "{what}: {stderr:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{what}: {stderr}");
    assert!(out.stdout.is_empty(), "{what}: nothing on stdout");
}
