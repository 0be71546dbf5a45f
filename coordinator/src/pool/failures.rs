//! What the engine does when something fails: a unit reported as failed (a caught panic), a
//! worker that died or overran its deadline, a worker that never started. Every case ends in
//! one of three places: the unit runs again (see `work.rs` for retries and bisection), the item
//! is given up (stop before it, or skip it under `keep_going`), or the run ends because
//! workers cannot start at all (see `restart.rs`).

use super::engine::{name_one, Engine, Kind};
use super::job::Outcome;
use super::process::Exit;
use super::restart::GiveUp;
use super::work::{Unit, Verdict};
use super::{FailedItem, PoolError, Stop};
use powerpool_shared::ChunkFailed;
use std::time::Instant;

/// Failed items kept for the final list under `keep_going` (the count is always exact).
const FAILED_ITEMS_KEPT: usize = 1000;

impl Engine {
    /// A worker reported that a unit failed (a caught panic): it stays up, the unit is blamed.
    pub(super) fn on_failed(&mut self, id: u64, failed: ChunkFailed, now: Instant) {
        let Some(w) = self.workers.get(&id) else { return };
        let Some(pos) = w.in_flight.iter().position(|f| f.tag == failed.chunk) else { return };
        let attempt = w.in_flight[pos];
        let pid = self.answered(id, pos, now);
        self.restarts.answered();
        self.retire_after_answer(id);
        let unit = attempt.unit;
        let at = failed.item.and_then(|x| self.offset_of(x, unit));
        tracing::warn!("worker pid {pid}: {}", failed.reason);
        self.log(pid, &attempt, now, format!("failed: {}", failed.reason));
        self.blame(unit, at, format!("{} (worker pid {pid})", failed.reason));
    }

    /// A worker process ended. Its oldest unit was running and is blamed; the rest had not
    /// started and run again without blame. Then a replacement is scheduled.
    pub(super) fn on_exit(&mut self, id: u64, exit: Exit, note: Option<String>, now: Instant) {
        let Some(w) = self.workers.remove(&id) else { return };
        let pid = w.pid.map_or_else(|| "(not started)".to_owned(), |p| p.to_string());
        let note = w.timed_out.clone().or(note);
        let how = match &note {
            Some(note) => format!("{exit} ({note})"),
            None => exit.to_string(),
        };
        // A worker released once every unit was out has nothing to lose, however it ends: as
        // at the end of the run, its exit is no death (a broken contract was noted already).
        if w.retiring && w.in_flight.is_empty() && (exit == Exit::Code(0) || w.released) {
            tracing::debug!("worker pid {pid} retired after {} units: {how}", w.completed);
            return;
        }
        if w.timed_out.is_some() {
            self.stats.timeouts += 1;
        }
        // A worker that never answered anything and had nothing to blame did not really start.
        let (verdict, what) = if !w.ready || (w.completed == 0 && w.in_flight.is_empty()) {
            let what = match (&exit, w.pid) {
                (Exit::NotStarted(_), _) | (_, None) => how.clone(),
                (_, Some(pid)) => format!("worker pid {pid} failed to start: {how}"),
            };
            tracing::warn!("{what}");
            (self.restarts.start_failed(), what)
        } else {
            let what = format!("worker pid {pid} {how}");
            tracing::warn!("{what}");
            (self.restarts.died(), what)
        };
        if let Err(give_up) = verdict {
            self.finished = Some(Err(Stop::Fatal(self.give_up(give_up, what))));
            return;
        }
        let pid_n = w.pid.unwrap_or(0);
        let mut lost = w.in_flight.into_iter();
        if let Some(running) = lost.next() {
            for queued in lost {
                self.log(
                    pid_n,
                    &queued,
                    now,
                    "requeued: its worker died before starting it".into(),
                );
                self.work.requeue(queued.unit);
            }
            self.log(pid_n, &running, now, format!("died: {how}"));
            self.blame(running.unit, None, format!("worker pid {pid} {how}"));
        }
        // A retiring worker's replacement was started when it retired; a released one had
        // none, and its lost units need one.
        if self.needs_workers() && (!w.retiring || w.released) {
            self.schedule_respawn(now);
        }
    }

    fn give_up(&self, why: GiveUp, last: String) -> PoolError {
        match why {
            GiveUp::WontStart { attempts } => {
                let last = match &self.last_refusal {
                    Some(why) => format!("{last}; its connection was refused: {why}"),
                    None => last,
                };
                PoolError::WorkersWontStart { attempts, last }
            }
            GiveUp::KeepDying { deaths } => PoolError::WorkersKeepDying { deaths, last },
        }
    }

    /// The offset of the failing input or item a worker named, if it lies in `unit`.
    fn offset_of(&self, item: i64, unit: Unit) -> Option<u64> {
        match &self.kind {
            Kind::Range { chunks, .. } => chunks.offset_of(item, unit.first, unit.end),
            Kind::Items(_) => {
                u64::try_from(item).ok().filter(|x| (unit.first..unit.end).contains(x))
            }
        }
    }

    /// Records a failure of `unit`: run it again (whole or in pieces), or give up its item.
    fn blame(&mut self, unit: Unit, at: Option<u64>, reason: String) {
        match self.work.blame(unit, at) {
            Verdict::Requeued => self.stats.retried += 1,
            Verdict::Poison(offset) => {
                let what = name_one(&self.kind, offset);
                let attempts = self.config.retries + 1;
                tracing::warn!("{what} failed {attempts} time(s); last: {reason}");
                if self.config.keep_going {
                    self.stats.failed_count += 1;
                    if self.stats.failed_items.len() < FAILED_ITEMS_KEPT {
                        let reason = reason.clone();
                        self.stats.failed_items.push(FailedItem { offset, what, reason });
                    }
                    self.release(offset, offset + 1, Outcome::Failed(reason));
                    return;
                }
                if self.poisoned.as_ref().is_none_or(|(at, _)| offset < *at) {
                    self.work.stop_before(offset);
                    let err = PoolError::TaskFailed { what, offset, attempts, reason };
                    self.poisoned = Some((offset, err));
                }
            }
        }
    }
}
