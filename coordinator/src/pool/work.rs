//! What runs next, and what a failure means for it.
//!
//! Work is handed out as *units*: a whole chunk at first, or a piece of one after failures.
//! Positions are offsets from the start of the range, so the arithmetic never leaves `u64`.
//!
//! # Failures and poison items
//!
//! A unit whose worker died, timed out or reported a panic is *blamed*. What happens next:
//!
//! - A panic names its item: the unit is cut around that item, the pieces before and after run
//!   again as new units, and the item alone carries the failure count.
//! - A whole chunk is run again as is up to `retries` times (a worker SIGKILLed from outside is
//!   no reason to suspect the chunk), then split in halves.
//! - A half, once it fails, is split again at once: bisection finds a poison item among `n`
//!   in about `log2(n)` more failures.
//! - A single item that has failed `retries + 1` times is a failed item: the caller decides
//!   whether the run stops before it or goes on without it.
//!
//! Units lost with a worker that was not running them (the second of its pipeline) are re-run
//! without blame. Re-runs go first, lowest offset first. Where new units end is the caller's
//! choice (the engine cuts a range into chunks within a window past the last result written,
//! and items into batches of what has arrived), which is what bounds memory.

use std::collections::BTreeMap;

/// A piece of the work: offsets `first..end` (inputs of a range, or item indices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    pub first: u64,
    pub end: u64,
    /// Times this unit failed.
    pub failures: u32,
    /// Made by bisection: split at its first failure.
    pub bisected: bool,
}

impl Unit {
    pub fn new(first: u64, end: u64, failures: u32, bisected: bool) -> Unit {
        Unit { first, end, failures, bisected }
    }

    pub fn len(&self) -> u64 {
        self.end - self.first
    }
}

/// What a blamed unit became.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Queued to run again, whole or in pieces.
    Requeued,
    /// The item at this offset failed `retries + 1` times.
    Poison(u64),
}

/// The units still to run. New units are cut by the caller (a range's chunks, a batch of
/// the items at hand); this type keeps the re-runs and the limit.
#[derive(Debug)]
pub struct Work {
    /// The first offset never dispatched.
    next_new: u64,
    /// Units to run again, by offset.
    again: BTreeMap<u64, Unit>,
    retries: u32,
    /// Nothing at or past this offset is dispatched (the run stops before a failed item).
    limit: u64,
}

impl Work {
    pub fn new(retries: u32) -> Work {
        Work { next_new: 0, again: BTreeMap::new(), retries, limit: u64::MAX }
    }

    /// The next unit to dispatch: a re-run, else a new unit from `next_new` to the end that
    /// `cut` gives (`None`: nothing new may be dispatched now).
    pub fn next(&mut self, cut: impl FnOnce(u64) -> Option<u64>) -> Option<Unit> {
        if let Some((_, unit)) = self.again.pop_first() {
            return Some(unit);
        }
        let first = self.next_new;
        if first >= self.limit {
            return None;
        }
        let end = cut(first).filter(|&end| end > first)?;
        self.next_new = end;
        Some(Unit::new(first, end, 0, false))
    }

    /// Whether every unit of a job of `total` items has been handed out (none to run again,
    /// none new before the end or the stop): what is left is in flight.
    pub fn handed_out(&self, total: u64) -> bool {
        self.again.is_empty() && self.next_new >= total.min(self.limit)
    }

    /// Queues a unit to run again without blame (lost before it ran, or never sent).
    pub fn requeue(&mut self, unit: Unit) {
        // A cut at a unit's first or last item leaves an empty piece: nothing to run.
        if unit.first < self.limit && unit.end > unit.first {
            self.again.insert(unit.first, unit);
        }
    }

    /// Records a failure of `unit`, at the item at offset `at` when known.
    pub fn blame(&mut self, unit: Unit, at: Option<u64>) -> Verdict {
        let failures = unit.failures + 1;
        if let Some(x) = at.filter(|&x| x >= unit.first && x < unit.end && unit.len() > 1) {
            self.requeue(Unit::new(unit.first, x, 0, false));
            self.requeue(Unit::new(x + 1, unit.end, 0, false));
            return self.blame(Unit::new(x, x + 1, unit.failures, false), Some(x));
        }
        if unit.len() == 1 {
            if failures > self.retries {
                return Verdict::Poison(unit.first);
            }
            self.requeue(Unit { failures, ..unit });
        } else if unit.bisected || failures > self.retries {
            let mid = unit.first + unit.len() / 2;
            self.requeue(Unit::new(unit.first, mid, 0, true));
            self.requeue(Unit::new(mid, unit.end, 0, true));
        } else {
            self.requeue(Unit { failures, ..unit });
        }
        Verdict::Requeued
    }

