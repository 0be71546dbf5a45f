//! Starting a worker process, ending it, and saying how it ended.
//!
//! # Caveats
//!
//! - Each worker leads its own process group, so a terminal's Ctrl-C reaches the coordinator
//!   only, which then decides the workers' fate, and a kill reaches anything a worker started.
//! - `PR_SET_PDEATHSIG` is armed by the worker itself, first thing, followed by a check that its
//!   parent is still the coordinator (whose pid it is given), which closes the window between
//!   spawn and arming. Nothing runs between fork and exec, so std spawns with `posix_spawn`
//!   (`CLONE_VFORK`): no copy of the coordinator's page tables, a faster start for every worker.
//!   The signal fires when the *thread* that spawned the worker exits, so workers are spawned
//!   from async tasks on the runtime's worker threads, which live as long as the pool, never from
//!   `spawn_blocking` threads, which idle out. A `--worker-cmd` that is not built on the worker
//!   crate must arm it itself, or rely on end of file on its socket.
//! - A `Child` dropped without being reaped is killed (`kill_on_drop`) but may stay a zombie
//!   until the coordinator exits; every normal path reaps with `wait`.

use super::config::WorkerCommand;
use powerpool_shared::env;
use std::fmt;
use std::process::{ExitStatus, Stdio};
use tokio::process::{Child, Command};

/// How a worker process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exited by itself with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Could not be waited for.
    Unknown(String),
    /// Was never started: why the spawn failed.
    NotStarted(String),
}

impl Exit {
    pub fn from_status(status: ExitStatus) -> Exit {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(sig) = status.signal() {
                return Exit::Signal(sig);
            }
        }
        match status.code() {
            Some(code) => Exit::Code(code),
            None => Exit::Unknown(status.to_string()),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(sig) => write!(f, "killed by {}", signal_name(*sig)),
            Exit::Unknown(why) => write!(f, "ended in an unknown way ({why})"),
            Exit::NotStarted(why) => f.write_str(why),
        }
    }
}

/// The conventional name of a signal number.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

/// What every worker of a run is told through its environment.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub command: WorkerCommand,
    pub socket: std::path::PathBuf,
    pub token_hex: String,
    /// Read each worker's resident memory after each unit (`max_worker_memory`).
    pub measure_memory: bool,
}

/// A process's resident memory in bytes (Linux: `/proc/PID/status`, `VmRSS`).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
}

/// Starts one worker process for slot `worker_id`, numbered `number` among the live workers.
pub fn spawn(spec: &SpawnSpec, worker_id: u64, number: u64) -> std::io::Result<Child> {
    let coordinator = std::process::id();
    let mut cmd = Command::new(&spec.command.program);
    cmd.args(&spec.command.args)
        .envs(spec.command.env.iter().map(|(k, v)| (k, v)))
        .env(env::SOCKET, &spec.socket)
        .env(env::TOKEN, &spec.token_hex)
        .env(env::WORKER_ID, worker_id.to_string())
        .env(env::SLOT, number.to_string())
        .env(env::COORDINATOR_PID, coordinator.to_string())
        .stdin(Stdio::null())
        // stdout carries results only: whatever a worker prints goes to stderr.
        .stdout(stderr_handle())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // The coordinator raised its open-file limit; the worker puts the user's back.
    if let Some(soft) = crate::limits::original_nofile() {
        cmd.env(env::NOFILE_SOFT, soft.to_string());
    }
    #[cfg(unix)]
    {
        cmd.process_group(0);
    }
    cmd.spawn().map_err(crate::limits::explain_spawn_error)
}

fn stderr_handle() -> Stdio {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
            return Stdio::from(fd);
        }
    }
    Stdio::null()
}

/// Sends SIGTERM to the worker's whole process group: the polite first half of ending a worker
/// that overran `--task-timeout`.
pub fn terminate_group(child: &Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        // SAFETY: killpg with a pid we spawned as a group leader; no memory is involved.
        unsafe {
            libc::killpg(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// Sends SIGKILL to the worker's whole process group (itself and anything it started).
pub fn kill_group(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        // SAFETY: killpg with a pid we spawned as a group leader; no memory is involved.
        unsafe {
            libc::killpg(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let _ = child.start_kill();
}
