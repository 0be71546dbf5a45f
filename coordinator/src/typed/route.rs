//! Between the calls and the engine: each call's items are numbered by the feeder in one
//! order for the whole pool; a route maps each range of those numbers back to its call and to
//! the items' places in that call.

use super::pending::Stretch;
use crate::pool::Run;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Where a call's answers go: a stretch of consecutive places at a time, so the pool's thread
/// does no work per item on the way back (the call reads them).
pub(super) type Route = mpsc::UnboundedSender<Stretch>;

/// Items of one call, sent together: the run's item `i` is the call's item `first_seq + i`.
#[derive(Debug)]
pub(super) struct Batch {
    pub items: Run,
    pub first_seq: u64,
    pub route: Route,
}

impl Batch {
    /// Answers every item of the batch with `why`.
    pub fn fail_all(self, why: &str) {
        let count = self.items.len() as u64;
        let _ = self.route.send(Stretch::failed(self.first_seq, count, why.into()));
    }
}

/// What the pool gave back for a unit of pool numbers.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outcome<'a> {
    /// One record per number, in order (checked by the engine to tile).
    Records(&'a Bytes),
    Failed(&'a str),
}

/// The routes of every batch fed and not fully answered, by the pool number of its first item.
#[derive(Debug, Clone, Default)]
pub(super) struct Routes(Arc<Mutex<BTreeMap<u64, Entry>>>);

#[derive(Debug)]
struct Entry {
    route: Route,
    first_seq: u64,
    /// Which items are answered; the entry goes once all are.
    answered: Vec<bool>,
    left: usize,
}

/// Walks the records of a unit forward, by pool number.
struct Cursor<'a> {
    records: &'a Bytes,
    number: u64,
    at: usize,
}

impl Cursor<'_> {
    /// The byte offset of `number`'s record (at or after the cursor's).
    fn seek(&mut self, number: u64) -> usize {
        while self.number < number && self.at + 4 <= self.records.len() {
            let len = u32::from_le_bytes(
                self.records[self.at..self.at + 4].try_into().unwrap_or([0xff; 4]),
            ) as usize;
            self.at = (self.at + 4 + len).min(self.records.len());
            self.number += 1;
        }
        self.at
    }
}

impl Routes {
    /// Keeps the route of `batch`, whose items are numbered from `first`; returns the items.
    pub fn add(&self, first: u64, batch: Batch) -> Run {
        let len = batch.items.len();
        let entry = Entry {
            route: batch.route,
            first_seq: batch.first_seq,
            answered: vec![false; len],
            left: len,
        };
        if len > 0 {
            if let Ok(mut map) = self.0.lock() {
                map.insert(first, entry);
            }
        }
        batch.items
    }

    /// Sends the answers of pool numbers `first..end` along their routes, one stretch per
    /// run of a call's places (a number answered already, or routed nowhere, is skipped: no
    /// call hears of an item twice).
    pub fn answer(&self, first: u64, end: u64, outcome: Outcome<'_>) {
        let Ok(mut map) = self.0.lock() else { return };
        let empty = Bytes::new();
        let records = match outcome {
            Outcome::Records(records) => records,
            Outcome::Failed(_) => &empty,
        };
        let mut cursor = Cursor { records, number: first, at: 0 };
        let mut finished = Vec::new();
        let mut number = first;
        while number < end {
            // The entry holding `number`, or else the next one that starts before `end`.
            let held =
                map.range(..=number).next_back().map(|(&s, e)| (s, s + e.answered.len() as u64));
            let start = match held {
                Some((start, stop)) if number < stop => start,
                _ => match map.range(number + 1..end).next() {
                    Some((&next, _)) => {
                        number = next;
                        continue;
                    }
                    None => break,
                },
            };
            let Some(entry) = map.get_mut(&start) else { break };
            let stop = end.min(start + entry.answered.len() as u64);
            while number < stop {
                // A run of places not answered yet.
                let from = number;
                while number < stop && !entry.answered[(number - start) as usize] {
                    entry.answered[(number - start) as usize] = true;
                    number += 1;
                }
                if number > from {
                    let count = number - from;
                    entry.left -= count as usize;
                    let seq = entry.first_seq + (from - start);
                    let stretch = match outcome {
                        Outcome::Records(_) => {
                            let (a, b) = (cursor.seek(from), cursor.seek(number));
                            Stretch::records(seq, count, records.slice(a..b))
                        }
                        Outcome::Failed(why) => Stretch::failed(seq, count, why.into()),
                    };
                    let _ = entry.route.send(stretch);
                }
                while number < stop && entry.answered[(number - start) as usize] {
                    number += 1;
                }
            }
            if entry.left == 0 {
                finished.push(start);
            }
        }
        for start in finished {
            map.remove(&start);
        }
    }

