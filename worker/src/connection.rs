//! Where the worker connects, and its side of the handshake.
//!
//! # Caveats
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that spawned this process exits, not the whole
//! coordinator. The coordinator spawns from long-lived runtime threads and arms it before `exec`;
//! the worker arms it again first thing (harmless) and then checks that its parent is still the
//! coordinator, closing the race where the coordinator died before the signal was armed. A
//! worker forked by the coordinator's zygote (`clone(CLONE_PARENT)`, no exec) runs the same
//! entry: its parent is the coordinator too, and its parent thread the coordinator's main one.

use powerpool_shared::codec::{self};
use powerpool_shared::env::{self, from_hex};
use powerpool_shared::transport::{self, FrameReader, FrameWriter, Half};
use powerpool_shared::{FromWorker, Hello, Input, ToWorker, Welcome, PROTOCOL_VERSION, TOKEN_LEN};
use std::path::{Path, PathBuf};

/// Where the worker's connection comes from.
#[derive(Debug)]
pub enum Endpoint {
    /// The coordinator's listening socket, to connect to ([`env::SOCKET`]).
    Socket(PathBuf),
    /// A connection already held: this process's end of a socket pair, named by its
    /// descriptor number ([`env::CONNECTION_FD`]) and taken over when the variable is read,
    /// before this process opens any descriptor of its own; `None` once the handshake took it.
    Connected(Option<std::os::fd::OwnedFd>),
}

/// What the coordinator told this worker through its environment.
#[derive(Debug)]
pub struct Config {
    pub endpoint: Endpoint,
    pub token: [u8; TOKEN_LEN],
    pub worker_id: u64,
    pub coordinator_pid: u32,
    /// The slot number, 1 to the pool's size (`run`'s `{%}`); the id + 1 if not given.
    pub slot: u64,
}

/// Why the worker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{0} is not set: this program is started by powerpool (see --worker-cmd), not by hand"
    )]
    Missing(&'static str),
    #[error("{0} is malformed")]
    Malformed(&'static str),
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        let var = |name: &'static str| std::env::var(name).map_err(|_| ConfigError::Missing(name));
        let endpoint = match std::env::var(env::CONNECTION_FD) {
            Ok(fd) => Endpoint::Connected(Some(
                fd.parse()
                    .ok()
                    .and_then(take_connection)
                    .ok_or(ConfigError::Malformed(env::CONNECTION_FD))?,
            )),
            Err(_) => Endpoint::Socket(PathBuf::from(var(env::SOCKET)?)),
        };
        let token =
            from_hex::<TOKEN_LEN>(&var(env::TOKEN)?).ok_or(ConfigError::Malformed(env::TOKEN))?;
        let worker_id: u64 =
            var(env::WORKER_ID)?.parse().map_err(|_| ConfigError::Malformed(env::WORKER_ID))?;
        let coordinator_pid = var(env::COORDINATOR_PID)?
            .parse()
            .map_err(|_| ConfigError::Malformed(env::COORDINATOR_PID))?;
        let slot = std::env::var(env::SLOT)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(worker_id.saturating_add(1));
        crate::arena::take_from_env();
        // What a task starts must not inherit the secret, nor be taken for a worker.
        for name in [
            env::SOCKET,
            env::CONNECTION_FD,
            env::TOKEN,
            env::WORKER_ID,
            env::COORDINATOR_PID,
            env::SLOT,
        ] {
            std::env::remove_var(name);
        }
        Ok(Config { endpoint, token, worker_id, coordinator_pid, slot })
    }
}

/// Asks the kernel to SIGKILL this process when its parent goes away (Linux only).
pub fn arm_parent_death_signal() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
    }
}

/// Marks this process as a batch job for the scheduler (`SCHED_BATCH`): its share of the CPU
/// is unchanged, but waking up it no longer preempts whatever runs, above all the process
/// that feeds it and gathers its results. On a machine with fewer cores than busy threads
/// that is measured: the typed library's B9 took 0.91x the time (20 interleaved pairs on 2
/// vCPUs). Called only by workers that run tasks in their own process: the policy passes to
/// children, and `run`'s and `--exec`'s commands are the user's, not ours to re-prioritise.
pub fn yield_to_coordinator() {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_setscheduler on this process with a valid, initialised parameter.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
    }
}

/// Puts back the soft open-file limit the coordinator started with ([`env::NOFILE_SOFT`]),
/// which it raised for itself: a worker, and anything it starts, gets the limit the user set.
/// Called first thing, while the process has one thread (it also removes the variable).
pub fn restore_nofile_limit() {
    let Some(text) = std::env::var_os(env::NOFILE_SOFT) else { return };
    std::env::remove_var(env::NOFILE_SOFT);
    #[cfg(unix)]
    {
        let Some(soft) = text.to_str().and_then(|t| t.parse::<u64>().ok()) else { return };
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit read or write only the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
                && (soft as libc::rlim_t) < limit.rlim_cur
            {
                limit.rlim_cur = soft as libc::rlim_t;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }
}

/// Whether our parent process is `pid`.
pub fn parent_is(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() };
        u32::try_from(ppid).is_ok_and(|p| p == pid)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Why a connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("cannot connect to {path}: {source}")]
    Connect { path: String, source: std::io::Error },
    #[error("the coordinator refused this worker: {0}")]
    Rejected(String),
    #[error("the coordinator closed the connection during the handshake")]
    ClosedEarly,
    #[error("unexpected message during the handshake: {0}")]
    Unexpected(String),
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    #[error(transparent)]
    Send(#[from] transport::SendError),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// The socket is not where, or not whose, it should be: nothing was sent.
    #[error("refusing to connect: {0}")]
    Untrusted(String),
}

