//! `--joblog PATH`: one JSON line per chunk attempt, as GNU parallel's joblog has one line per
//! job: which inputs, on which worker, which attempt, when, for how long, and how it ended.
//!
//! ```text
//! {"chunk":3,"first":9375,"end":12500,"pid":4242,"attempt":1,"start_s":0.0041,"duration_s":0.0007,"outcome":"done"}
//! ```
//!
//! `chunk` is the chunk's index; `first..end` the inputs of this attempt (a piece of the chunk
//! once it was split to find a failing input); `attempt` counts from 1 for each piece;
//! `outcome` is `done`, `failed: <panic>`, `died: <how the worker ended>`, `requeued: ...`
//! (lost with a worker before it started) or `cancelled` (the run stopped).

use serde::Serialize;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

/// One chunk attempt.
#[derive(Debug, Serialize)]
pub struct Attempt<'a> {
    pub chunk: u64,
    pub first: i64,
    pub end: i64,
    pub pid: u32,
    pub attempt: u32,
    pub start_s: f64,
    pub duration_s: f64,
    pub outcome: &'a str,
}

/// The joblog file, written line by line as attempts end.
#[derive(Debug)]
pub struct Joblog {
    out: BufWriter<File>,
    pub started: Instant,
    /// The first write error: reported once at the end, never fatal to the run.
    error: Option<io::Error>,
}

impl Joblog {
    pub fn create(path: &Path, started: Instant) -> io::Result<Joblog> {
        let file = crate::outfile::open_plain(path)?;
        Ok(Joblog { out: BufWriter::new(file), started, error: None })
    }

    pub fn record(&mut self, attempt: &Attempt<'_>) {
        if self.error.is_some() {
            return;
        }
        let line = serde_json::to_string(attempt).map_err(io::Error::other);
        let written = line.and_then(|l| writeln!(self.out, "{l}"));
        if let Err(err) = written {
            self.error = Some(err);
        }
    }

    /// Flushes; returns the first error met.
    pub fn finish(mut self) -> io::Result<()> {
        match self.error.take() {
            Some(err) => Err(err),
            None => self.out.flush(),
        }
    }
}
