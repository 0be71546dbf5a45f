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
    #[error("{deaths} workers in a row died before any chunk was finished; last: {last}")]
    WorkersKeepDying { deaths: u32, last: String },
    #[error("the worker refused the job: {0}")]
    JobRefused(String),
    /// An input kept failing; every result before it was written.
    #[error(
        "input {item} failed {attempts} time(s), so the run stopped before it; last: {reason}"
    )]
    TaskFailed { item: i64, attempts: u32, reason: String },
    /// `--keep-going`: the run finished without some inputs, each already listed.
    #[error("{failed} input(s) failed and are missing from the output (--keep-going)")]
    Partial { failed: u64 },
    /// `merge`: a shard is missing, duplicated, truncated, corrupt or from another job.
    #[error("merge refused: {0}")]
    Merge(String),
    #[error("cannot write the output: {0}")]
    Output(io::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(io::Error),
    /// A resource limit (`ulimit -u`) too low for the run; the message names it.
    #[error("{0}")]
    Limit(String),
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
            Error::Usage(_) | Error::JobRefused(_) | Error::Merge(_) => exit_codes::USAGE,
            Error::Interrupted { code, .. } => *code,
            Error::FetchFailed { .. } => exit_codes::FETCH_FAILED,
            Error::TaskFailed { .. } => exit_codes::ITEM_FAILED,
            Error::Partial { .. } => exit_codes::PARTIAL,
            _ => exit_codes::FAILURE,
        }
    }
}
