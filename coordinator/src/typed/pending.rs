//! A call's answers waiting to be handed back, kept as the stretches they were delivered in
//! (a unit's records, or one failure for a run of places): nothing is done per item until it
//! is taken, and taking one reads its record where it lies.

use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// One answer as it is taken: the encoded result, read in place, or why there is none.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer<'a> {
    Done(&'a [u8]),
    Failed(String),
}

/// The answers of places `next..end`, in order.
#[derive(Debug)]
pub(super) struct Stretch {
    next: u64,
    end: u64,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// One record per place (a 4-byte little-endian length, then the bytes), from byte `at`.
    Records {
        records: Bytes,
        at: usize,
    },
    Failed(String),
}

impl Stretch {
    /// Places `seq..seq + count`, whose records `records` holds in order.
    pub fn records(seq: u64, count: u64, records: Bytes) -> Stretch {
        Stretch { next: seq, end: seq + count, body: Body::Records { records, at: 0 } }
    }

    /// Places `seq..seq + count`, all failed for `why`.
    pub fn failed(seq: u64, count: u64, why: String) -> Stretch {
        Stretch { next: seq, end: seq + count, body: Body::Failed(why) }
    }

    fn is_done(&self) -> bool {
        self.next >= self.end
    }

    /// The next place and its answer. The engine checked that the unit's records tile; a
    /// record that runs short anyway fails its place and every one after it, named: an
    /// answer never shifts onto another place.
    pub fn take(&mut self) -> Option<(u64, Answer<'_>)> {
        if self.is_done() {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        let answer = match &mut self.body {
            Body::Failed(why) => Answer::Failed(why.clone()),
            Body::Records { records, at } => {
                let start = *at;
                let len = records
                    .get(start..start + 4)
                    .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
                    .filter(|&len| start + 4 + len <= records.len());
                match len {
                    Some(len) => {
                        *at = start + 4 + len;
                        Answer::Done(&records[start + 4..start + 4 + len])
                    }
                    None => {
                        *at = records.len();
                        Answer::Failed("its result records are malformed".to_owned())
                    }
                }
            }
        };
        Some((seq, answer))
    }
}

/// The stretches of one call not yet handed back. Ordered, the stretch holding the next
/// place is taken from until it ends, then the one starting where it ended; unordered, the
/// stretches are taken from in the order they arrived. Every step is O(1) per item, and a
/// map operation per stretch.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Ordered: the next place to hand back, the stretch it is in (once it arrived), and
    /// the other stretches by their first place.
    base: u64,
    current: Option<Stretch>,
    waiting: BTreeMap<u64, Stretch>,
    /// Unordered: the stretches in the order they arrived.
    unordered: bool,
    arrived: VecDeque<Stretch>,
}

impl Pending {
    pub fn set_unordered(&mut self) {
        self.unordered = true;
    }

    pub fn insert(&mut self, stretch: Stretch) {
        if stretch.is_done() {
            return;
        }
        if self.unordered {
            self.arrived.push_back(stretch);
        } else if stretch.next >= self.base {
            self.waiting.insert(stretch.next, stretch);
        }
    }

    /// The answer of the oldest place not handed back, if it arrived.
    pub fn take_first(&mut self) -> Option<(u64, Answer<'_>)> {
        if self.current.as_ref().is_none_or(Stretch::is_done) {
            self.current = Some(self.waiting.remove(&self.base)?);
        }
        let current = self.current.as_mut()?;
        self.base += 1;
        current.take()
    }

    /// An answer that arrived and was not handed back, the oldest to arrive first.
    pub fn take_any(&mut self) -> Option<(u64, Answer<'_>)> {
        while self.arrived.front().is_some_and(Stretch::is_done) {
            self.arrived.pop_front();
        }
        self.arrived.front_mut()?.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerpool_shared::codec::push_record;

    /// A stretch of places `seq..` whose results are the bytes `values`.
    fn done(seq: u64, values: &[u8]) -> Stretch {
        let mut records = Vec::new();
        for v in values {
            push_record(&mut records, &[*v]);
        }
        Stretch::records(seq, values.len() as u64, Bytes::from(records))
    }

    fn seq(x: Option<(u64, Answer<'_>)>) -> Option<u64> {
        x.map(|(s, _)| s)
    }

    #[test]
    fn answers_come_out_in_order_or_as_they_arrived() {
        let mut p = Pending::default();
        p.insert(done(3, &[3, 4]));
        p.insert(done(0, &[0]));
        assert_eq!(p.take_first(), Some((0, Answer::Done(&[0]))));
        assert_eq!(seq(p.take_first()), None, "1 and 2 have not arrived");
        p.insert(Stretch::failed(1, 2, "poison".into()));
        assert_eq!(p.take_first(), Some((1, Answer::Failed("poison".into()))));
        assert_eq!(seq(p.take_first()), Some(2));
        assert_eq!(p.take_first(), Some((3, Answer::Done(&[3]))));
        assert_eq!(p.take_first(), Some((4, Answer::Done(&[4]))));
        assert_eq!(seq(p.take_first()), None);
        assert!(p.waiting.is_empty(), "an ordered call keeps nothing taken");
        let mut p = Pending::default();
        p.set_unordered();
        p.insert(done(5, &[5]));
        p.insert(done(2, &[2, 3]));
        let order: Vec<_> = std::iter::from_fn(|| seq(p.take_any())).collect();
        assert_eq!(order, vec![5, 2, 3], "as they arrived, each once");
        assert!(p.arrived.is_empty());
    }

    #[test]
    fn a_record_that_runs_short_fails_its_place_and_the_rest_never_shifts_them() {
        let mut records = Vec::new();
        push_record(&mut records, b"a");
        push_record(&mut records, b"bc");
        records.truncate(records.len() - 1);
        let mut s = Stretch::records(10, 3, Bytes::from(records));
        assert_eq!(s.take(), Some((10, Answer::Done(b"a"))));
        assert!(matches!(s.take(), Some((11, Answer::Failed(_)))));
        assert!(matches!(s.take(), Some((12, Answer::Failed(_)))));
        assert_eq!(s.take(), None);
    }
}
