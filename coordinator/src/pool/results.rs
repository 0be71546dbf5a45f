//! Results coming back: a unit's output checked against what was asked, handed to the gather
//! and on to the writer in order; the joblog line of each attempt; recycling a worker that has
//! done its quota. And the bodies of `fetch --process`, which are held here until their result
//! is in.

use super::slot::SlotCmd;
use super::supervisor::{InFlight, Stop, Supervisor};
use crate::gather::Released;
use crate::joblog::Attempt;
use crate::output::Writer;
use bytes::Bytes;
use powerpool_shared::Format;
use tokio::sync::mpsc;

/// A body fetched for `fetch --process` (`body: None`: the fetch failed, nothing to compute).
#[derive(Debug)]
pub struct BodyEvent {
    pub index: u64,
    pub body: Option<Body>,
}

/// A fetched body, holding its share of the fetch budget until its result is in.
#[derive(Debug)]
pub struct Body {
    pub bytes: Bytes,
    pub url: String,
    pub hold: crate::fetch::Hold,
}

/// The next body event, or never when there is no (more) body channel.
pub(super) async fn next_body(
    bodies: &mut Option<&mut mpsc::UnboundedReceiver<BodyEvent>>,
) -> Option<BodyEvent> {
    match bodies {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Supervisor<'_> {
    pub(super) fn on_done(
        &mut self,
        id: u64,
        tag: u64,
        items: u64,
        output: Bytes,
        writer: &Writer,
    ) -> Result<(), Stop> {
        let Some(w) = self.workers.get_mut(&id) else { return Ok(()) };
        let pos = w.in_flight.iter().position(|f| f.tag == tag);
        // `items` counts inputs, or for a body its bytes.
        let expected = |f: &InFlight| match self.bodies.get(&f.unit.first) {
            Some(body) => body.bytes.len() as u64,
            None => f.unit.len(),
        };
        let fits = |f: &InFlight| {
            expected(f) == items && output_fits(self.job.format, items, output.len())
        };
        let Some(done) = pos.map(|p| w.in_flight[p]).filter(fits) else {
            tracing::warn!(
                id,
                tag,
                items,
                len = output.len(),
                "worker sent a result that does not fit its chunk; replacing it"
            );
            let _ = w.slot.cmd.send(SlotCmd::Kill);
            return Ok(());
        };
        w.in_flight.retain(|f| f.tag != tag);
        w.completed += 1;
        let pid = w.pid.unwrap_or(0);
        self.answered += 1;
        // Progress: the failures so far were not "workers cannot start at all".
        self.start_failures = 0;
        self.deaths_in_a_row = 0;
        self.retire_if_due(id);
        self.log_attempt(pid, &done, "done");
        self.release(done.unit.first, done.unit.end, output, writer)
    }

    /// Records one finished attempt in the joblog, if there is one.
    pub fn log_attempt(&mut self, pid: u32, f: &InFlight, outcome: &str) {
        let Some(log) = self.observers.joblog.as_mut() else { return };
        let chunks = &self.job.chunks;
        log.record(&Attempt {
            chunk: f.unit.first / chunks.size(),
            first: chunks.item(f.unit.first),
            end: chunks.item(f.unit.end),
            pid,
            attempt: f.unit.failures + 1,
            start_s: f.sent.duration_since(log.started.into()).as_secs_f64(),
            duration_s: f.sent.elapsed().as_secs_f64(),
            outcome,
        });
    }

    /// Hands a unit's output to the gather, and whatever is now in order to the writer.
    pub fn release(
        &mut self,
        first: u64,
        end: u64,
        output: Bytes,
        writer: &Writer,
    ) -> Result<(), Stop> {
        // A body's memory (and its share of the fetch budget) goes once its result is in.
        self.bodies.remove(&first);
        if !self.job.ordered {
            // The gather only keeps the books (what is done, no duplicates); the bytes go out.
            if self.gather.accept(first, end, Bytes::new()).is_none() {
                tracing::warn!(first, end, "dropped a result already delivered");
            } else if !writer.push(Released { first, end, bytes: output }) {
                return Err(Stop::WriterGone);
            }
            return Ok(());
        }
        match self.gather.accept(first, end, output) {
            Some(ready) => {
                for out in ready {
                    if !writer.push(out) {
                        return Err(Stop::WriterGone);
                    }
                }
            }
            None => tracing::warn!(first, end, "dropped a result already written"),
        }
        Ok(())
    }

    /// `--max-tasks-per-worker`: a worker that has answered its quota is shut down and a fresh
    /// one started in its place at once, so the pool never runs short.
    pub(super) fn retire_if_due(&mut self, id: u64) {
        let Some(max) = self.job.max_tasks_per_worker else { return };
        let Some(w) = self.workers.get_mut(&id) else { return };
        if w.retiring || w.completed < max || !w.in_flight.is_empty() {
            return;
        }
        w.retiring = true;
        let _ = w.slot.cmd.send(SlotCmd::Shutdown);
        self.stats.recycled += 1;
        if self.needs_workers() {
            self.spawn_worker();
        }
    }
}

/// Whether `len` output bytes are plausible for `items` inputs in `format`.
fn output_fits(format: Format, items: u64, len: usize) -> bool {
    let len = len as u64;
    match format {
        Format::Lines => {
            len >= items * 2 && len <= items * Format::Lines.max_bytes_per_item() as u64
        }
        Format::Bin => len == items * 16,
        Format::Sum => len == 32,
        // One body's result line; `items` is the body's length.
        Format::Text => len <= Format::Text.max_bytes_per_item() as u64,
    }
}
