//! One call on the pool: its items going out (bounded by the pool's window), its answers
//! coming back, in order or as computed.

use super::pool::{Inner, Pool};
use super::route::Route;
pub(super) use super::route::{Answer, Batch, Routes};
use super::task::{Task, TaskError};
use bytes::Bytes;
use powerpool_shared::codec;
use powerpool_worker::typed::{round_trips, UNSUPPORTED};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Items gathered before they go to the feeder together.
const SEND_BATCH: usize = 256;
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

/// The state every kind of call shares.
pub(super) struct Call {
    inner: Arc<Inner>,
    task: &'static str,
    index: u32,
    route: Route,
    rx: mpsc::UnboundedReceiver<Vec<(u64, Answer)>>,
    /// Items pushed; items handed back; answers waiting to be handed back.
    sent: u64,
    taken: u64,
    pending: BTreeMap<u64, Answer>,
    /// Items pushed and not yet sent to the feeder, from `sent - buffer.len()`.
    buffer: Vec<Bytes>,
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
            pending: BTreeMap::new(),
            buffer: Vec::new(),
            checked: false,
            failed: 0,
            started: Instant::now(),
            hook: None,
        }
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
        let mut item = self.index.to_le_bytes().to_vec();
        let encoded = codec::encode_value(input, &mut item).map_err(|e| e.to_string());
        let checked = encoded.and_then(|()| match self.checked {
            true => Ok(()),
            false => round_trips::<T>(&item[4..])
                .map(|()| self.checked = true)
                .map_err(|why| format!("its input type {why}; {UNSUPPORTED}")),
        });
        let index = self.sent;
        self.sent += 1;
        if let Err(reason) = checked {
            // Counted as sent and answered at once, so the call's order holds.
            // Sent what came before it, so that the call's numbering holds.
            self.flush_before(index);
            self.pending.insert(index, Answer::Failed(reason));
            return;
        }
        self.buffer.push(Bytes::from(item));
        if self.buffer.len() >= SEND_BATCH {
            self.flush();
        }
    }

    fn flush_before(&mut self, index: u64) {
        self.sent = index;
        self.flush();
        self.sent = index + 1;
    }

    /// Sends what was pushed to the feeder.
    pub fn flush(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.buffer);
        let first_seq = self.sent - items.len() as u64;
        let batch = Batch { items, first_seq, route: self.route.clone() };
        if let Err(batch) = self.inner.send(batch) {
            batch.fail_all("the pool is closed");
        }
    }

    /// Keeps answers that arrived.
    pub fn store(&mut self, answers: Vec<(u64, Answer)>) {
        for (seq, answer) in answers {
            self.pending.entry(seq).or_insert(answer);
        }
    }

    /// The next answer in input order, if it arrived; or any answer that arrived.
    pub fn take(&mut self, ordered: bool) -> Option<(u64, Answer)> {
        let next = if ordered {
            self.pending.remove(&self.taken).map(|a| (self.taken, a))
        } else {
            self.pending.pop_first()
        };
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
