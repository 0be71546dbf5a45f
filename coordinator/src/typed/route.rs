//! Between the calls and the engine: each call's items are numbered by the feeder in one
//! order for the whole pool; a route maps each range of those numbers back to its call and to
//! the items' places in that call.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// One item's answer, as it travels back to its call.
#[derive(Debug)]
pub(super) enum Answer {
    /// The encoded result.
    Done(Bytes),
    /// Why the item has no result.
    Failed(String),
}

/// Where a call's answers go: `(place in the call, answer)`, a batch at a time.
pub(super) type Route = mpsc::UnboundedSender<Vec<(u64, Answer)>>;

/// Items of one call, sent together: `items[i]` is the call's item `first_seq + i`.
#[derive(Debug)]
pub(super) struct Batch {
    pub items: Vec<Bytes>,
    pub first_seq: u64,
    pub route: Route,
}

impl Batch {
    /// Answers every item of the batch with `why`.
    pub fn fail_all(self, why: &str) {
        let answers = (0..self.items.len() as u64)
            .map(|i| (self.first_seq + i, Answer::Failed(why.to_owned())))
            .collect();
        let _ = self.route.send(answers);
    }
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

impl Routes {
    /// Keeps the route of `batch`, whose items are numbered from `first`; returns the items.
    pub fn add(&self, first: u64, batch: Batch) -> Vec<Bytes> {
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

    /// Sends the answers of items `first..` along their routes (an item answered already, or
    /// routed nowhere, is skipped: no call hears of an item twice).
    pub fn answer(&self, first: u64, answers: Vec<Answer>) {
        let Ok(mut map) = self.0.lock() else { return };
        let mut out: Vec<(u64, Vec<(u64, Answer)>)> = Vec::new();
        for (number, answer) in (first..).zip(answers) {
            let Some((&start, entry)) = map.range_mut(..=number).next_back() else { continue };
            let at = (number - start) as usize;
            if at >= entry.answered.len() || entry.answered[at] {
                continue;
            }
            entry.answered[at] = true;
            entry.left -= 1;
            let seq = entry.first_seq + at as u64;
            match out.last_mut() {
                Some((s, v)) if *s == start => v.push((seq, answer)),
                _ => out.push((start, vec![(seq, answer)])),
            }
        }
        for (start, answers) in out {
            if let Some(entry) = map.get(&start) {
                let _ = entry.route.send(answers);
                if entry.left == 0 {
                    map.remove(&start);
                }
            }
        }
    }

    /// Answers every item still unanswered with `why` (the pool ended).
    pub fn fail_all(&self, why: &str) {
        let Ok(mut map) = self.0.lock() else { return };
        for (_, entry) in std::mem::take(&mut *map) {
            let answers = entry
                .answered
                .iter()
                .enumerate()
                .filter(|(_, done)| !**done)
                .map(|(i, _)| (entry.first_seq + i as u64, Answer::Failed(why.to_owned())))
                .collect();
            let _ = entry.route.send(answers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, first_seq: u64, route: &Route) -> Batch {
        Batch { items: vec![Bytes::new(); n], first_seq, route: route.clone() }
    }

    fn done(n: usize) -> Vec<Answer> {
        (0..n).map(|_| Answer::Done(Bytes::new())).collect()
    }

    fn seqs(rx: &mut mpsc::UnboundedReceiver<Vec<(u64, Answer)>>) -> Vec<u64> {
        let mut all = Vec::new();
        while let Ok(v) = rx.try_recv() {
            all.extend(v.into_iter().map(|(s, _)| s));
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
        routes.answer(2, done(3));
        routes.answer(0, done(2));
        routes.answer(5, done(2));
        assert_eq!(seqs(&mut a_rx), vec![2, 0, 1, 3, 4]);
        assert_eq!(seqs(&mut b_rx), vec![0, 1]);
        assert!(routes.0.lock().expect("lock").is_empty(), "every entry answered and gone");
    }

    #[test]
    fn the_end_of_the_pool_answers_only_what_was_not_answered() {
        let routes = Routes::default();
        let (a, mut a_rx) = mpsc::unbounded_channel();
        routes.add(10, batch(4, 100, &a));
        routes.answer(11, done(2));
        assert_eq!(seqs(&mut a_rx), vec![101, 102]);
        routes.fail_all("stopped");
        assert_eq!(seqs(&mut a_rx), vec![100, 103]);
        routes.answer(10, done(1));
        assert_eq!(seqs(&mut a_rx), Vec::<u64>::new(), "no answer twice");
    }
}
