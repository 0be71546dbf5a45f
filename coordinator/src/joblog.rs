//! `--joblog PATH`: one JSON line per chunk attempt, as GNU parallel's joblog has one line per
//! job: which inputs, on which worker, which attempt, when, for how long, and how it ended.
//!
//! ```text
//! {"chunk":3,"first":9375,"end":12500,"pid":4242,"attempt":1,"start_s":0.0041,"duration_s":0.0007,"outcome":"done"}
//! ```
//!
//! `chunk` is the chunk's index; `first..end` the inputs of this attempt (a piece of the chunk
//! once it was split to find a failing input; for items, their indices, and `chunk` is
//! `first`); `attempt` counts from 1 for each piece;
//! `outcome` is `done`, `failed: <panic>`, `died: <how the worker ended>`, `requeued: ...`
//! (lost with a worker before it started) or `cancelled` (the run stopped).

use crate::chunk::Chunks;
use crate::pool::{Attempt, AttemptLog};
use serde::Serialize;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

/// One line.
#[derive(Debug, Serialize)]
struct Line<'a> {
    chunk: u64,
    first: i64,
    end: i64,
    pid: u32,
    attempt: u32,
    start_s: f64,
    duration_s: f64,
    outcome: &'a str,
}

/// The joblog file, written line by line as attempts end.
#[derive(Debug)]
pub struct Joblog {
    out: BufWriter<File>,
    started: Instant,
    /// A range job's chunks, to name the inputs of an attempt (items are named by index).
    chunks: Option<Chunks>,
    /// The first write error: reported once at the end, never fatal to the run.
    error: Option<io::Error>,
}

impl Joblog {
    pub fn create(path: &Path, started: Instant, chunks: Option<Chunks>) -> io::Result<Joblog> {
        let file = crate::outfile::open_plain(path)?;
        Ok(Joblog { out: BufWriter::new(file), started, chunks, error: None })
    }
}

impl AttemptLog for Joblog {
    fn record(&mut self, a: &Attempt) {
        if self.error.is_some() {
            return;
        }
        let (chunk, first, end) = match &self.chunks {
            Some(c) => (a.first / c.size(), c.item(a.first), c.item(a.end)),
            None => (a.first, a.first as i64, a.end as i64),
        };
        let line = Line {
            chunk,
            first,
            end,
            pid: a.pid,
            attempt: a.attempt,
            start_s: a.sent.saturating_duration_since(self.started).as_secs_f64(),
            duration_s: a.ended.saturating_duration_since(a.sent).as_secs_f64(),
            outcome: &a.outcome,
        };
        let line = serde_json::to_string(&line).map_err(io::Error::other);
        let written = line.and_then(|l| writeln!(self.out, "{l}"));
        if let Err(err) = written {
            self.error = Some(err);
        }
    }

    fn finish(mut self: Box<Self>) -> io::Result<()> {
        match self.error.take() {
            Some(err) => Err(err),
            None => self.out.flush(),
        }
    }
}
