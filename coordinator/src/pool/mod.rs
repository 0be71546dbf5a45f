//! The process pool: a supervisor loop, one slot task per worker process, and the socket that
//! workers connect to.

mod listener;
mod process;
mod queue;
mod slot;
mod supervisor;

pub use process::{signal_name, Exit};
pub use supervisor::{run, Stop};

use crate::chunk::Chunks;
use crate::plan::WorkerCommand;
use powerpool_shared::Format;

/// What the pool computes.
#[derive(Debug, Clone)]
pub struct Job {
    pub task: String,
    pub format: Format,
    pub chunks: Chunks,
    pub workers: usize,
    pub command: WorkerCommand,
}

/// What happened along the way.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Workers that died during the run (before or after their handshake) and were replaced.
    pub restarts: u32,
    /// Chunks that were run again because their worker died.
    pub retried_chunks: u32,
}
