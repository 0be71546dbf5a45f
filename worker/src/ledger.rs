//! The line protocol's bookkeeping, apart from any process, so that its rules are unit-tested:
//! which lines are outstanding, how far ahead writing may go, when the oldest line's answer is
//! due, and and what an answer means (an end of file is the command's end: `lines.rs`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What an event of the command's stdout means.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The answer to the oldest outstanding line.
    Answer,
    /// A line with no input outstanding: the contract is broken.
    Surplus,
}

/// Lines written and not yet answered, oldest first.
#[derive(Debug)]
pub struct Ledger {
    placed: VecDeque<Instant>,
    last_answer: Instant,
    window: usize,
    window_bytes: usize,
}

impl Ledger {
    pub fn new(window: u32, window_bytes: u32, now: Instant) -> Ledger {
        Ledger {
            placed: VecDeque::new(),
            last_answer: now,
            window: window.max(1) as usize,
            window_bytes: window_bytes.max(1) as usize,
        }
    }

    /// Whether another line may be written ahead, with `unsent` bytes still to write.
    pub fn has_room(&self, unsent: usize) -> bool {
        self.placed.len() < self.window && unsent < self.window_bytes
    }

    /// A line was handed to the command at `now`.
    pub fn place(&mut self, now: Instant) {
        self.placed.push_back(now);
    }

    /// A line came out of the command at `now`.
    pub fn line(&mut self, now: Instant) -> Verdict {
        if self.placed.pop_front().is_none() {
            return Verdict::Surplus;
        }
        self.last_answer = now;
        Verdict::Answer
    }

    /// When the oldest outstanding line's answer is overdue: `timeout` after it was written or
    /// the previous answer came, whichever is later. `None` with nothing outstanding.
    pub fn deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        let oldest = *self.placed.front()?;
        timeout.map(|t| oldest.max(self.last_answer) + t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_lines_in_order_and_a_line_too_many_is_a_surplus() {
        let t = Instant::now();
        let mut l = Ledger::new(2, 1000, t);
        assert_eq!(l.line(t), Verdict::Surplus, "nothing outstanding yet");
        l.place(t);
        l.place(t);
        assert!(!l.has_room(0), "the window is two lines");
        assert_eq!(l.line(t), Verdict::Answer);
        assert!(l.has_room(0));
        assert_eq!(l.line(t), Verdict::Answer);
        assert_eq!(l.line(t), Verdict::Surplus, "two answers for two lines, then one more");
        assert!(!Ledger::new(9, 10, t).has_room(10), "the window in bytes");
    }

    #[test]
    fn the_oldest_line_is_due_a_timeout_after_it_was_written_or_last_answered() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = Ledger::new(8, 1000, t);
        assert_eq!(l.deadline(Some(s)), None, "nothing outstanding");
        l.place(t);
        l.place(t + s);
        assert_eq!(l.deadline(Some(s)), Some(t + s));
        assert_eq!(l.deadline(None), None, "no timeout");
        // The first is answered late: the second's clock starts then, not when written.
        l.line(t + 3 * s);
        assert_eq!(l.deadline(Some(s)), Some(t + 4 * s));
    }
}
