//! The errors that end a run, each with its exit status. `lib.rs` prints them, in one place.

use crate::exit_codes;
use std::io;

/// Why `powerpool` stopped short of success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input found before any work started.
    #[error("{0}")]
    Usage(String),
    #[error("cannot set up the worker socket: {0}")]
    Socket(io::Error),
    #[error("cannot start a worker ({program}): {source}")]
    Spawn { program: String, source: io::Error },
    #[error("workers keep failing to start ({attempts} attempts in a row); last: {last}")]
    WorkersWontStart { attempts: u32, last: String },
    #[error("the worker refused the job: {0}")]
    JobRefused(String),
    #[error("chunk {chunk} (inputs {start}..{end}) failed {attempts} times; last: {last}")]
    ChunkKeepsFailing { chunk: u64, start: i64, end: i64, attempts: u32, last: String },
    #[error("the task failed at input {item}: {reason}")]
    TaskFailed { item: String, reason: String },
    #[error("cannot write the output: {0}")]
    Output(io::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(io::Error),
    #[error("cannot set up HTTP: {0}")]
    Http(String),
    #[error("interrupted by {name}")]
    Interrupted { name: &'static str, code: u8 },
    /// Work finished but some fetches failed; each was already reported.
    #[error("{failed} of {total} fetches failed")]
    FetchFailed { failed: usize, total: usize },
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::JobRefused(_) => exit_codes::USAGE,
            Error::Interrupted { code, .. } => *code,
            Error::FetchFailed { .. } => exit_codes::FETCH_FAILED,
            _ => exit_codes::FAILURE,
        }
    }
}