    /// Dispatches nothing at or past `offset` from now on.
    pub fn stop_before(&mut self, offset: u64) {
        self.limit = self.limit.min(offset);
        self.again.retain(|&first, _| first < offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(first: u64, end: u64) -> Unit {
        Unit::new(first, end, 0, false)
    }

    /// New units are chunks of 10 up to `total`.
    fn chunked(total: u64) -> impl Fn(u64) -> Option<u64> {
        move |first| (first < total).then(|| (first + 10).min(total))
    }

    fn drain(w: &mut Work, total: u64) -> Vec<(u64, u64)> {
        std::iter::from_fn(|| w.next(chunked(total))).map(|u| (u.first, u.end)).collect()
    }

    #[test]
    fn new_units_are_cut_by_the_caller() {
        let mut w = Work::new(2);
        assert_eq!(drain(&mut w, 25), vec![(0, 10), (10, 20), (20, 25)]);
        assert_eq!(w.next(|_| None), None);
        let mut w = Work::new(2);
        assert_eq!(w.next(Some), None, "an empty cut dispatches nothing");
        assert_eq!(w.next(|first| Some(first + 3)).map(|u| u.first), Some(0));
    }

    #[test]
    fn re_runs_go_first_lowest_first() {
        let mut w = Work::new(2);
        let (a, b) = (w.next(chunked(100)).unwrap(), w.next(chunked(100)).unwrap());
        w.requeue(b);
        w.requeue(a);
        assert_eq!(drain(&mut w, 100)[..3], [(0, 10), (10, 20), (20, 30)]);
    }

    #[test]
    fn a_chunk_is_retried_whole_then_bisected_down_to_the_poison_item() {
        let mut w = Work::new(1);
        let poison = 11;
        let mut failures = 0;
        let verdict = loop {
            let u = w.next(|f| (f < 16).then_some(16)).expect("work left");
            if u.first <= poison && poison < u.end {
                failures += 1;
                if let Verdict::Poison(at) = w.blame(u, None) {
                    break at;
                }
            }
        };
        assert_eq!(verdict, poison);
        // Two whole tries, four halvings (16 -> 1), then the item's own retry.
        assert_eq!(failures, 2 + 4 + 1);
    }

    #[test]
    fn a_known_item_is_cut_out_at_once() {
        let mut w = Work::new(0);
        let u = w.next(|_| Some(100)).unwrap();
        assert_eq!(w.blame(u, Some(42)), Verdict::Poison(42));
        assert_eq!(drain(&mut w, 100), vec![(0, 42), (43, 100)]);
        let mut w = Work::new(0);
        let u = w.next(|_| Some(10)).unwrap();
        assert_eq!(w.blame(u, Some(0)), Verdict::Poison(0));
        assert_eq!(drain(&mut w, 10), vec![(1, 10)], "no empty piece before the first item");
        let mut w = Work::new(1);
        let u = w.next(|_| Some(100)).unwrap();
        assert_eq!(w.blame(u, Some(42)), Verdict::Requeued);
        assert_eq!(drain(&mut w, 100), vec![(0, 42), (42, 43), (43, 100)]);
    }

    #[test]
    fn stopping_drops_everything_past_the_failed_item() {
        let mut w = Work::new(0);
        let sent: Vec<Unit> = (0..6).map(|_| w.next(chunked(100)).unwrap()).collect();
        w.requeue(sent[5]);
        w.requeue(sent[2]);
        w.stop_before(25);
        assert_eq!(drain(&mut w, 100), vec![(20, 30)]);
        let mut w = Work::new(0);
        w.stop_before(25);
        assert_eq!(drain(&mut w, 100), vec![(0, 10), (10, 20), (20, 30)]);
        w.requeue(unit(40, 41));
        assert_eq!(drain(&mut w, 100), vec![]);
    }
}
