//! The errors that end a run, each with its exit status. `lib.rs` prints them, in one place.

use crate::exit_codes;
use crate::pool::{PoolError, Stop};
use std::io;

/// Why `powerpool` stopped short of success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input found before any work started.
    #[error("{0}")]
    Usage(String),
    /// The pool could not finish: workers that cannot start or keep dying, a job the workers
    /// refuse, an input that kept failing (every result before it was written).
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// `--keep-going`: the run finished without some inputs, each already listed.
    #[error("{failed} input(s) failed and are missing from the output (--keep-going)")]
    Partial { failed: u64 },
    /// `run --halt-on-error`: a job failed, so the run stopped (every output before it was
    /// written).
    #[error("job {seq} failed ({why}), so the run stopped (--halt-on-error)")]
    Halted { seq: u64, why: String },
    /// `run`: every job ran, but some failed; each was listed.
    #[error("{failed} of {total} job(s) failed (listed above)")]
    JobsFailed { failed: u64, total: u64 },
    /// The input could not be read to its end.
    #[error("{0}")]
    Input(String),
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
            Error::Usage(_) | Error::Pool(PoolError::JobRefused(_)) | Error::Merge(_) => {
                exit_codes::USAGE
            }
            Error::Interrupted { code, .. } => *code,
            Error::FetchFailed { .. } => exit_codes::FETCH_FAILED,
            Error::Pool(PoolError::TaskFailed { .. }) | Error::Halted { .. } => {
                exit_codes::ITEM_FAILED
            }
            Error::Partial { .. } | Error::JobsFailed { .. } => exit_codes::PARTIAL,
            _ => exit_codes::FAILURE,
        }
    }
}

/// How a pool run that stopped short ends a command. A consumer that went away is an output
/// error: the writer's own error, when there is one, says why.
impl From<Stop> for Error {
    fn from(stop: Stop) -> Error {
        match stop {
            Stop::Fatal(err) => Error::Pool(err),
            Stop::ConsumerGone => Error::Output(io::Error::other("the output stopped")),
            Stop::Interrupted(int) => Error::Interrupted { name: int.name, code: int.code },
        }
    }
}
