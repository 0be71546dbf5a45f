//! The process's resource limits, met before a run starts rather than in the middle of it.
//!
//! - **Open files** (`RLIMIT_NOFILE`). Each worker holds about two descriptors in the
//!   coordinator (its socket and its process handle) and each fetch in flight one. The usual
//!   soft limit of 1024 is below what `--workers 512` or `fetch --concurrency 3000` need, while
//!   the hard limit is usually far higher, so the soft limit is raised to the hard one at start
//!   (as Go's runtime does). When even that is short, the worker count or the concurrency is
//!   lowered to fit, with one warning, instead of dozens of "Too many open files". Workers get
//!   the original soft limit back (through [`powerpool_shared::env::NOFILE_SOFT`]), and so do the
//!   jobs they start: a program that calls `select(2)` must not see descriptors above 1023.
//! - **Processes** (`RLIMIT_NPROC`, `ulimit -u`), which counts every thread of the user. tokio
//!   panics when it cannot start a runtime thread, and a runtime missing some of its threads
//!   hangs; so the threads and processes a run needs are counted against the limit first, and a
//!   run that cannot fit is one line naming the limit (exit 1). A worker that cannot be spawned
//!   later for the same reason is reported with the limit too.

// `rlim_t` is `u64` on 64-bit Linux, but not on every target: the casts stay.
#![allow(clippy::unnecessary_cast)]

use crate::errors::Error;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Descriptors the coordinator holds whatever the run: standard streams, the runtime's epoll
/// and wakers, the listener, signal pipes, the output file, a report, a joblog.
const BASE_FILES: u64 = 64;
/// Descriptors per worker process: its connection, its pidfd, and one while it is spawned.
const FILES_PER_WORKER: u64 = 3;
/// The soft limit found at start, when it was raised; `u64::MAX` while unchanged.
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(u64::MAX);

/// The soft open-file limit the process started with, if [`raise_nofile`] changed it: what the
/// workers are to restore.
pub fn original_nofile() -> Option<u64> {
    Some(ORIGINAL_SOFT.load(Ordering::Relaxed)).filter(|&n| n != u64::MAX)
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force (`None`
/// where there is no such limit).
pub fn raise_nofile() -> Option<u64> {
    #[cfg(unix)]
    {
        let (soft, hard) = get!(libc::RLIMIT_NOFILE)?;
        // macOS refuses RLIM_INFINITY for files; OPEN_MAX is its real ceiling.
        #[cfg(target_os = "macos")]
        let hard = hard.min(libc::OPEN_MAX as u64);
        if soft >= hard {
            return Some(soft);
        }
        let raised =
            libc::rlimit { rlim_cur: hard as libc::rlim_t, rlim_max: hard as libc::rlim_t };
        // SAFETY: setrlimit reads the struct we pass; nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Some(soft);
        }
        ORIGINAL_SOFT.store(soft, Ordering::Relaxed);
        Some(hard)
    }
    #[cfg(not(unix))]
    None
}

/// The open files a run of `workers` workers and `connections` HTTP connections needs.
pub fn files_needed(workers: usize, connections: usize) -> u64 {
    BASE_FILES + FILES_PER_WORKER * workers as u64 + connections as u64
}

/// The largest worker count, at most `workers`, that fits the open-file limit `limit` beside
/// `connections` connections; warns when it is fewer.
pub fn fit_workers(workers: usize, connections: usize, limit: Option<u64>) -> usize {
    let Some(limit) = limit else { return workers };
    let needed = files_needed(workers, connections);
    if needed <= limit {
        return workers;
    }
    let room = limit.saturating_sub(files_needed(0, connections)) / FILES_PER_WORKER;
    let fitted = usize::try_from(room).unwrap_or(usize::MAX).clamp(1, workers);
    tracing::warn!(
        "the open-file limit is {limit} (ulimit -n, the hard limit), too low for {workers} \
         workers (about {needed} files): running {fitted} workers"
    );
    fitted
}

/// The largest concurrency, at most `concurrency`, that fits the open-file limit `limit`
/// beside `workers` workers; warns when it is lower.
pub fn fit_concurrency(concurrency: usize, workers: usize, limit: Option<u64>) -> usize {
    let Some(limit) = limit else { return concurrency };
    let needed = files_needed(workers, concurrency);
    if needed <= limit {
        return concurrency;
    }
    let room = limit.saturating_sub(files_needed(workers, 0));
    let fitted = usize::try_from(room).unwrap_or(usize::MAX).clamp(1, concurrency);
    tracing::warn!(
        "the open-file limit is {limit} (ulimit -n, the hard limit), too low for {concurrency} \
         requests in flight (about {needed} files): running {fitted} at once"
    );
    fitted
}

/// The fewest open files any run needs: the standard streams, the runtime's event loop, wakers
/// and signal sockets, the zygote's socket, a worker's connection and process handle, the
/// output. Below it a run fails at random (a worker that cannot start, a runtime that panics, a
/// socket directory that cannot be removed), so it is refused at once.
const MIN_FILES: u64 = 32;

/// Refuses a run whose open-file limit (after [`raise_nofile`], where the command raises it)
/// is below `MIN_FILES` (32): one line naming the limit.
pub fn check_files() -> Result<(), Error> {
    #[cfg(unix)]
    if let Some((soft, _)) = get!(libc::RLIMIT_NOFILE) {
        if soft < MIN_FILES {
            return Err(Error::Limit(format!(
                "the open-file limit is too low: ulimit -n allows {soft} open files, and a run                  needs at least {MIN_FILES}; raise ulimit -n"
            )));
        }
    }
    Ok(())
}

/// Whether a run of `workers` workers (and no connections) will pass [`check_files`] and keep
/// all its workers ([`fit_workers`]) once [`raise_nofile`] has raised the soft limit to the
/// hard one: asked before anything is started for a run that would be refused or cut down.
pub fn files_fit(workers: usize) -> bool {
    #[cfg(unix)]
    if let Some((_, hard)) = get!(libc::RLIMIT_NOFILE) {
        return hard >= MIN_FILES && files_needed(workers, 0) <= hard;
    }
    true
}

/// Checks that `threads` more threads of this process and `processes` worker processes fit
/// the user's process limit (`ulimit -u`), which counts every thread the user runs.
pub fn check_processes(threads: usize, processes: usize) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        let Some((soft, _)) = get!(libc::RLIMIT_NPROC) else { return Ok(()) };
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        // The kernel does not hold root to this limit.
        if soft == libc::RLIM_INFINITY as u64 || uid == 0 {
            return Ok(());
        }
        let needed = (threads + processes) as u64;
        // Cheap first: every thread on the machine, from /proc/loadavg.
        if machine_threads().is_some_and(|all| all + needed <= soft) {
            return Ok(());
        }
        let used = user_threads(uid);
        if used + needed > soft {
            let (workers, fewer) = match processes {
                0 => (String::new(), ""),
                n => (format!(", {n} workers"), " or use fewer --workers"),
            };
            return Err(Error::Limit(format!(
                "the process limit is too low: ulimit -u allows {soft} threads and processes to \
                 this user, who runs {used}, and this run needs {needed} more ({threads} \
                 threads{workers}); raise ulimit -u{fewer}"
            )));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (threads, processes);
        Ok(())
    }
}

