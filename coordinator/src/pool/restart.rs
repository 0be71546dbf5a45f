//! When to replace a dead worker, and when to stop trying: the restart policy as plain data.
//!
//! - A worker that dies on a unit is replaced at once; while deaths follow each other with no
//!   unit answered in between (a poison item being cornered), after 1 ms doubling to 100 ms.
//! - A worker that never started (exited or refused before its handshake, or died idle before
//!   answering anything) is a *failed start*: the next waits 25 ms, doubling to 1 s, and
//!   [`MAX_START_FAILURES`] in a row end the run. Only an answered unit resets the count (a
//!   `Ready` does not: a worker that always dies right after it is still broken).
//! - Workers that die on their first unit, every one, before any unit of the run was answered
//!   are broken rather than unlucky: even a poison first input is cornered in fewer deaths (the
//!   whole chunk's tries, at most 24 halvings, the input's own tries), so more than
//!   `2 × (retries + 1) + 25` such deaths end the run.

use std::time::Duration;

/// Workers in a row that may fail to start before the run gives up.
pub const MAX_START_FAILURES: u32 = 5;

/// Why the policy gives up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiveUp {
    /// `attempts` failed starts in a row.
    WontStart { attempts: u32 },
    /// `deaths` deaths before any unit of the run was answered.
    KeepDying { deaths: u32 },
}

/// The counts the policy decides from.
#[derive(Debug, Clone, Default)]
pub struct Restarts {
    retries: u32,
    start_failures: u32,
    deaths_in_a_row: u32,
    deaths_before_any_answer: u32,
    answered: u64,
}

impl Restarts {
    pub fn new(retries: u32) -> Restarts {
        Restarts { retries, ..Restarts::default() }
    }

    /// A unit was answered (done or failed by a caught panic): workers do start and work.
    pub fn answered(&mut self) {
        self.answered += 1;
        self.start_failures = 0;
        self.deaths_in_a_row = 0;
    }

    /// A worker failed to start.
    pub fn start_failed(&mut self) -> Result<(), GiveUp> {
        self.start_failures += 1;
        if self.start_failures >= MAX_START_FAILURES {
            return Err(GiveUp::WontStart { attempts: self.start_failures });
        }
        Ok(())
    }

    /// A started worker died while working on a unit.
    pub fn died(&mut self) -> Result<(), GiveUp> {
        self.deaths_in_a_row += 1;
        if self.answered == 0 {
            self.deaths_before_any_answer += 1;
            if self.deaths_before_any_answer > 2 * (self.retries + 1) + 25 {
                return Err(GiveUp::KeepDying { deaths: self.deaths_before_any_answer });
            }
        }
        Ok(())
    }

    /// How long to wait before starting the next replacement.
    pub fn backoff(&self) -> Duration {
        match (self.start_failures, self.deaths_in_a_row) {
            (0, 0 | 1) => Duration::ZERO,
            (0, n) => Duration::from_millis(1 << (n - 2).min(7)).min(Duration::from_millis(100)),
            (n, _) => Duration::from_millis(25 << (n - 1).min(6)).min(Duration::from_secs(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_death_is_replaced_at_once_then_deaths_in_a_row_back_off_to_100ms() {
        let mut r = Restarts::new(2);
        r.answered();
        let mut waits = Vec::new();
        for _ in 0..10 {
            r.died().expect("never gives up after an answer");
            waits.push(r.backoff());
        }
        assert_eq!(
            waits,
            [0, 1, 2, 4, 8, 16, 32, 64, 100, 100].map(ms).to_vec(),
            "at once, then 1 ms doubling to 100 ms"
        );
        r.answered();
        r.died().expect("fine");
        assert_eq!(r.backoff(), Duration::ZERO, "an answer resets the backoff");
    }

    #[test]
    fn failed_starts_back_off_from_25ms_and_five_in_a_row_give_up() {
        let mut r = Restarts::new(2);
        let mut waits = Vec::new();
        for _ in 0..4 {
            r.start_failed().expect("fewer than five");
            waits.push(r.backoff());
        }
        assert_eq!(waits, [25, 50, 100, 200].map(ms).to_vec());
        assert_eq!(r.start_failed(), Err(GiveUp::WontStart { attempts: 5 }));
    }

    #[test]
    fn only_an_answer_resets_failed_starts() {
        let mut r = Restarts::new(2);
        for _ in 0..4 {
            r.start_failed().expect("fine");
        }
        r.answered();
        for _ in 0..4 {
            r.start_failed().expect("the count started again");
        }
        assert!(r.start_failed().is_err());
    }

    #[test]
    fn deaths_before_any_answer_are_bounded_by_the_retries() {
        let mut r = Restarts::new(2);
        // 2 × (2 + 1) + 25 = 31 deaths are allowed, the 32nd gives up.
        for _ in 0..31 {
            r.died().expect("within the budget");
        }
        assert_eq!(r.died(), Err(GiveUp::KeepDying { deaths: 32 }));
        let mut r = Restarts::new(0);
        for _ in 0..27 {
            r.died().expect("within the budget");
        }
        assert!(r.died().is_err());
    }

    #[test]
    fn after_one_answer_deaths_are_never_fatal() {
        let mut r = Restarts::new(0);
        r.answered();
        for _ in 0..10_000 {
            r.died().expect("a poison item is cornered, however long it takes");
        }
    }
}
