//! The process pool: a supervisor loop, one slot task per worker process, and the socket that
//! workers connect to.

mod failures;
mod listener;
mod process;
mod results;
mod slot;
mod supervisor;
mod work;

pub use process::{signal_name, Exit};
pub use results::{Body, BodyEvent};
pub use supervisor::{run, Stop};

use crate::chunk::Chunks;
use crate::plan::WorkerCommand;
use powerpool_shared::Format;
use std::time::Duration;

/// What the pool computes, and how it treats failures.
#[derive(Debug, Clone)]
pub struct Job {
    pub task: String,
    pub format: Format,
    pub chunks: Chunks,
    pub workers: usize,
    pub command: WorkerCommand,
    /// Times a failed chunk (or item) is run again before it is split (or given up).
    pub retries: u32,
    /// Give up failed items and go on, instead of stopping before the first one.
    pub keep_going: bool,
    /// The longest one chunk may run before its worker is ended.
    pub task_timeout: Option<Duration>,
    /// Replace each worker after this many chunks.
    pub max_tasks_per_worker: Option<u64>,
    /// Release outputs in input order (the CLI), or as they arrive (`Pool::map_unordered`).
    pub ordered: bool,
}

/// What watches a run besides its output: the joblog and the progress bar.
#[derive(Debug, Default)]
pub struct Observers {
    pub joblog: Option<crate::joblog::Joblog>,
    pub progress: Option<indicatif::ProgressBar>,
}

/// An input given up under `--keep-going`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedItem {
    pub item: i64,
    /// The last failure: a panic message, or how the worker ended; with the worker's pid.
    pub reason: String,
}

/// What happened along the way.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Workers that died during the run (before or after their handshake) and were replaced.
    pub restarts: u32,
    /// Chunks (or pieces of chunks) run again after a failure.
    pub retried: u32,
    /// Chunks whose worker was ended for overrunning `--task-timeout`.
    pub timeouts: u32,
    /// Workers replaced after `--max-tasks-per-worker` chunks.
    pub recycled: u32,
    /// Inputs given up under `--keep-going`.
    pub failed_count: u64,
    /// The first of them (at most 1000), in the order they were given up.
    pub failed_items: Vec<FailedItem>,
}
