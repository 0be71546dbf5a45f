//! Which chunk runs next: chunks lost with a worker first (lowest first), then new chunks in
//! order, never more than a window past the last chunk written, which is what bounds memory.

use std::collections::{HashMap, VecDeque};

/// The chunks still to dispatch.
#[derive(Debug)]
pub struct Queue {
    count: u64,
    /// The next chunk never dispatched.
    next_new: u64,
    /// Chunks to run again, lowest first.
    retry: VecDeque<u64>,
    /// How many times each chunk was lost with its worker.
    attempts: HashMap<u64, u32>,
    /// How far past the last written chunk dispatch may run.
    window: u64,
}

impl Queue {
    pub fn new(count: u64, window: u64) -> Queue {
        Queue { count, next_new: 0, retry: VecDeque::new(), attempts: HashMap::new(), window }
    }

    /// The next chunk to dispatch, given how many chunks have been written; `None` when nothing
    /// may be dispatched now.
    pub fn next(&mut self, written: u64) -> Option<u64> {
        if let Some(chunk) = self.retry.pop_front() {
            return Some(chunk);
        }
        let limit = written.saturating_add(self.window).min(self.count);
        (self.next_new < limit).then(|| {
            self.next_new += 1;
            self.next_new - 1
        })
    }

    /// Returns a chunk that could not be sent, to go out next.
    pub fn put_back(&mut self, chunk: u64) {
        self.retry.push_front(chunk);
    }

    /// Queues chunks lost with their worker to run again, lowest first; returns each chunk's
    /// count of losses so far, in the order given.
    pub fn requeue_lost(&mut self, lost: &[u64]) -> Vec<(u64, u32)> {
        let mut lost = lost.to_vec();
        lost.sort_unstable();
        for &chunk in lost.iter().rev() {
            self.retry.push_front(chunk);
        }
        lost.iter()
            .map(|&chunk| {
                let n = self.attempts.entry(chunk).or_insert(0);
                *n += 1;
                (chunk, *n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_chunks_stay_within_the_window() {
        let mut q = Queue::new(10, 3);
        assert_eq!((q.next(0), q.next(0), q.next(0), q.next(0)), (Some(0), Some(1), Some(2), None));
        assert_eq!(q.next(2), Some(3));
        assert_eq!(q.next(9), Some(4));
    }

    #[test]
    fn lost_chunks_go_first_lowest_first_and_are_counted() {
        let mut q = Queue::new(10, 10);
        for _ in 0..5 {
            q.next(0);
        }
        assert_eq!(q.requeue_lost(&[4, 1]), vec![(1, 1), (4, 1)]);
        assert_eq!((q.next(0), q.next(0), q.next(0)), (Some(1), Some(4), Some(5)));
        assert_eq!(q.requeue_lost(&[1]), vec![(1, 2)]);
        q.put_back(7);
        assert_eq!((q.next(0), q.next(0)), (Some(7), Some(1)));
    }

    #[test]
    fn never_past_the_last_chunk() {
        let mut q = Queue::new(2, 100);
        assert_eq!((q.next(0), q.next(0), q.next(0)), (Some(0), Some(1), None));
    }
}
