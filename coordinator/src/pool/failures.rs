//! What the supervisor does when something fails: a chunk reported as failed (a caught panic),
//! a worker that died or overran its deadline, a worker that never started. Every case ends in
//! one of three places: the unit runs again (see `work.rs` for retries and bisection), the item
//! is given up (stop before it, or skip it under `--keep-going`), or the run ends because
//! workers cannot start at all.

use super::process::Exit;
use super::supervisor::{Stop, Supervisor};
use super::work::{Unit, Verdict};
use super::FailedItem;
use crate::errors::Error;
use crate::output::Writer;
use bytes::Bytes;
use powerpool_shared::ChunkFailed;
use std::time::Duration;
use tokio::time::Instant;

/// Workers in a row that may fail to start before the run gives up.
const MAX_START_FAILURES: u32 = 5;
/// Failed items kept for the final list under `--keep-going` (the count is always exact).
const FAILED_ITEMS_KEPT: usize = 1000;

impl Supervisor<'_> {
    /// A worker reported that a unit failed (a caught panic): it stays up, the unit is blamed.
    pub(super) fn on_failed(
        &mut self,
        id: u64,
        failed: ChunkFailed,
        writer: &Writer,
    ) -> Result<(), Stop> {
        let Some(w) = self.workers.get_mut(&id) else { return Ok(()) };
        let Some(pos) = w.in_flight.iter().position(|f| f.tag == failed.chunk) else {
            return Ok(());
        };
        let attempt = w.in_flight.remove(pos);
        let unit = attempt.unit;
        let pid = w.pid.unwrap_or(0);
        w.completed += 1;
        self.answered += 1;
        let at = failed.item.and_then(|x| self.job.chunks.offset_of(x, unit.first, unit.end));
        tracing::warn!("worker pid {pid}: {}", failed.reason);
        self.log_attempt(pid, &attempt, &format!("failed: {}", failed.reason));
        self.blame(unit, at, format!("{} (worker pid {pid})", failed.reason), writer)
    }

    /// A worker process ended. Its oldest unit was running and is blamed; the rest had not
    /// started and run again without blame. Then a replacement is scheduled.
    pub(super) fn on_exit(
        &mut self,
        id: u64,
        exit: Exit,
        note: Option<String>,
        timed_out: bool,
        writer: &Writer,
    ) -> Result<(), Stop> {
        let Some(w) = self.workers.remove(&id) else { return Ok(()) };
        let w_retiring = w.retiring;
        let pid = w.pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
        let how = match &note {
            Some(note) => format!("{exit} ({note})"),
            None => exit.to_string(),
        };
        if w.retiring && w.in_flight.is_empty() && exit == Exit::Code(0) {
            tracing::debug!("worker pid {pid} retired after {} chunks", w.completed);
            return Ok(());
        }
        if timed_out {
            self.stats.timeouts += 1;
        }
        // A worker that never answered anything and had nothing to blame did not really start.
        if !w.ready || (w.completed == 0 && w.in_flight.is_empty()) {
            let what = match (&exit, w.pid) {
                (Exit::NotStarted(_), _) | (_, None) => how.clone(),
                (_, Some(pid)) => format!("worker pid {pid} failed to start: {how}"),
            };
            self.start_failure(&what)?;
        } else {
            tracing::warn!("worker pid {pid} {how}");
            self.deaths_in_a_row += 1;
            if self.answered == 0 {
                self.no_answer_yet(&pid, &how)?;
            }
        }
        let pid_n = w.pid.unwrap_or(0);
        let mut lost = w.in_flight.into_iter();
        if let Some(running) = lost.next() {
            for queued in lost {
                self.log_attempt(pid_n, &queued, "requeued: its worker died before starting it");
                self.work.requeue(queued.unit);
            }
            self.log_attempt(pid_n, &running, &format!("died: {how}"));
            self.blame(running.unit, None, format!("worker pid {pid} {how}"), writer)?;
        }
        // A retiring worker's replacement was started when it retired.
        if self.needs_workers() && !w_retiring {
            self.schedule_respawn();
        }
        Ok(())
    }

    /// A worker that never started, or died before it was of any use; `what` says which and why.
    fn start_failure(&mut self, what: &str) -> Result<(), Stop> {
        self.start_failures += 1;
        tracing::warn!("{what}");
        if self.start_failures >= MAX_START_FAILURES {
            let last = match &self.last_refusal {
                Some(why) => format!("{what}; its connection was refused: {why}"),
                None => what.to_owned(),
            };
            return Err(Stop::Fatal(Error::WorkersWontStart {
                attempts: self.start_failures,
                last,
            }));
        }
        Ok(())
    }

    /// Workers that die on their first unit, every one, before any unit of the run was ever
    /// answered, are broken rather than unlucky: even a poison first input is cornered in fewer
    /// deaths (the whole chunk's tries, at most 24 halvings, the input's own tries).
    fn no_answer_yet(&mut self, pid: &str, how: &str) -> Result<(), Stop> {
        self.deaths_before_any_answer += 1;
        let limit = 2 * (self.job.retries + 1) + 25;
        if self.deaths_before_any_answer > limit {
            return Err(Stop::Fatal(Error::WorkersKeepDying {
                deaths: self.deaths_before_any_answer,
                last: format!("worker pid {pid} {how}"),
            }));
        }
        Ok(())
    }

    /// Restart backoff: workers that fail to start wait 25 ms, doubling to 1 s; workers that
    /// die on a unit are replaced at once, then after 1 ms doubling to 100 ms while deaths
    /// follow each other with no result in between (a poison item being cornered).
    fn schedule_respawn(&mut self) {
        let delay = match (self.start_failures, self.deaths_in_a_row) {
            (0, 0 | 1) => Duration::ZERO,
            (0, n) => Duration::from_millis(1 << (n - 2).min(7)).min(Duration::from_millis(100)),
            (n, _) => Duration::from_millis(25 << (n - 1).min(6)).min(Duration::from_secs(1)),
        };
        self.stats.restarts += 1;
        if let Some(bar) = &self.observers.progress {
            bar.set_message(format!("{} restart(s)", self.stats.restarts));
        }
        self.respawns_due += 1;
        self.respawn_at = Instant::now() + delay;
    }

    /// Records a failure of `unit`: run it again (whole or in pieces), or give up its item.
    fn blame(
        &mut self,
        unit: Unit,
        at: Option<u64>,
        reason: String,
        writer: &Writer,
    ) -> Result<(), Stop> {
        match self.work.blame(unit, at) {
            Verdict::Requeued => self.stats.retried += 1,
            Verdict::Poison(offset) => {
                let item = self.job.chunks.item(offset);
                let attempts = self.job.retries + 1;
                tracing::warn!("input {item} failed {attempts} time(s); last: {reason}");
                if self.job.keep_going {
                    self.stats.failed_count += 1;
                    if self.stats.failed_items.len() < FAILED_ITEMS_KEPT {
                        self.stats.failed_items.push(FailedItem { item, reason });
                    }
                    return self.release(offset, offset + 1, Bytes::new(), writer);
                }
                if self.poisoned.as_ref().is_none_or(|(at, _)| offset < *at) {
                    self.work.stop_before(offset);
                    self.poisoned = Some((offset, Error::TaskFailed { item, attempts, reason }));
                }
            }
        }
        Ok(())
    }
}