    /// Answers every item still unanswered with `why` (the pool ended).
    pub fn fail_all(&self, why: &str) {
        let Ok(mut map) = self.0.lock() else { return };
        for (_, entry) in std::mem::take(&mut *map) {
            let mut at = 0;
            while at < entry.answered.len() {
                let from = at;
                while at < entry.answered.len() && !entry.answered[at] {
                    at += 1;
                }
                if at > from {
                    let (seq, count) = (entry.first_seq + from as u64, (at - from) as u64);
                    let _ = entry.route.send(Stretch::failed(seq, count, why.into()));
                }
                while at < entry.answered.len() && entry.answered[at] {
                    at += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::pending::Answer;
    use super::*;
    use powerpool_shared::codec;

    fn batch(n: usize, first_seq: u64, route: &Route) -> Batch {
        let items = crate::pool::run_of(std::iter::repeat_n(&[][..], n));
        Batch { items, first_seq, route: route.clone() }
    }

    /// Records whose results are the pool numbers `first..end`, one byte each.
    fn records(first: u64, end: u64) -> Bytes {
        let mut out = Vec::new();
        for n in first..end {
            codec::push_record(&mut out, &[n as u8]);
        }
        Bytes::from(out)
    }

    fn answer(routes: &Routes, first: u64, end: u64) {
        routes.answer(first, end, Outcome::Records(&records(first, end)));
    }

    /// Every (place, answer byte or failure) that arrived, in arrival order.
    fn got(rx: &mut mpsc::UnboundedReceiver<Stretch>) -> Vec<(u64, Option<u8>)> {
        let mut all = Vec::new();
        while let Ok(mut stretch) = rx.try_recv() {
            while let Some((s, a)) = stretch.take() {
                all.push((s, if let Answer::Done(b) = a { Some(b[0]) } else { None }));
            }
        }
        all
    }

    #[test]
    fn answers_go_to_their_calls_by_place_across_batches() {
        let routes = Routes::default();
        let (a, mut a_rx) = mpsc::unbounded_channel();
        let (b, mut b_rx) = mpsc::unbounded_channel();
        // Call a's items 0..3 are pool numbers 0..3, call b's 0..2 are 3..5, a's 3..5 are 5..7.
        routes.add(0, batch(3, 0, &a));
        routes.add(3, batch(2, 0, &b));
        routes.add(5, batch(2, 3, &a));
        // One unit spans the end of a's first batch and b's batch.
        answer(&routes, 2, 5);
        answer(&routes, 0, 2);
        answer(&routes, 5, 7);
        let a_got = vec![(2, Some(2)), (0, Some(0)), (1, Some(1)), (3, Some(5)), (4, Some(6))];
        assert_eq!(got(&mut a_rx), a_got, "each place gets its own number's record");
        assert_eq!(got(&mut b_rx), vec![(0, Some(3)), (1, Some(4))]);
        assert!(routes.0.lock().expect("lock").is_empty(), "every entry answered and gone");
    }

    #[test]
    fn the_end_of_the_pool_answers_only_what_was_not_answered() {
        let routes = Routes::default();
        let (a, mut a_rx) = mpsc::unbounded_channel();
        routes.add(10, batch(4, 100, &a));
        answer(&routes, 11, 13);
        assert_eq!(got(&mut a_rx), vec![(101, Some(11)), (102, Some(12))]);
        routes.fail_all("stopped");
        assert_eq!(got(&mut a_rx), vec![(100, None), (103, None)]);
        answer(&routes, 10, 11);
        assert_eq!(got(&mut a_rx), vec![], "no answer twice");
    }

    #[test]
    fn a_unit_over_answered_places_and_gaps_delivers_only_the_rest_with_their_records() {
        let routes = Routes::default();
        let (a, mut a_rx) = mpsc::unbounded_channel();
        // Numbers 0..4 and 6..8 are routed; 4..6 belong to no call (it went away).
        routes.add(0, batch(4, 0, &a));
        routes.add(6, batch(2, 4, &a));
        answer(&routes, 1, 2);
        got(&mut a_rx);
        answer(&routes, 0, 8);
        let rest = vec![(0, Some(0)), (2, Some(2)), (3, Some(3)), (4, Some(6)), (5, Some(7))];
        assert_eq!(got(&mut a_rx), rest);
        routes.add(8, batch(3, 6, &a));
        routes.answer(8, 11, Outcome::Failed("poison"));
        assert_eq!(got(&mut a_rx), vec![(6, None), (7, None), (8, None)]);
        assert!(routes.0.lock().expect("lock").is_empty());
    }
}
