//! The ordered gather: unit outputs arrive in any order and leave in input order.
//!
//! Outputs are keyed by their offsets in the range, not by chunk number, because a chunk that
//! failed comes back in pieces. Memory is bounded by the supervisor, which never dispatches a
//! chunk more than a window ahead of the last one written; this type only reorders, and refuses
//! a piece that overlaps one it has already seen, so no result is ever written twice.

use std::collections::BTreeMap;

/// Reorders unit outputs (of any type `T`) into input order.
#[derive(Debug)]
pub struct Gather<T> {
    /// Every offset below this one has been released.
    next: u64,
    /// Outputs that arrived ahead of `next`, by first offset: (end, output).
    pending: BTreeMap<u64, (u64, T)>,
}

impl<T> Default for Gather<T> {
    fn default() -> Self {
        Gather { next: 0, pending: BTreeMap::new() }
    }
}

impl<T> Gather<T> {
    pub fn new() -> Gather<T> {
        Gather::default()
    }

    /// Takes the output of offsets `first..end` and returns the outputs now ready, in order,
    /// as `(first, end, output)`. A piece that overlaps one already taken yields `None`: the
    /// caller must drop it.
    pub fn accept(&mut self, first: u64, end: u64, output: T) -> Option<Vec<(u64, u64, T)>> {
        if first < self.next || end <= first || self.overlaps(first, end) {
            return None;
        }
        self.pending.insert(first, (end, output));
        let mut ready = Vec::new();
        while let Some((end, output)) = self.pending.remove(&self.next) {
            ready.push((self.next, end, output));
            self.next = end;
        }
        Some(ready)
    }

    fn overlaps(&self, first: u64, end: u64) -> bool {
        let before = self.pending.range(..=first).next_back().is_some_and(|(_, &(e, _))| e > first);
        let after = self.pending.range(first..end).next().is_some();
        before || after
    }

    /// Every offset below this one has been released.
    pub fn released(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> &'static str {
        s
    }

    fn ends(r: Option<Vec<(u64, u64, &str)>>) -> Option<Vec<u64>> {
        r.map(|v| v.into_iter().map(|r| r.1).collect())
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
    }

    #[test]
    fn pieces_of_a_chunk_fill_its_place() {
        let mut g = Gather::new();
        assert_eq!(ends(g.accept(10, 20, b("next chunk"))), Some(vec![]));
        assert_eq!(ends(g.accept(6, 10, b("after"))), Some(vec![]));
        assert_eq!(ends(g.accept(0, 5, b("before"))), Some(vec![5]));
        assert_eq!(ends(g.accept(5, 6, "")), Some(vec![6, 10, 20]));
    }
}
