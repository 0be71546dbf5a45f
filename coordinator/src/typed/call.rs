//! One call on the pool: its items going out (bounded by the pool's window), its answers
//! coming back, in order or as computed.

use super::pending::{Answer, Pending, Stretch};
use super::pool::{Inner, Pool};
use super::route::Route;
pub(super) use super::route::{Batch, Routes};
use super::task::{Task, TaskError};
use crate::pool::RunBuilder;
use powerpool_shared::codec;
use powerpool_worker::typed::{round_trips, UNSUPPORTED};
use serde::{de::DeserializeOwned, Serialize};
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

/// The state every kind of call shares.
pub(super) struct Call {
    inner: Arc<Inner>,
    task: &'static str,
    index: u32,
    route: Route,
    rx: mpsc::UnboundedReceiver<Stretch>,
    /// Items pushed; items handed back; answers waiting to be handed back.
    sent: u64,
    taken: u64,
    pending: Pending,
    /// Items pushed and not yet sent to the feeder, from `sent - run.len()`: encoded one
    /// after another into one buffer (one allocation for a whole batch), framed as the
    /// workers read them.
    run: RunBuilder,
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
            run: RunBuilder::default(),
            checked: false,
            failed: 0,
            started: Instant::now(),
            hook: None,
        }
    }

    /// Answers will be taken as they arrive ([`Call::take`] with `ordered` false).
    pub fn set_unordered(&mut self) {
        self.pending.set_unordered();
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
        if !self.run.has_capacity() {
            self.run = RunBuilder::with_capacity(ARENA_CAPACITY);
        }
        let task = self.index.to_le_bytes();
        let encoded = self.run.push_with(|buf| {
            buf.extend_from_slice(&task);
            codec::encode_value(input, buf).map_err(|e| e.to_string())
        });
        let checked = match encoded {
            Ok(_) if self.checked => Ok(()),
            Ok(item) => match round_trips::<T>(&item[task.len()..]) {
                Ok(()) => {
                    self.checked = true;
                    Ok(())
                }
                // The worker would refuse it the same way: it cannot be one frame.
                Err(_) if item.len() - task.len() >= codec::MAX_FRAME => {
                    self.run.pop();
                    Err(format!("its input passes the {} MiB limit", codec::MAX_FRAME >> 20))
                }
                Err(why) => {
                    self.run.pop();
                    Err(format!("its input type {why}; {UNSUPPORTED}"))
                }
            },
            // Nothing of it was kept.
            Err(reason) => Err(reason),
        };
        let index = self.sent;
        self.sent += 1;
        if let Err(reason) = checked {
            // Counted as sent and answered at once: what came before it is sent first, so
            // that the call's numbering holds.
            self.flush_before(index);
            self.pending.insert(Stretch::failed(index, 1, reason));
            return;
        }
        if self.run.len() >= SEND_BATCH || self.run.bytes() >= ARENA_BYTES {
            self.flush();
        }
    }

    fn flush_before(&mut self, index: u64) {
        self.sent = index;
        self.flush();
        self.sent = index + 1;
    }

    /// Sends what was pushed to the feeder, as one run.
    pub fn flush(&mut self) {
        if self.run.is_empty() {
            return;
        }
        let items = self.run.finish_in(self.inner.arena.as_ref());
        let first_seq = self.sent - items.len() as u64;
        let batch = Batch { items, first_seq, route: self.route.clone() };
        if let Err(batch) = self.inner.send(batch) {
            batch.fail_all(&self.inner.closed_reason());
        }
    }

    /// Keeps answers that arrived.
    pub fn store(&mut self, stretch: Stretch) {
        self.pending.insert(stretch);
    }

    /// The next result in input order, if its answer arrived; or any result whose answer
    /// arrived. A result is decoded where its record lies.
    pub fn take<R: DeserializeOwned>(
        &mut self,
        ordered: bool,
    ) -> Option<(u64, Result<R, TaskError>)> {
        let next = if ordered { self.pending.take_first() } else { self.pending.take_any() };
        let (seq, answer) = next?;
        let result = match answer {
            Answer::Done(bytes) => codec::decode::<R>(bytes)
                .map_err(|e| format!("cannot decode its result ({e}); {UNSUPPORTED}")),
            Answer::Failed(reason) => Err(reason),
        };
        let result = result.map_err(|reason| TaskError { index: seq, task: self.task, reason });
        self.taken += 1;
        self.failed += u64::from(result.is_err());
        self.report(false);
        Some((seq, result))
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
