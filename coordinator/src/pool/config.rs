//! The pool's settings, declared once: every client (`map`, `fetch --process`, the library)
//! builds one [`PoolConfig`], and the command line's flags for it are one clap group
//! (`cli::PoolArgs`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most worker processes one pool may start.
pub const MAX_WORKERS: usize = 512;

/// How a pool runs its workers and treats failures.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Worker processes, 1 to [`MAX_WORKERS`]; never more are started than there is work for.
    pub workers: usize,
    pub command: WorkerCommand,
    /// Times a failed unit is run again before it is split (or its item given up).
    pub retries: u32,
    /// Give up failed items and go on, instead of stopping before the first one.
    pub keep_going: bool,
    /// The longest one unit may run before its worker is ended.
    pub task_timeout: Option<Duration>,
    /// Replace each worker after this many units.
    pub max_tasks_per_worker: Option<u64>,
    /// Replace a worker whose resident memory passes this many bytes after a unit.
    pub max_worker_memory: Option<u64>,
    /// Units a worker may have outstanding, 1 to [`powerpool_shared::PIPELINE_DEPTH`]: 1 for
    /// work whose units take very different times (`run`'s jobs), so that no unit waits behind
    /// a long one while another worker is idle.
    pub pipeline_depth: usize,
    /// Shared memory the items' batches are written into and read from by the workers (the
    /// typed library's own workers), instead of going through their sockets.
    pub arena: Option<super::Arena>,
}

impl PoolConfig {
    /// The command line's defaults around `command`: a worker per core, 2 retries, stop at
    /// the first failed item, no timeout, no recycling.
    pub fn new(command: WorkerCommand) -> PoolConfig {
        PoolConfig::with_workers(command, default_workers())
    }

    /// The same defaults with `workers` workers: the core count is not read (it costs a run
    /// that names its worker count reads of the cgroup's CPU quota).
    pub fn with_workers(command: WorkerCommand, workers: usize) -> PoolConfig {
        PoolConfig {
            workers,
            command,
            retries: 2,
            keep_going: false,
            task_timeout: None,
            max_tasks_per_worker: None,
            max_worker_memory: None,
            pipeline_depth: powerpool_shared::PIPELINE_DEPTH,
            arena: None,
        }
    }
}

/// The default worker count: the cores this process may use.
pub fn default_workers() -> usize {
    // Asked once: the standard library reads the cgroup's CPU quota from /proc and /sys on
    // every call, and a run asks for its pool, its process budget and its runtime.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES
        .get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(&MAX_WORKERS)
}

/// The program (and arguments) that becomes a worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Extra environment for the workers (they inherit the coordinator's otherwise).
    pub env: Vec<(OsString, OsString)>,
}

/// Why a worker command cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadCommand(pub String);

impl WorkerCommand {
    /// This very executable, in its hidden `worker` mode.
    pub fn current_exe() -> Result<WorkerCommand, BadCommand> {
        let program = std::env::current_exe()
            .map_err(|e| BadCommand(format!("cannot find this program's own path: {e}")))?;
        Ok(WorkerCommand { program, args: vec!["worker".into()], env: Vec::new() })
    }

    /// A user-chosen worker executable: a path, or a bare name looked up in `PATH`.
    pub fn resolve(given: &Path) -> Result<WorkerCommand, BadCommand> {
        let bad = |why: &str| BadCommand(format!("--worker-cmd '{}' {why}", given.display()));
        let program = if given.components().count() == 1 && !given.is_absolute() {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .map(|dir| dir.join(given))
                .find(|p| is_executable_file(p))
                .ok_or_else(|| bad("is not an executable in PATH"))?
        } else {
            let meta =
                std::fs::metadata(given).map_err(|e| bad(&format!("cannot be used: {e}")))?;
            if !meta.is_file() {
                return Err(bad("is not a file"));
            }
            if !is_executable_file(given) {
                return Err(bad("is not executable"));
            }
            given.to_path_buf()
        };
        Ok(WorkerCommand { program, args: Vec::new(), env: Vec::new() })
    }
}

fn is_executable_file(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}
