//! The ordered gather: unit outputs arrive in any order and leave in input order.
//!
//! Outputs are keyed by their offsets in the range, not by chunk number, because a chunk that
//! failed comes back in pieces. Memory is bounded by the supervisor, which never dispatches a
//! chunk more than a window ahead of the last one written; this type only reorders, and refuses
//! a piece that overlaps one it has already seen, so no result is ever written twice.

use bytes::Bytes;
use std::collections::BTreeMap;

/// One output released: the bytes of offsets `first..end`.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    pub first: u64,
    pub end: u64,
    pub bytes: Bytes,
}

/// Reorders unit outputs into input order.
#[derive(Debug, Default)]
pub struct Gather {
    /// Every offset below this one has been released.
    next: u64,
    /// Outputs that arrived ahead of `next`, by first offset: (end, bytes).
    pending: BTreeMap<u64, (u64, Bytes)>,
}

impl Gather {
    pub fn new() -> Gather {
        Gather::default()
    }

    /// Takes the output of offsets `first..end` and returns the outputs now ready, in order.
    /// A piece that overlaps one already taken yields `None`: the caller must drop it.
    pub fn accept(&mut self, first: u64, end: u64, output: Bytes) -> Option<Vec<Released>> {
        if first < self.next || end <= first || self.overlaps(first, end) {
            return None;
        }
        self.pending.insert(first, (end, output));
        let mut ready = Vec::new();
        while let Some((end, bytes)) = self.pending.remove(&self.next) {
            ready.push(Released { first: self.next, end, bytes });
            self.next = end;
        }
        Some(ready)
    }

    fn overlaps(&self, first: u64, end: u64) -> bool {
        let before = self.pending.range(..=first).next_back().is_some_and(|(_, &(e, _))| e > first);
        let after = self.pending.range(first..end).next().is_some();
        before || after
    }

    /// Whether offsets `first..end` were all taken already.
    pub fn has(&self, first: u64, end: u64) -> bool {
        end <= self.next
            || self.pending.range(..=first).next_back().is_some_and(|(_, &(e, _))| e >= end)
    }

    /// Every offset below this one has been released.
    pub fn released(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn ends(r: Option<Vec<Released>>) -> Option<Vec<u64>> {
        r.map(|v| v.into_iter().map(|r| r.end).collect())
    }

    #[test]
    fn releases_in_order_and_refuses_duplicates() {
        let mut g = Gather::new();
        assert_eq!(ends(g.accept(20, 30, b("c"))), Some(vec![]));
        assert_eq!(ends(g.accept(10, 20, b("b"))), Some(vec![]));
        assert_eq!(g.accept(20, 30, b("c again")), None);
        assert_eq!(g.accept(25, 26, b("inside c")), None);
        assert_eq!(g.accept(5, 15, b("across a and b")), None);
        assert_eq!(ends(g.accept(0, 10, b("a"))), Some(vec![10, 20, 30]));
        assert_eq!(g.accept(10, 20, b("b again")), None);
        assert_eq!(g.released(), 30);
        assert!(g.has(0, 30) && !g.has(30, 31));
    }

    #[test]
    fn pieces_of_a_chunk_fill_its_place() {
        let mut g = Gather::new();
        assert_eq!(ends(g.accept(10, 20, b("next chunk"))), Some(vec![]));
        assert_eq!(ends(g.accept(6, 10, b("after"))), Some(vec![]));
        assert_eq!(ends(g.accept(0, 5, b("before"))), Some(vec![5]));
        assert!(g.has(6, 10) && !g.has(5, 6));
        assert_eq!(ends(g.accept(5, 6, Bytes::new())), Some(vec![6, 10, 20]));
    }
}
