//! Where `run`'s job outputs go: each job's stdout and stderr written whole, never interleaved
//! with another job's; in input order (GNU parallel's `-k`, the default) or as jobs finish
//! (`--unordered`); with `--tag`, each line prefixed with the job's arguments and a tab.
//!
//! The pool hands results over as they finish; in order mode, one that is early waits here.
//! Waiting outputs are held in memory up to `--buffer` bytes; beyond that each is written to a
//! file in the run's private spill directory, where the workers already put any output larger
//! than their own limit. So memory stays bounded however slow one job is: what this side
//! reports as consumed (and so what the pool may dispatch) stays within [`MAX_WAITING`] jobs of
//! the next one to write.

use super::emit::emit;
use super::joblog;
use super::template::Template;
use crate::pool::{Outcome, Released, ResultReceiver};
use bytes::Bytes;
use powerpool_shared::codec;
use powerpool_shared::jobs::{Captured, JobOutcome, JobStatus};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;

/// Finished jobs that may wait for an earlier one, at most.
pub const MAX_WAITING: u64 = 1 << 16;

/// The most characters of a failed job's input that the failure list shows.
const SHOWN_MAX: usize = 200;

/// What the run knows of a job before it runs.
#[derive(Debug)]
pub struct Meta {
    pub seq: u64,
    pub args: Vec<Vec<u8>>,
}

/// A job that failed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seq: u64,
    pub input: String,
    pub why: String,
}

/// How the outputs are written.
pub struct Settings {
    pub ordered: bool,
    pub tag: bool,
    pub buffer: u64,
    pub halt_on_error: bool,
    pub spill_dir: PathBuf,
    pub template: Template,
    pub joblog: Option<io::BufWriter<File>>,
    pub progress: Option<indicatif::ProgressBar>,
}

/// How the writing ended.
#[derive(Debug, Default)]
pub struct Written {
    pub jobs: u64,
    pub failed: u64,
    /// The first failures (at most 1000), in the order written.
    pub failures: Vec<Failure>,
    /// `--halt-on-error` stopped the run at this failure.
    pub halted: Option<Failure>,
    /// The pool said the run was complete.
    pub complete: bool,
}

struct Waiting {
    meta: Meta,
    outcome: JobOutcome,
}

/// Writes every job's output to `out` (stdout, or a shard) and stderr, until the pool is done.
pub fn consume(
    mut results: ResultReceiver,
    metas: std_mpsc::Receiver<Meta>,
    mut s: Settings,
    out: &mut dyn Write,
) -> io::Result<Written> {
    let mut written = Written::default();
    let mut known: BTreeMap<u64, Meta> = BTreeMap::new();
    let mut next_meta = 0u64;
    let mut waiting: BTreeMap<u64, Waiting> = BTreeMap::new();
    let mut held_bytes = 0u64;
    let mut next = 0u64;
    let mut taken = 0u64;
    while let Some(msg) = results.rx.blocking_recv() {
        let Some(Released { first, end, outcome }) = msg else {
            written.complete = true;
            break;
        };
        for (index, outcome) in (first..end).zip(outcomes(first, end, outcome)) {
            while !known.contains_key(&index) {
                let meta = metas.recv().map_err(|_| io::Error::other("a job has no input"))?;
                known.insert(next_meta, meta);
                next_meta += 1;
            }
            let meta = known.remove(&index).expect("just checked");
            log(&mut s, &meta, &outcome)?;
            taken += 1;
            if !s.ordered {
                if let Some(halt) = write_job(&mut s, &mut written, out, meta, outcome)? {
                    written.halted = Some(halt);
                    return finish(out, &mut s, written);
                }
                continue;
            }
            let mut job = Waiting { meta, outcome };
            if index != next {
                let len = inline_len(&job.outcome);
                if held_bytes + len > s.buffer {
                    spill(&s, index, &mut job.outcome)?;
                } else {
                    held_bytes += len;
                }
            }
            waiting.insert(index, job);
            while let Some(job) = waiting.remove(&next) {
                if next != index {
                    held_bytes -= inline_len(&job.outcome);
                }
                next += 1;
                if let Some(halt) = write_job(&mut s, &mut written, out, job.meta, job.outcome)? {
                    written.halted = Some(halt);
                    return finish(out, &mut s, written);
                }
            }
        }
        if results.rx.is_empty() {
            out.flush()?;
        }
        // Dispatch never runs more than MAX_WAITING jobs past the next one to write.
        let consumed = if s.ordered { taken.min(next + MAX_WAITING) } else { taken };
        results.consumed.send_replace(consumed);
    }
    finish(out, &mut s, written)
}

fn finish(out: &mut dyn Write, s: &mut Settings, written: Written) -> io::Result<Written> {
    out.flush()?;
    if let Some(log) = &mut s.joblog {
        log.flush()?;
    }
    Ok(written)
}

/// One outcome per item of a released unit.
fn outcomes(first: u64, end: u64, outcome: Outcome) -> Vec<JobOutcome> {
    let lost = |why: String| JobOutcome {
        status: JobStatus::CannotStart(why),
        started_us: 0,
        runtime_us: 0,
        attempts: 0,
        pid: 0,
        slot: 0,
        stdout: Captured::Inline(Default::default()),
        stderr: Captured::Inline(Default::default()),
    };
    let n = (end - first) as usize;
    match outcome {
        Outcome::Failed(why) => {
            (0..n).map(|_| lost(format!("its worker kept dying: {why}"))).collect()
        }
        Outcome::Done(records) => match codec::split_records(&records) {
            Ok(records) if records.len() == n => records
                .iter()
                .map(|r: &Bytes| {
                    JobOutcome::decode(r)
                        .unwrap_or_else(|e| lost(format!("a malformed result: {e}")))
                })
                .collect(),
            _ => (0..n).map(|_| lost("malformed results".into())).collect(),
        },
    }
}

