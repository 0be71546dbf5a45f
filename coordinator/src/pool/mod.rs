//! The process pool: the engine every client runs on.
//!
//! A client (`map`, `fetch --process`, the library) describes a [`Job`]: a task, its work (a
//! range the workers generate themselves, or a stream of opaque items) and a [`PoolConfig`].
//! [`run`] computes it in worker processes and hands each unit's [`Outcome`] to a
//! [`ResultSender`], in input order or as computed. The pool knows nothing of its clients: no
//! HTTP, no command line, no output format beyond passing bytes on.
//!
//! Inside, one supervisor loop (`supervisor.rs`) turns I/O into events for a pure
//! state machine (`engine.rs`, `failures.rs`, `work.rs`, `restart.rs`) and carries out the
//! actions it decides; one slot task per worker (`slot.rs`) owns that worker's process and
//! connection; the listener (`listener.rs`) checks every connection before handing it to its
//! slot.

mod arena;
mod config;
mod engine;
mod failures;
mod gather;
mod held;
mod job;
mod listener;
mod listening;
mod process;
mod restart;
mod runs;
mod shown;
mod slot;
mod socket_dir;
mod supervisor;
mod work;
pub(crate) mod zygote;
mod zygote_wire;

pub use arena::Arena;
pub use config::{default_workers, BadCommand, PoolConfig, WorkerCommand, MAX_WORKERS};
pub use engine::{first_wave, Attempt};
pub use job::{
    results, Batching, Item, Job, Outcome, Released, ResultReceiver, ResultSender, Work,
};
pub use process::{signal_name, Exit};
#[cfg(test)]
pub(crate) use runs::run_of;
pub use runs::{Run, RunBuilder};
pub use supervisor::run;

use crate::signal::Interrupt;

/// Why a pool run failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot set up the worker socket: {0}")]
    Socket(std::io::Error),
    #[error("workers keep failing to start ({attempts} attempts in a row); last: {last}")]
    WorkersWontStart { attempts: u32, last: String },
    #[error("{deaths} workers in a row died before any unit of work was finished; last: {last}")]
    WorkersKeepDying { deaths: u32, last: String },
    #[error("the worker refused the job: {0}")]
    JobRefused(String),
    /// A worker broke its job's contract after results were sent (see `Event::Broken`).
    #[error("{0}")]
    Broken(String),
    /// An input kept failing; every result before it was released.
    #[error("{what} failed {attempts} time(s), so the run stopped before it; last: {reason}")]
    TaskFailed { what: String, offset: u64, attempts: u32, reason: String },
}

/// Why a run stopped short of success.
#[derive(Debug)]
pub enum Stop {
    Fatal(PoolError),
    /// The consumer of the results went away (a write error, a dropped stream).
    ConsumerGone,
    Interrupted(Interrupt),
}

/// What watches a run besides its results: a log of attempts and a progress bar.
#[derive(Default)]
pub struct Observers {
    pub joblog: Option<Box<dyn AttemptLog>>,
    pub progress: Option<indicatif::ProgressBar>,
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers")
            .field("joblog", &self.joblog.is_some())
            .field("progress", &self.progress)
            .finish()
    }
}

/// Where each finished attempt at a unit is recorded (`--joblog`).
pub trait AttemptLog: Send {
    fn record(&mut self, attempt: &Attempt);
    /// Flushes; returns the first error met.
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

/// An input given up under `keep_going`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedItem {
    /// Its offset in the range, or its index among the items.
    pub offset: u64,
    /// How messages name it: `input 17`, `item 3`.
    pub what: String,
    /// The last failure: a panic message, or how the worker ended; with the worker's pid.
    pub reason: String,
}

/// What happened along the way.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Workers that died during the run (before or after their handshake) and were replaced.
    pub restarts: u32,
    /// Units run again after a failure.
    pub retried: u32,
    /// Units whose worker was ended for overrunning the task timeout.
    pub timeouts: u32,
    /// Workers replaced after `max_tasks_per_worker` units.
    pub recycled: u32,
    /// Inputs given up under `keep_going`.
    pub failed_count: u64,
    /// The first of them (at most 1000), in the order they were given up.
    pub failed_items: Vec<FailedItem>,
    /// A worker said, after the last result, that its contract was broken (`map --exec`: its
    /// command printed more lines than it was given): the results cannot be trusted.
    pub broken: Option<String>,
}