/// A spawn error with the limit behind it named, when it is the process limit (`EAGAIN`).
pub fn explain_spawn_error(err: io::Error) -> io::Error {
    #[cfg(unix)]
    if err.raw_os_error() == Some(libc::EAGAIN) {
        if let Some((soft, _)) = get!(libc::RLIMIT_NPROC) {
            return io::Error::new(
                err.kind(),
                format!("{err}: the process limit (ulimit -u) is {soft}"),
            );
        }
    }
    err
}

/// `(soft, hard)` of a resource limit (a macro: the resource's type differs between libcs).
#[cfg(unix)]
macro_rules! get {
    ($resource:expr) => {{
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct we pass and nothing else.
        match unsafe { libc::getrlimit($resource, &mut limit) } {
            0 => Some((limit.rlim_cur as u64, limit.rlim_max as u64)),
            _ => None,
        }
    }};
}
#[cfg(unix)]
use get;

/// All threads on the machine (the fourth field of /proc/loadavg is `running/total`).
#[cfg(target_os = "linux")]
fn machine_threads() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok()
}

/// Threads whose real uid is `uid`, as the process limit counts them.
#[cfg(target_os = "linux")]
fn user_threads(uid: libc::uid_t) -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else { return 0 };
    let mut count = 0;
    for entry in procs.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        };
        if field("Uid:") == Some(u64::from(uid)) {
            count += field("Threads:").unwrap_or(1);
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts_and_concurrency_fit_the_file_limit() {
        assert_eq!(fit_workers(512, 0, None), 512);
        assert_eq!(fit_workers(512, 0, Some(1 << 20)), 512);
        let fitted = fit_workers(512, 100, Some(1024));
        assert!(files_needed(fitted, 100) <= 1024 && fitted > 200, "{fitted}");
        assert_eq!(fit_workers(8, 0, Some(10)), 1, "never fewer than one");
        let fitted = fit_concurrency(3000, 2, Some(1024));
        assert!(files_needed(2, fitted) <= 1024 && fitted > 900, "{fitted}");
        assert_eq!(fit_concurrency(100, 2, Some(1024)), 100);
    }

    #[test]
    fn only_the_process_limit_is_explained() {
        let other = explain_spawn_error(io::Error::from_raw_os_error(libc::ENOEXEC));
        assert!(!other.to_string().contains("ulimit"));
        let eagain = explain_spawn_error(io::Error::from_raw_os_error(libc::EAGAIN));
        assert!(eagain.to_string().contains("ulimit -u"), "{eagain}");
    }
}