fn log(s: &mut Settings, meta: &Meta, o: &JobOutcome) -> io::Result<()> {
    let Some(log) = &mut s.joblog else { return Ok(()) };
    let (exitval, signal) = o.status.exitval_signal();
    let expanded = s.template.expand(&meta.args, meta.seq);
    let entry = joblog::Entry {
        seq: meta.seq,
        start_s: o.started_us as f64 / 1e6,
        runtime_s: o.runtime_us as f64 / 1e6,
        receive: o.stdout.len(),
        exitval,
        signal,
        command: s.template.display(&expanded, o.slot.max(1)),
    };
    joblog::write(log, &entry)
}

fn inline_len(o: &JobOutcome) -> u64 {
    [&o.stdout, &o.stderr]
        .iter()
        .map(|c| match c {
            Captured::Inline(b) => b.len() as u64,
            Captured::Spilled { .. } => 0,
        })
        .sum()
}

/// Moves a waiting job's output from memory to files in the spill directory.
fn spill(s: &Settings, index: u64, o: &mut JobOutcome) -> io::Result<()> {
    for (c, ext) in [(&mut o.stdout, "out"), (&mut o.stderr, "err")] {
        if let Captured::Inline(bytes) = c {
            if bytes.is_empty() {
                continue;
            }
            let name = format!("w{index}.{ext}");
            std::fs::write(s.spill_dir.join(&name), &bytes[..])?;
            *c = Captured::Spilled { name, len: bytes.len() as u64 };
        }
    }
    Ok(())
}

/// What a job's failure says, if it failed.
fn failure(meta: &Meta, o: &JobOutcome) -> Option<Failure> {
    let why = match &o.status {
        JobStatus::Exited(0) => return None,
        JobStatus::Exited(code) => format!("exited with status {code}"),
        JobStatus::Signalled(sig) => format!("killed by {}", crate::pool::signal_name(*sig)),
        JobStatus::TimedOut(_) => format!(
            "timed out after {:.3} s (its process group was ended)",
            o.runtime_us as f64 / 1e6
        ),
        JobStatus::CannotStart(why) => why.clone(),
    };
    let why = if o.attempts > 1 { format!("{why} ({} attempts)", o.attempts) } else { why };
    Some(Failure { seq: meta.seq, input: shown(&meta.args), why })
}

/// A job's arguments as a failure names them: joined by spaces, cut after [`SHOWN_MAX`]
/// characters (an input may be megabytes), with the full length said.
fn shown(args: &[Vec<u8>]) -> String {
    let joined = args.join(&b' ');
    let text = String::from_utf8_lossy(&joined);
    match text.char_indices().nth(SHOWN_MAX) {
        None => text.into_owned(),
        Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], joined.len()),
    }
}

/// Writes one job's stdout and stderr, whole; returns its failure if the run halts on it.
fn write_job(
    s: &mut Settings,
    written: &mut Written,
    out: &mut dyn Write,
    meta: Meta,
    o: JobOutcome,
) -> io::Result<Option<Failure>> {
    let tag = s.tag.then(|| {
        let mut t = meta.args.join(&b' ');
        t.push(b'\t');
        t
    });
    emit(s, &o.stdout, tag.as_deref(), out)?;
    if !o.stderr.is_empty() {
        out.flush()?;
        let mut err = io::stderr().lock();
        crate::progress::suspend(|| emit(s, &o.stderr, tag.as_deref(), &mut err))?;
    }
    written.jobs += 1;
    if let Some(bar) = &s.progress {
        bar.inc(1);
    }
    let Some(failed) = failure(&meta, &o) else { return Ok(None) };
    written.failed += 1;
    if let Some(bar) = &s.progress {
        bar.set_message(format!("{} failed", written.failed));
    }
    if written.failures.len() < 1000 {
        written.failures.push(failed.clone());
    }
    Ok(s.halt_on_error.then_some(failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(args: Vec<Vec<u8>>) -> Failure {
        let meta = Meta { seq: 7, args };
        let o = JobOutcome {
            status: JobStatus::Exited(3),
            started_us: 0,
            runtime_us: 0,
            attempts: 1,
            pid: 1,
            slot: 1,
            stdout: Captured::Inline(Default::default()),
            stderr: Captured::Inline(Default::default()),
        };
        failure(&meta, &o).expect("a failure")
    }

    #[test]
    fn a_failure_names_its_input_and_a_huge_one_is_cut() {
        let f = failed(vec![b"a b".to_vec(), b"c".to_vec()]);
        assert_eq!((f.seq, f.input.as_str(), f.why.as_str()), (7, "a b c", "exited with status 3"));
        let f = failed(vec![vec![b'x'; 10_000_000]]);
        assert_eq!(f.input, format!("{}... (10000000 bytes)", "x".repeat(SHOWN_MAX)));
        let f = failed(vec!["é".repeat(300).into_bytes()]);
        assert!(f.input.starts_with(&"é".repeat(SHOWN_MAX)) && f.input.ends_with("(600 bytes)"));
    }
}
