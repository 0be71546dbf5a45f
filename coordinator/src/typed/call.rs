//! One call on the pool: its items going out (bounded by the pool's window), its answers
//! coming back, in order or as computed.

use super::pool::{Inner, Pool};
use super::route::Route;
pub(super) use super::route::{Answer, Batch, Delivery, Routes};
use super::task::{Task, TaskError};
use bytes::Bytes;
use powerpool_shared::codec;
use powerpool_worker::typed::{round_trips, UNSUPPORTED};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Items gathered before they go to the feeder together.
const SEND_BATCH: usize = 1024;
/// Bytes of encoded items gathered before they go to the feeder, whatever their count, in an
/// arena of [`ARENA_CAPACITY`]: below the allocator's mmap threshold (128 KiB), so that arenas
/// are recycled from the heap with their pages mapped, instead of mapped, faulted in and
/// unmapped each time.
const ARENA_BYTES: usize = 96 << 10;
const ARENA_CAPACITY: usize = 120 << 10;
/// The least time between two progress reports of a call.
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// How far a call is, for a progress hook (feed it to indicatif or a log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Items handed back (results and failures).
    pub done: u64,
    /// Of which failures.
    pub failed: u64,
    /// Items sent to the workers so far.
    pub sent: u64,
    pub elapsed: Duration,
}

impl Progress {
    /// Items handed back per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        }
    }
}

type Hook = Box<dyn FnMut(&Progress) + Send>;

/// Answers waiting to be handed back, by place: a ring from the oldest place not handed
/// back, and, for unordered calls only, the order they arrived in (an ordered call keeping
/// it would grow by a number per item for its whole life). Every step is O(1).
#[derive(Debug, Default)]
struct Pending {
    base: u64,
    slots: VecDeque<Slot>,
    unordered: bool,
    arrived: VecDeque<u64>,
}

#[derive(Debug)]
enum Slot {
    Waiting,
    Ready(Answer),
    Taken,
}

impl Pending {
    fn insert(&mut self, seq: u64, answer: Answer) {
        let Some(at) = seq.checked_sub(self.base).and_then(|a| usize::try_from(a).ok()) else {
            return;
        };
        while self.slots.len() <= at {
            self.slots.push_back(Slot::Waiting);
        }
        if matches!(self.slots[at], Slot::Waiting) {
            self.slots[at] = Slot::Ready(answer);
            if self.unordered {
                self.arrived.push_back(seq);
            }
        }
    }

    /// The answer of the oldest place not handed back, if it arrived.
    fn take_first(&mut self) -> Option<(u64, Answer)> {
        if !matches!(self.slots.front(), Some(Slot::Ready(_))) {
            return None;
        }
        self.take_at(self.base)
    }

    /// The answer that arrived first and was not handed back.
    fn take_any(&mut self) -> Option<(u64, Answer)> {
        while let Some(seq) = self.arrived.pop_front() {
            if let Some(taken) = self.take_at(seq) {
                return Some(taken);
            }
        }
        None
    }

    fn take_at(&mut self, seq: u64) -> Option<(u64, Answer)> {
        let at = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let slot = self.slots.get_mut(at)?;
        if !matches!(slot, Slot::Ready(_)) {
            return None;
        }
        let Slot::Ready(answer) = std::mem::replace(slot, Slot::Taken) else { return None };
        while matches!(self.slots.front(), Some(Slot::Taken)) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some((seq, answer))
    }
}

/// The state every kind of call shares.
pub(super) struct Call {
    inner: Arc<Inner>,
    task: &'static str,
    index: u32,
    route: Route,
    rx: mpsc::UnboundedReceiver<Delivery>,
    /// Items pushed; items handed back; answers waiting to be handed back.
    sent: u64,
    taken: u64,
    pending: Pending,
    /// Items pushed and not yet sent to the feeder, from `sent - ends.len()`: encoded one
    /// after another into `arena` (one allocation for a whole batch), item `i` ending at
    /// `ends[i]`.
    arena: Vec<u8>,
    ends: Vec<usize>,
    checked: bool,
    failed: u64,
    started: Instant,
    hook: Option<(Hook, Instant)>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("task", &self.task)
            .field("sent", &self.sent)
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

impl Call {
    pub fn new<T, R>(pool: &Pool, task: &Task<T, R>) -> Call {
        let (route, rx) = mpsc::unbounded_channel();
        Call {
            inner: Arc::clone(&pool.inner),
            task: task.name(),
            index: task.index(),
            route,
            rx,
            sent: 0,
            taken: 0,
            pending: Pending::default(),
            arena: Vec::new(),
            ends: Vec::new(),
            checked: false,
            failed: 0,
            started: Instant::now(),
            hook: None,
        }
    }

    /// Answers will be taken as they arrive ([`Call::take`] with `ordered` false).
    pub fn set_unordered(&mut self) {
        self.pending.unordered = true;
    }

    pub fn set_hook(&mut self, hook: Hook) {
        self.hook = Some((hook, Instant::now()));
    }

    /// Whether the call may take another item now (its window is not full).
    pub fn has_room(&self) -> bool {
        self.sent - self.taken < self.inner.window as u64
    }

    /// Whether every item pushed was handed back.
    pub fn is_drained(&self) -> bool {
        self.taken == self.sent
    }

