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
//! without blame. Re-runs go first, lowest offset first; new chunks are dispatched only within a
//! window past the last result written, which is what bounds memory.

use crate::chunk::Chunks;
use std::collections::{BTreeMap, BTreeSet};

/// A piece of the range to compute: offsets `first..end`.
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
    fn new(first: u64, end: u64, failures: u32, bisected: bool) -> Unit {
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

/// The units still to run.
#[derive(Debug)]
pub struct Work {
    chunks: Chunks,
    /// The next chunk never dispatched.
    next_new: u64,
    /// Units to run again, by offset.
    again: BTreeMap<u64, Unit>,
    /// How many chunks past the last written one may be dispatched.
    window: u64,
    retries: u32,
    /// Nothing at or past this offset is dispatched (the run stops before a failed item).
    limit: u64,
    /// Bodies mode (`fetch --process`): units are bodies, dispatched once fetched, in any
    /// order; the fetch budget bounds memory instead of the window.
    ready: Option<BTreeSet<u64>>,
}

impl Work {
    pub fn new(chunks: Chunks, window: u64, retries: u32) -> Work {
        let limit = chunks.offsets(chunks.count().saturating_sub(1)).1;
        Work { chunks, next_new: 0, again: BTreeMap::new(), window, retries, limit, ready: None }
    }

    /// Work over `count` bodies, each dispatched once [`Work::make_ready`] says it arrived.
    pub fn bodies(count: u64, retries: u32) -> Work {
        let mut work = Work::new(Chunks::new(0, count as i64, 1), 0, retries);
        work.ready = Some(BTreeSet::new());
        work
    }

    /// Bodies mode: body `index` can be dispatched.
    pub fn make_ready(&mut self, index: u64) {
        if let Some(ready) = &mut self.ready {
            ready.insert(index);
        }
    }

    /// The next unit to dispatch, given the offset written so far; `None` when nothing may be
    /// dispatched now.
    pub fn next(&mut self, written: u64) -> Option<Unit> {
        if let Some((_, unit)) = self.again.pop_first() {
            return Some(unit);
        }
        if let Some(ready) = &mut self.ready {
            return ready.pop_first().map(|i| Unit::new(i, i + 1, 0, false));
        }
        let written_chunks = written / self.chunks.size();
        let max = written_chunks.saturating_add(self.window).min(self.chunks.count());
        if self.next_new >= max {
            return None;
        }
        let (first, end) = self.chunks.offsets(self.next_new);
        if first >= self.limit {
            return None;
        }
        self.next_new += 1;
        Some(Unit::new(first, end, 0, false))
    }

    /// Queues a unit to run again without blame (lost before it ran, or never sent).
    pub fn requeue(&mut self, unit: Unit) {
        if unit.first < self.limit {
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

    fn drain(w: &mut Work) -> Vec<(u64, u64)> {
        std::iter::from_fn(|| w.next(u64::MAX / 2)).map(|u| (u.first, u.end)).collect()
    }

    #[test]
    fn new_chunks_stay_within_the_window() {
        let mut w = Work::new(Chunks::new(0, 100, 10), 3, 2);
        let firsts: Vec<_> = std::iter::from_fn(|| w.next(0)).map(|u| u.first).collect();
        assert_eq!(firsts, vec![0, 10, 20]);
        assert_eq!(w.next(19).map(|u| u.first), Some(30));
        assert_eq!(w.next(19), None);
        assert_eq!(w.next(20).map(|u| u.first), Some(40));
    }

    #[test]
    fn re_runs_go_first_lowest_first() {
        let mut w = Work::new(Chunks::new(0, 100, 10), 100, 2);
        let (a, b) = (w.next(0).unwrap(), w.next(0).unwrap());
        w.requeue(b);
        w.requeue(a);
        assert_eq!(drain(&mut w)[..3], [(0, 10), (10, 20), (20, 30)]);
    }

    #[test]
    fn a_chunk_is_retried_whole_then_bisected_down_to_the_poison_item() {
        let mut w = Work::new(Chunks::new(0, 16, 16), 10, 1);
        let poison = 11;
        let mut failures = 0;
        let verdict = loop {
            let u = w.next(0).expect("work left");
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
        let mut w = Work::new(Chunks::new(0, 100, 100), 10, 0);
        let u = w.next(0).unwrap();
        assert_eq!(w.blame(u, Some(42)), Verdict::Poison(42));
        assert_eq!(drain(&mut w), vec![(0, 42), (43, 100)]);
        let mut w = Work::new(Chunks::new(0, 100, 100), 10, 1);
        let u = w.next(0).unwrap();
        assert_eq!(w.blame(u, Some(42)), Verdict::Requeued);
        assert_eq!(drain(&mut w), vec![(0, 42), (42, 43), (43, 100)]);
    }

    #[test]
    fn stopping_drops_everything_past_the_failed_item() {
        let mut w = Work::new(Chunks::new(0, 100, 10), 100, 0);
        let sent: Vec<Unit> = (0..6).map(|_| w.next(0).unwrap()).collect();
        w.requeue(sent[5]);
        w.requeue(sent[2]);
        w.stop_before(25);
        assert_eq!(drain(&mut w), vec![(20, 30)]);
        let mut w = Work::new(Chunks::new(0, 100, 10), 100, 0);
        w.stop_before(25);
        assert_eq!(drain(&mut w), vec![(0, 10), (10, 20), (20, 30)]);
        w.requeue(unit(40, 41));
        assert_eq!(drain(&mut w), vec![]);
    }
}
