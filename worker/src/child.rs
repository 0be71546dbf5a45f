//! A worker's own children: `run`'s jobs and `map --exec`'s command, each the leader of a
//! process group of its own, so that ending it reaches everything it started.
//!
//! # Caveats
//!
//! - A job's grandchildren (`sh -c 'sleep 100 & wait'`) inherit no parent-death signal, so a
//!   worker that dies by SIGKILL could not end them. The worker therefore never relies on dying
//!   to end its children: [`guard`] re-arms the worker's parent-death signal as SIGTERM (a
//!   signal it can act on) and catches SIGTERM, whoever sends it (the coordinator ending the
//!   worker, or the kernel when the coordinator dies, even by SIGKILL), by ending the current
//!   child's whole process group (SIGTERM, a grace period, SIGKILL) before it exits. The
//!   coordinator in turn ends workers with SIGTERM first, and SIGKILL only after a grace period.
//! - A process that leaves the group (`setsid`, `setpgid`: daemons do) is out of reach; so are
//!   a worker's children if the worker itself is SIGKILLed from outside (the OOM killer).
//! - The current group is a process-wide number ([`CURRENT_GROUP`]), set while a child runs:
//!   a worker runs one child at a time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The process group of the child running now (its leader's pid), or 0.
pub static CURRENT_GROUP: AtomicI32 = AtomicI32::new(0);

/// The exit status of a worker ended by SIGTERM after it ended its children: 128 + 15.
pub const TERMINATED: i32 = 143;

/// Sends `sig` to process group `pgid` (nothing if `pgid` is not a group we lead).
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: killpg touches no memory; a group that is gone only fails with ESRCH.
        unsafe {
            libc::killpg(pgid, sig);
        }
    }
}

/// SIGTERM to group `pgid`, then SIGKILL after `grace` (a blocking sleep: only for the way out).
pub fn end_group_blocking(pgid: i32, grace: Duration) {
    signal_group(pgid, libc::SIGTERM);
    std::thread::sleep(grace);
    signal_group(pgid, libc::SIGKILL);
}

/// Arms what ends this worker's children with it: the parent-death signal becomes SIGTERM, and
/// a task catches SIGTERM, ends the current child's group within `grace` (at most 300 ms, well
/// inside the coordinator's own grace) and exits. Returns false if the coordinator is already
/// gone. Must be called inside the runtime, before the first child starts.
pub fn guard(coordinator_pid: u32, grace: Duration) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0);
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::error!("cannot catch SIGTERM: {err}");
            return false;
        }
    };
    if !crate::connection::parent_is(coordinator_pid) {
        return false;
    }
    let grace = grace.min(Duration::from_millis(300));
    tokio::spawn(async move {
        term.recv().await;
        let pgid = CURRENT_GROUP.load(Ordering::SeqCst);
        if pgid > 0 {
            end_group_blocking(pgid, grace);
        }
        std::process::exit(TERMINATED);
    });
    true
}

/// Environment variables a child must not inherit: the run's secret and socket would let it
/// pose as a worker.
pub const HIDDEN_ENV: [&str; 5] = [
    powerpool_shared::env::SOCKET,
    powerpool_shared::env::TOKEN,
    powerpool_shared::env::WORKER_ID,
    powerpool_shared::env::COORDINATOR_PID,
    powerpool_shared::env::SLOT,
];

/// A command for `argv` (bytes, as given) leading a process group of its own, with the
/// worker's secrets removed from its environment.
pub fn command(argv: &[Vec<u8>]) -> Option<tokio::process::Command> {
    command_at(argv, None)
}

/// [`command`], run from `path` when one is given: the program found in `PATH` beforehand
/// (its `argv[0]` stays as given), so that the spawn does not try each `PATH` directory.
pub fn command_at(argv: &[Vec<u8>], path: Option<&Path>) -> Option<tokio::process::Command> {
    use std::os::unix::ffi::OsStrExt;
    let (program, args) = argv.split_first()?;
    let name = std::ffi::OsStr::from_bytes(program);
    let mut cmd = match path {
        Some(path) => {
            let mut cmd = tokio::process::Command::new(path);
            cmd.arg0(name);
            cmd
        }
        None => tokio::process::Command::new(name),
    };
    cmd.args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)));
    for var in HIDDEN_ENV {
        cmd.env_remove(var);
    }
    cmd.process_group(0).kill_on_drop(false);
    Some(cmd)
}

/// Where `PATH` (as `path_var` gives it) finds the program `name`, as `execvp` would: the
/// first directory holding an executable file of that name (an empty entry is the current
/// directory). `None` for a name with a slash (no search) or one not found (the spawn then
/// reports it as the system words it).
pub fn find_in_path(name: &[u8], path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    if name.is_empty() || name.contains(&b'/') {
        return None;
    }
    let name = std::ffi::OsStr::from_bytes(name);
    path_var?.as_bytes().split(|&b| b == b':').find_map(|dir| {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(std::ffi::OsStr::from_bytes(dir))
        };
        let candidate = dir.join(name);
        let meta = std::fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}

/// How a child ended, in words: `exited with status 3`, `killed by SIGKILL`.
pub fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended ({status})"),
    }
}

/// Copies the command's stderr to ours, a line at a time, each line prefixed.
pub async fn pass_stderr(stderr: tokio::process::ChildStderr, prefix: String) {
    use std::io::Write;
    use tokio::io::AsyncBufReadExt;
    let mut reader = tokio::io::BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                let mut text = Vec::with_capacity(prefix.len() + line.len());
                text.extend_from_slice(prefix.as_bytes());
                text.extend_from_slice(&line);
                // One write per line: lines of different workers never interleave.
                let _ = std::io::stderr().lock().write_all(&text);
            }
        }
    }
}

/// Sleeps until `at`; forever without one (a timer that is an `Option`, never a flag).
pub async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_in_path_as_execvp_finds_them() {
        let dir = std::env::temp_dir().join(format!("pp-path-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
        }
        let write = |p: &Path, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&a.join("tool"), 0o644); // not executable: skipped
        write(&b.join("tool"), 0o755);
        std::fs::create_dir_all(a.join("dir")).unwrap(); // a directory: skipped
        let path = std::ffi::OsString::from(format!("{}:{}", a.display(), b.display()));
        assert_eq!(find_in_path(b"tool", Some(&path)), Some(b.join("tool")));
        assert_eq!(find_in_path(b"dir", Some(&path)), None);
        assert_eq!(find_in_path(b"missing", Some(&path)), None);
        assert_eq!(find_in_path(b"./tool", Some(&path)), None, "a slash: no search");
        assert_eq!(find_in_path(b"tool", None), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