    /// Encodes one input; the first is checked to come back unchanged through the codec, so
    /// a type it cannot carry fails here, naming the task, never as a wrong value.
    pub fn push<T: Serialize + DeserializeOwned>(&mut self, input: &T) {
        if self.arena.capacity() == 0 {
            self.arena = Vec::with_capacity(ARENA_CAPACITY);
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(&self.index.to_le_bytes());
        let encoded = codec::encode_value(input, &mut self.arena).map_err(|e| e.to_string());
        let checked = encoded.and_then(|()| match self.checked {
            true => Ok(()),
            false => round_trips::<T>(&self.arena[start + 4..])
                .map(|()| self.checked = true)
                .map_err(|why| format!("its input type {why}; {UNSUPPORTED}")),
        });
        let index = self.sent;
        self.sent += 1;
        if let Err(reason) = checked {
            self.arena.truncate(start);
            // Counted as sent and answered at once: what came before it is sent first, so
            // that the call's numbering holds.
            self.flush_before(index);
            self.pending.insert(index, Answer::Failed(reason));
            return;
        }
        self.ends.push(self.arena.len());
        if self.ends.len() >= SEND_BATCH || self.arena.len() >= ARENA_BYTES {
            self.flush();
        }
    }

    fn flush_before(&mut self, index: u64) {
        self.sent = index;
        self.flush();
        self.sent = index + 1;
    }

    /// Sends what was pushed to the feeder: each item a slice of one shared arena.
    pub fn flush(&mut self) {
        if self.ends.is_empty() {
            return;
        }
        let arena = Bytes::from(std::mem::take(&mut self.arena));
        let mut start = 0;
        let items = self
            .ends
            .drain(..)
            .map(|end| {
                let item = arena.slice(start..end);
                start = end;
                item
            })
            .collect::<Vec<_>>();
        let first_seq = self.sent - items.len() as u64;
        let batch = Batch { items, first_seq, route: self.route.clone() };
        if let Err(batch) = self.inner.send(batch) {
            batch.fail_all("the pool is closed");
        }
    }

    /// Keeps answers that arrived.
    pub fn store(&mut self, delivery: Delivery) {
        delivery.each(|seq, answer| self.pending.insert(seq, answer));
    }

    /// The next answer in input order, if it arrived; or any answer that arrived.
    pub fn take(&mut self, ordered: bool) -> Option<(u64, Answer)> {
        let next = if ordered { self.pending.take_first() } else { self.pending.take_any() };
        if let Some((_, answer)) = &next {
            self.taken += 1;
            self.failed += u64::from(matches!(answer, Answer::Failed(_)));
            self.report(false);
        }
        next
    }

    /// Waits (blocking) for answers; `false` if no more can come.
    pub fn wait(&mut self) -> bool {
        match self.rx.blocking_recv() {
            Some(answers) => {
                self.store(answers);
                true
            }
            None => false,
        }
    }

    /// Waits (async) for answers.
    pub fn poll_wait(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        self.rx.poll_recv(cx).map(|answers| match answers {
            Some(answers) => {
                self.store(answers);
                true
            }
            None => false,
        })
    }

    /// Turns an answer into a result.
    pub fn decode<R: DeserializeOwned>(&self, seq: u64, answer: Answer) -> Result<R, TaskError> {
        let reason = match answer {
            Answer::Done(bytes) => match codec::decode::<R>(&bytes) {
                Ok(value) => return Ok(value),
                Err(e) => format!("cannot decode its result ({e}); {UNSUPPORTED}"),
            },
            Answer::Failed(reason) => reason,
        };
        Err(TaskError { index: seq, task: self.task, reason })
    }

    /// Calls the progress hook, at most every 100 ms (and always at the end).
    pub fn report(&mut self, end: bool) {
        if self.hook.is_none() {
            return;
        }
        let progress = Progress {
            done: self.taken,
            failed: self.failed,
            sent: self.sent,
            elapsed: self.started.elapsed(),
        };
        if let Some((hook, last)) = &mut self.hook {
            if end || last.elapsed() >= REPORT_EVERY {
                hook(&progress);
                *last = Instant::now();
            }
        }
    }

    /// The error of a blocking call made inside an async runtime, where it would block a
    /// runtime thread (or deadlock a single-threaded one).
    pub fn inside_runtime(&self) -> Option<TaskError> {
        tokio::runtime::Handle::try_current().is_ok().then(|| TaskError {
            index: 0,
            task: self.task,
            reason: "the blocking API cannot wait inside an async runtime: use map_stream, or \
                     submit(..).await"
                .to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(n: u8) -> Answer {
        Answer::Done(Bytes::from(vec![n]))
    }

    fn seq(x: Option<(u64, Answer)>) -> Option<u64> {
        x.map(|(s, _)| s)
    }

    #[test]
    fn pending_answers_come_out_in_order_or_as_they_arrived() {
        let mut p = Pending::default();
        p.insert(2, done(2));
        p.insert(0, done(0));
        assert_eq!(seq(p.take_first()), Some(0));
        assert_eq!(seq(p.take_first()), None, "1 has not arrived");
        p.insert(1, done(1));
        assert_eq!(seq(p.take_first()), Some(1));
        assert_eq!(seq(p.take_first()), Some(2));
        assert_eq!(p.base, 3);
        assert!(p.arrived.is_empty() && p.slots.is_empty(), "an ordered call keeps nothing taken");
        let mut p = Pending { unordered: true, ..Pending::default() };
        p.insert(5, done(5));
        p.insert(3, done(3));
        p.insert(3, done(9));
        assert_eq!(seq(p.take_any()), Some(5), "as they arrived");
        assert_eq!(seq(p.take_any()), Some(3));
        assert_eq!(seq(p.take_any()), None, "an answer comes out once");
    }
}
