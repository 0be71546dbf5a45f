//! The ordered gather: chunk outputs arrive in any order and leave in input order.
//!
//! Memory is bounded by the supervisor, which never dispatches a chunk more than a window ahead
//! of the last one written; this type only reorders, and refuses a chunk it has already seen, so
//! no result is ever written twice.

use bytes::Bytes;
use std::collections::BTreeMap;

/// Reorders chunk outputs into chunk order.
#[derive(Debug, Default)]
pub struct Gather {
    /// The next chunk to release.
    next: u64,
    /// Outputs that arrived ahead of `next`.
    pending: BTreeMap<u64, Bytes>,
}

impl Gather {
    pub fn new() -> Gather {
        Gather::default()
    }

    /// Takes chunk `index`'s output and returns the outputs now ready, in order. A chunk already
    /// taken yields `None`: the caller must drop it.
    pub fn accept(&mut self, index: u64, output: Bytes) -> Option<Vec<Bytes>> {
        if index < self.next || self.pending.contains_key(&index) {
            return None;
        }
        if index != self.next {
            self.pending.insert(index, output);
            return Some(Vec::new());
        }
        let mut ready = vec![output];
        self.next += 1;
        while let Some(out) = self.pending.remove(&self.next) {
            ready.push(out);
            self.next += 1;
        }
        Some(ready)
    }

    /// Whether chunk `index` has already been accepted.
    pub fn has(&self, index: u64) -> bool {
        index < self.next || self.pending.contains_key(&index)
    }

    /// How many chunks have been released in order.
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

    #[test]
    fn releases_in_order_and_refuses_duplicates() {
        let mut g = Gather::new();
        assert_eq!(g.accept(2, b("c")), Some(vec![]));
        assert_eq!(g.accept(1, b("b")), Some(vec![]));
        assert_eq!(g.accept(2, b("c again")), None);
        assert_eq!(g.accept(0, b("a")), Some(vec![b("a"), b("b"), b("c")]));
        assert_eq!(g.accept(1, b("b again")), None);
        assert_eq!(g.released(), 3);
        assert!(g.has(2) && !g.has(3));
        assert_eq!(g.accept(3, b("d")), Some(vec![b("d")]));
    }
}