/// A connection that has completed the handshake.
#[derive(Debug)]
pub struct Session {
    pub reader: FrameReader<Half>,
    pub writer: FrameWriter<Half>,
    pub task: String,
    pub input: Input,
}

/// Connects (or takes the connection it was born with) and says `Hello`; returns the job from
/// `Welcome`. The token goes only to the coordinator that started us: the socket's directory
/// must be ours and private, and the listening end (SO_PEERCRED) our user's and the
/// coordinator's pid. Otherwise a user who could swap the directory (a temp dir writable by all
/// without the sticky bit) would receive it. A connection inherited from the zygote needs no
/// such check: it is one end of a socket pair whose other end only the coordinator was given.
pub async fn handshake(config: &mut Config) -> Result<Session, ConnError> {
    let stream = match &mut config.endpoint {
        Endpoint::Socket(socket) => {
            check_socket_dir(socket)?;
            let stream = transport::connect(socket).await.map_err(|source| ConnError::Connect {
                path: socket.display().to_string(),
                source,
            })?;
            check_peer(&stream, config.coordinator_pid)?;
            stream
        }
        Endpoint::Connected(fd) => {
            let taken = fd.take().ok_or_else(|| ConnError::Connect {
                path: "its inherited connection".into(),
                source: std::io::Error::other("already taken"),
            })?;
            transport::from_fd(taken).map_err(|source| ConnError::Connect {
                path: "its inherited connection".into(),
                source,
            })?
        }
    };
    let (mut reader, mut writer) = transport::split(stream);
    let hello = FromWorker::Hello(Hello {
        version: PROTOCOL_VERSION,
        worker_id: config.worker_id,
        token: config.token,
        pid: std::process::id(),
    });
    writer.send(&hello).await?;
    let frame = reader.next_frame().await?.ok_or(ConnError::ClosedEarly)?;
    match codec::decode::<ToWorker>(&frame)? {
        ToWorker::Welcome(Welcome { task, input }) => Ok(Session { reader, writer, task, input }),
        ToWorker::Reject(reject) => Err(ConnError::Rejected(reject.reason)),
        other => Err(ConnError::Unexpected(format!("{other:?}"))),
    }
}

/// Takes over descriptor `fd` as this process's connection, if it is one: above the standard
/// three, open, and a Unix stream socket. Anything else is left alone (not closed: it is not
/// ours to close) and the variable is refused as malformed.
fn take_connection(fd: std::os::fd::RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd <= 2 {
        return None;
    }
    let option = |name: libc::c_int| {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`; a descriptor that is not
        // open, or not a socket, only makes it fail.
        let got = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (got == 0).then_some(value)
    };
    if option(libc::SO_TYPE) != Some(libc::SOCK_STREAM)
        || option(libc::SO_DOMAIN) != Some(libc::AF_UNIX)
    {
        return None;
    }
    // SAFETY: the descriptor is open (getsockopt succeeded), and it is this process's to own:
    // the zygote made it for this worker, and it is taken once, when the variable is read and
    // removed, before the worker opens any descriptor of its own.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Refuses a socket whose directory is not a directory of our own, mode 0700 (as the
/// coordinator makes it).
fn check_socket_dir(socket: &Path) -> Result<(), ConnError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let dir = match socket.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let untrusted = |why: String| ConnError::Untrusted(format!("'{}' {why}", dir.display()));
        let meta = std::fs::symlink_metadata(dir).map_err(|e| untrusted(e.to_string()))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if !meta.is_dir() {
            return Err(untrusted("is not a directory".into()));
        }
        if meta.uid() != me {
            return Err(untrusted(format!(
                "belongs to uid {}, not to this worker's {me}",
                meta.uid()
            )));
        }
        if meta.mode() & 0o777 != 0o700 {
            return Err(untrusted(format!("has mode {:o}, not 700", meta.mode() & 0o777)));
        }
    }
    #[cfg(not(unix))]
    let _ = socket;
    Ok(())
}

/// Refuses a listening end that is not the coordinator's: another user, or another process.
fn check_peer(stream: &transport::Stream, coordinator: u32) -> Result<(), ConnError> {
    let (uid, pid) = transport::peer(stream)
        .map_err(|e| ConnError::Untrusted(format!("no credentials for the socket's owner: {e}")))?;
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if let Some(uid) = uid.filter(|&uid| uid != me) {
            return Err(ConnError::Untrusted(format!(
                "the socket is held by uid {uid}, not this worker's {me}"
            )));
        }
    }
    if let Some(pid) = pid.filter(|&pid| pid != coordinator) {
        return Err(ConnError::Untrusted(format!(
            "the socket is held by pid {pid}, not the coordinator's {coordinator}"
        )));
    }
    #[cfg(not(unix))]
    let _ = uid;
    Ok(())
}
