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
//! - A run's first workers are forked by the zygote (`zygote.rs`), not spawned: they are our
//!   children all the same ([`Worker::Forked`]), waited for through a pidfd and `waitpid`.
//!   Nothing else in the coordinator waits for any child (tokio waits only for the pids it
//!   spawned), so no one else can reap them.

use super::config::WorkerCommand;
use powerpool_shared::env;
use std::fmt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{ExitStatus, Stdio};
use tokio::io::unix::AsyncFd;
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
    /// The listening socket an executed worker connects to: made at the first such worker
    /// (forked workers are born connected and need none).
    pub socket: Option<std::path::PathBuf>,
    pub token_hex: String,
    /// Read each worker's resident memory after each unit (`max_worker_memory`).
    pub measure_memory: bool,
    /// Where batches of items lie for the workers to read (see [`super::Arena`]).
    pub arena: Option<super::Arena>,
}

/// A process's resident memory in bytes (Linux: `/proc/PID/status`, `VmRSS`).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
}

impl SpawnSpec {
    /// Whether the workers are this program's own (no `--worker-cmd`): only those can be
    /// forked by the zygote.
    pub fn is_own_worker(&self) -> bool {
        self.command.env.is_empty()
            && self.command.args == ["worker"]
            && std::env::current_exe().is_ok_and(|exe| exe == self.command.program)
    }

    /// What a forked worker of this run is told through its environment, but its id, its
    /// number and its connection (`zygote.rs`).
    pub fn shared_env(&self) -> Vec<(&'static str, String)> {
        forked_env(&self.token_hex)
    }
}

/// What every forked worker of a run whose secret is `token_hex` is told through its
/// environment, but its id, its number and its connection (`zygote.rs`).
pub fn forked_env(token_hex: &str) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        (env::TOKEN, token_hex.to_owned()),
        (env::COORDINATOR_PID, std::process::id().to_string()),
    ];
    if let Some(soft) = crate::limits::original_nofile() {
        vars.push((env::NOFILE_SOFT, soft.to_string()));
    }
    vars
}

/// A worker process: spawned by exec, or forked by the zygote; the coordinator's child either
/// way.
#[derive(Debug)]
pub enum Worker {
    Spawned(Child),
    Forked(Forked),
}

/// A worker the zygote forked (`clone(CLONE_PARENT)`): our child, known by its pid.
#[derive(Debug)]
pub struct Forked {
    pid: u32,
    /// Readable once the process has ended; opened at the first wait.
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl Forked {
    pub fn new(pid: u32) -> Forked {
        Forked { pid, pidfd: None, status: None }
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = reap_now(self.pid)?;
        }
        Ok(self.status)
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if self.pidfd.is_none() {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid as libc::pid_t, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: the descriptor was just returned to us and is owned here alone.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            // SAFETY: an OwnedFd keeps its one descriptor open until the AsyncFd drops it.
            let registered =
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
            self.pidfd = Some(registered.map_err(io::Error::from)?);
        }
        let pidfd = self.pidfd.as_ref().expect("opened just above");
        loop {
            let mut ready = pidfd.readable().await?;
            if let Some(status) = reap_now(self.pid)? {
                self.status = Some(status);
                return Ok(status);
            }
            // No edge is lost: tokio keeps the readiness if an event came after `readable`.
            ready.clear_ready();
        }
    }

    fn signal(&self, sig: i32) {
        if self.status.is_some() {
            return; // reaped: the pid may be someone else's now
        }
        let pid = self.pid as libc::pid_t;
        // SAFETY: killpg and kill touch no memory; the pid is our unreaped child, its group's
        // leader (the zygote made it so before answering with its pid).
        unsafe {
            if libc::killpg(pid, sig) != 0 {
                libc::kill(pid, sig);
            }
        }
    }
}

impl Drop for Forked {
    /// As `kill_on_drop`: a worker whose handle is dropped unreaped is killed.
    fn drop(&mut self) {
        if self.status.is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.try_wait();
        }
    }
}

/// Reaps `pid`, our child, if it has ended.
fn reap_now(pid: u32) -> io::Result<Option<ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let mut raw = 0;
    // SAFETY: waitpid writes only the status we pass.
    match unsafe { libc::waitpid(pid as libc::pid_t, &mut raw, libc::WNOHANG) } {
        0 => Ok(None),
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(Some(ExitStatus::from_raw(raw))),
    }
}

impl Worker {
    /// The process's id, until it has been reaped.
    pub fn id(&self) -> Option<u32> {
        match self {
            Worker::Spawned(child) => child.id(),
            Worker::Forked(forked) => Some(forked.pid).filter(|_| forked.status.is_none()),
        }
    }

    /// Waits for the process to end and reaps it; cancel-safe, and repeatable once reaped.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Worker::Spawned(child) => child.wait().await,
            Worker::Forked(forked) => forked.wait().await,
        }
    }
}

/// Starts one worker process for slot `worker_id`, numbered `number` among the live workers.
pub fn spawn(spec: &SpawnSpec, worker_id: u64, number: u64) -> std::io::Result<Worker> {
    let coordinator = std::process::id();
    let socket = spec.socket.as_ref().ok_or_else(|| io::Error::other("no socket to connect to"))?;
    let mut cmd = Command::new(&spec.command.program);
    cmd.args(&spec.command.args)
        .envs(spec.command.env.iter().map(|(k, v)| (k, v)))
        .env(env::SOCKET, socket)
        // Only a forked worker is born connected: a value inherited from our own environment
        // would name a descriptor that is not this worker's connection.
        .env_remove(env::CONNECTION_FD)
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
    cmd.spawn().map(Worker::Spawned).map_err(crate::limits::explain_spawn_error)
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
pub fn terminate_group(child: &Worker) {
    let child = match child {
        Worker::Spawned(child) => child,
        Worker::Forked(forked) => return forked.signal(libc::SIGTERM),
    };
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        // SAFETY: killpg with a pid we spawned as a group leader; no memory is involved.
        unsafe {
            libc::killpg(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// Sends SIGKILL to the worker's whole process group (itself and anything it started).
pub fn kill_group(child: &mut Worker) {
    let child = match child {
        Worker::Spawned(child) => child,
        Worker::Forked(forked) => return forked.signal(libc::SIGKILL),
    };
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        // SAFETY: killpg with a pid we spawned as a group leader; no memory is involved.
        unsafe {
            libc::killpg(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let _ = child.start_kill();
}
