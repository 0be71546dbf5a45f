//! The supervisor's decisions as a state machine: [`Engine::handle`] takes an [`Event`] (what
//! a worker, the consumer, the input, a signal or the clock did) and queues [`Action`]s (start
//! a worker, send it work, end it, release an outcome, log an attempt). It does no I/O and
//! reads no clock: time comes with each call. So every rule (dispatch, windows, blame,
//! retries, restarts, timeouts, recycling, stopping) is unit-tested without a process or a
//! sleep (`engine_tests.rs`); `supervisor.rs` only turns I/O into events and actions into I/O.
//!
//! What a failure means is in `failures.rs`, on the same state.

use super::gather::Gather;
use super::held::{Batch, Held};
use super::job::{Batching, Item, Outcome, Released};
use super::process::Exit;
use super::restart::Restarts;
use super::runs::Run;
use super::work::{Unit, Work};
use super::{PoolConfig, PoolError, Stats, Stop};
use crate::chunk::Chunks;
use crate::signal::Interrupt;
use bytes::Bytes;
use powerpool_shared::{codec, ChunkFailed, Format, RunChunk, PIPELINE_DEPTH};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How long in-flight units may take to finish after a first SIGINT or SIGTERM.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(5);
/// Without a task timeout, a unit that has run this many times its siblings' median (and at
/// least [`STALL_FLOOR`]) is reported as stalled: a stopped or hung worker is never silent.
pub const STALL_FACTOR: u32 = 10;
pub const STALL_FLOOR: Duration = Duration::from_secs(2);
/// Answered units whose run times make the median (the most recent ones).
const DURATIONS_KEPT: usize = 64;

/// What happened.
/// How many workers a range job starts with: one per chunk, up to the pool's size.
pub fn first_wave(workers: usize, chunks: &Chunks) -> usize {
    workers.min(usize::try_from(chunks.count()).unwrap_or(usize::MAX))
}

#[derive(Debug)]
pub enum Event {
    Spawned {
        id: u64,
        pid: u32,
    },
    Ready {
        id: u64,
    },
    /// A unit's output; `rss`: the worker's resident memory just after, when measured.
    Done {
        id: u64,
        tag: u64,
        items: u64,
        output: Bytes,
        rss: Option<u64>,
    },
    /// The worker has finished some items of unit `tag`: its deadline starts again.
    Progress {
        id: u64,
        tag: u64,
    },
    Failed {
        id: u64,
        failed: ChunkFailed,
    },
    /// The worker cannot run this job at all (for example, it does not know the task).
    Refused {
        id: u64,
        reason: String,
    },
    /// The worker broke its job's contract after sending results (`map --exec`'s command
    /// printed a line with no input outstanding): nothing after can be trusted.
    Broken {
        id: u64,
        reason: String,
    },
    /// The zygote could not fork this worker: its slot waits to execute one instead (the
    /// supervisor opens the socket for it; the engine never sees this).
    ForkFailed {
        id: u64,
    },
    /// The worker's process ended (always the last event of a worker).
    Exited {
        id: u64,
        exit: Exit,
        note: Option<String>,
    },
    /// The listener refused a connection: often why workers cannot start.
    ConnectionRefused(String),
    /// The consumer got this far (see [`super::ResultSender::consumed`]).
    Consumed(u64),
    /// The next items of an items job, in order.
    Items(Vec<Item>),
    /// The next items of an items job, in runs, in order.
    Runs(Vec<Run>),
    /// The items source closed: there are no more.
    SourceEnded,
    Interrupt(Interrupt),
    /// A timer ([`Engine::next_timer`]) may have come due.
    Tick,
}

/// What to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Start worker `id`.
    Spawn {
        id: u64,
    },
    Send {
        id: u64,
        unit: Dispatch,
    },
    /// Ask the worker to exit after its last unit (killed after a grace period).
    Shutdown {
        id: u64,
    },
    /// SIGTERM to the worker's process group, SIGKILL after a grace period (a timeout).
    Terminate {
        id: u64,
    },
    Kill {
        id: u64,
    },
    Release(Released),
    Log(Attempt),
    /// A unit has run far longer than its siblings: say so (never a kill).
    Stalled(Stall),
}

/// A unit that has run far longer than its siblings.
#[derive(Debug, Clone, PartialEq)]
pub struct Stall {
    pub pid: u32,
    /// `inputs 3..9`, `items 3..9`.
    pub what: String,
    pub ran: Duration,
    pub median: Duration,
}

/// A unit on its way to a worker.
#[derive(Debug, PartialEq)]
pub enum Dispatch {
    Run(RunChunk),
    Items { tag: u64, first: u64, items: Batch },
}

/// One finished attempt at a unit, for the joblog.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub first: u64,
    pub end: u64,
    pub pid: u32,
    /// Counts from 1 for each unit.
    pub attempt: u32,
    pub sent: Instant,
    pub ended: Instant,
    pub outcome: String,
}

/// What the units are.
#[derive(Debug)]
pub(super) enum Kind {
    Range { chunks: Chunks, format: Format, window: u64 },
    Items(Items),
}

/// An items job's input: what has arrived and is held until its result is in.
#[derive(Debug)]
pub(super) struct Items {
    pub batching: Batching,
    /// Items a new batch may take now: `batching.max_items`, or with a time target, what the
    /// measured cost per item says (starting at 1).
    pub batch_items: u64,
    /// Measured cost of one item (an average over recent units), with a time target.
    pub per_item: Option<Duration>,
    pub held: Held,
    /// Items received so far (the next one's index).
    pub pulled: u64,
    pub ended: bool,
    pub window_items: u64,
    /// Items are the lines of an input (`map --exec`, `map TASK --input`): messages name them as
    /// the user counts lines, from 1.
    pub lines: bool,
}

/// One worker, as the engine sees it.
#[derive(Debug, Default)]
pub(super) struct WorkerState {
    pub pid: Option<u32>,
    pub ready: bool,
    /// Units sent and not answered, oldest first: the oldest is the one running.
    pub in_flight: VecDeque<InFlight>,
    /// When the oldest unit began to run.
    pub running_since: Option<Instant>,
    /// Units answered.
    pub completed: u64,
    /// Told to shut down after its last unit (`max_tasks_per_worker`).
    pub retiring: bool,
    /// Shut down because every unit was handed out (`release_idle`): it is at the end of its
    /// run, as every worker is once the run ends; a range worker may still be answering the
    /// units in its pipeline.
    pub released: bool,
    /// Ended for overrunning the task timeout: why.
    pub timed_out: Option<String>,
    /// Its running unit was reported as stalled.
    pub stall_reported: bool,
    /// Passed `max_worker_memory`: retires once its pipeline is empty.
    pub over_memory: bool,
}

/// A unit sent to a worker: its tag, and when it was sent.
#[derive(Clone, Copy, Debug)]
pub(super) struct InFlight {
    pub tag: u64,
    pub unit: Unit,
    pub sent: Instant,
}

/// The pool's state and rules.
#[derive(Debug)]
pub struct Engine {
    pub(super) kind: Kind,
    pub(super) config: PoolConfig,
    ordered: bool,
    pub(super) workers: BTreeMap<u64, WorkerState>,
    next_id: u64,
    /// Tags name each dispatch of a unit; the worker echoes them.
    next_tag: u64,
    pub(super) work: Work,
    gather: Gather<Outcome>,
    consumed: u64,
    /// Stop mode: the failed item's offset, and the error to end with once everything before
    /// it is released.
    pub(super) poisoned: Option<(u64, PoolError)>,
    pub(super) restarts: Restarts,
    pub(super) last_refusal: Option<String>,
    respawns_due: usize,
    respawn_at: Instant,
    stopping: Option<(Interrupt, Instant)>,
    pub(super) finished: Option<Result<(), Stop>>,
    /// The end was taken ([`Engine::take_end`]): nothing more happens.
    done: bool,
    pub(super) stats: Stats,
    pub(super) actions: Vec<Action>,
    /// How long recent units ran, for the stall report's median, and that median.
    durations: VecDeque<Duration>,
    median: Option<Duration>,
    /// Units answered in all.
    completed_total: u64,
}

impl Engine {
    /// An engine for a range job, with its first workers started.
    pub fn range(
        chunks: Chunks,
        format: Format,
        config: PoolConfig,
        ordered: bool,
        now: Instant,
    ) -> Engine {
        // The window: every worker's pipeline full, plus one more chunk each.
        let window = (config.workers * (PIPELINE_DEPTH + 1)) as u64;
        let workers = first_wave(config.workers, &chunks);
        let mut engine = Engine::new(Kind::Range { chunks, format, window }, config, ordered, now);
        for _ in 0..workers {
            engine.spawn();
        }
        engine.check_finished();
        engine
    }

    /// Names the items in messages as lines, numbered from 1 (`line 3`), not as items.
    pub fn name_items_as_lines(&mut self) {
        if let Kind::Items(items) = &mut self.kind {
            items.lines = true;
        }
    }

    /// An engine for an items job, with its first workers started.
    pub fn items(batching: Batching, config: PoolConfig, ordered: bool, now: Instant) -> Engine {
        let window_items = ((config.workers * (PIPELINE_DEPTH + 1)) as u64)
            .saturating_mul(batching.max_items.max(1));
        let batch_items = if batching.target.is_some() { 1 } else { batching.max_items };
        let items = Items {
            batching,
            batch_items,
            per_item: None,
            held: Held::default(),
            pulled: 0,
            ended: false,
            window_items,
            lines: false,
        };
        let mut engine = Engine::new(Kind::Items(items), config, ordered, now);
        for _ in 0..engine.config.workers {
            engine.spawn();
        }
        engine
    }

    fn new(kind: Kind, config: PoolConfig, ordered: bool, now: Instant) -> Engine {
        Engine {
            kind,
            ordered,
            workers: BTreeMap::new(),
            next_id: 0,
            next_tag: 0,
            work: Work::new(config.retries),
            gather: Gather::new(),
            consumed: 0,
            poisoned: None,
            restarts: Restarts::new(config.retries),
            last_refusal: None,
            respawns_due: 0,
            respawn_at: now,
            stopping: None,
            finished: None,
            done: false,
            stats: Stats::default(),
            actions: Vec::new(),
            durations: VecDeque::new(),
            median: None,
            completed_total: 0,
            config,
        }
    }

    /// Takes one event; the actions it leads to wait in [`Engine::take_actions`].
    pub fn handle(&mut self, event: Event, now: Instant) {
        if self.is_finished() {
            return;
        }
        match event {
            Event::Spawned { id, pid } => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.pid = Some(pid);
                }
            }
            Event::Ready { id } => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.ready = true;
                    tracing::info!(id, pid = w.pid, "worker ready");
                }
            }
            Event::Done { id, tag, items, output, rss } => {
                self.on_done(id, tag, items, output, now);
                self.recycle_if_large(id, rss);
            }
            Event::Progress { id, tag } => {
                if let Some(w) = self.workers.get_mut(&id) {
                    if w.in_flight.front().is_some_and(|f| f.tag == tag) {
                        w.running_since = Some(now);
                        w.stall_reported = false;
                    }
                }
            }
            Event::Failed { id, failed } => self.on_failed(id, failed, now),
            Event::Refused { id, reason } => {
                tracing::debug!(id, "worker refused the job");
                self.finished = Some(Err(Stop::Fatal(PoolError::JobRefused(reason))));
            }
            Event::Broken { id, reason } => {
                tracing::debug!(id, "worker broke its contract");
                if self.workers.get(&id).is_some_and(|w| w.released && w.in_flight.is_empty()) {
                    // Said on its way out after its last result, as at the end of the run: the
                    // run goes on (the others' results are good) and ends with this error.
                    self.note_broken(reason);
                } else {
                    self.finished = Some(Err(Stop::Fatal(PoolError::Broken(reason))));
                }
            }
            Event::Exited { id, exit, note } => self.on_exit(id, exit, note, now),
            Event::ForkFailed { .. } => {}
            Event::ConnectionRefused(why) => {
                tracing::warn!("refused a connection: {why}");
                self.last_refusal = Some(why);
            }
            Event::Consumed(n) => self.consumed = n,
            Event::Items(items) => {
                if let Kind::Items(held) = &mut self.kind {
                    held.pulled += items.len() as u64;
                    held.held.push_items(items);
                }
            }
            Event::Runs(runs) => {
                if let Kind::Items(held) = &mut self.kind {
                    for run in runs {
                        held.pulled += run.len() as u64;
                        held.held.push_run(run);
                    }
                }
            }
            Event::SourceEnded => {
                if let Kind::Items(items) = &mut self.kind {
                    items.ended = true;
                }
            }
            Event::Interrupt(int) => {
                if self.stopping.is_some() {
                    self.finished = Some(Err(Stop::Interrupted(int)));
                } else {
                    tracing::warn!("{}: finishing the units in flight, then stopping", int.name);
                    self.stopping = Some((int, now + INTERRUPT_GRACE));
                }
            }
            Event::Tick => self.on_tick(now),
        }
        self.check_finished();
        self.dispatch(now);
    }

    /// The actions queued since the last call, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        self.done || self.finished.is_some()
    }

    /// How the run ended, once it has (given once).
    pub fn take_end(&mut self) -> Option<Result<(), Stop>> {
        let end = self.finished.take();
        self.done |= end.is_some();
        end
    }

    /// A worker said, on its way out after the run, that its contract was broken.
    pub fn note_broken(&mut self, reason: String) {
        self.stats.broken.get_or_insert(reason);
    }

    /// What happened along the way.
    pub fn into_stats(self) -> Stats {
        self.stats
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The next moment [`Event::Tick`] is due: a respawn, a unit's deadline, the end of an
    /// interrupted run's grace period.
    pub fn next_timer(&self) -> Option<Instant> {
        let respawn = (self.respawns_due > 0).then_some(self.respawn_at);
        let grace = self.stopping.map(|(_, at)| at);
        let deadlines = self.config.task_timeout.into_iter().flat_map(|limit| {
            self.workers
                .values()
                .filter(|w| w.timed_out.is_none())
                .filter_map(move |w| w.running_since.and_then(|at| at.checked_add(limit)))
        });
        let stalls = self.stall_after().into_iter().flat_map(|after| {
            self.workers
                .values()
                .filter(|w| !w.stall_reported)
                .filter_map(move |w| w.running_since.map(|at| at + after))
        });
        respawn.into_iter().chain(grace).chain(deadlines).chain(stalls).min()
    }

    /// The median run time of recent units, once there are a few (kept up to date as units
    /// are answered: the timers ask for it at every turn of the loop).
    fn median_duration(&self) -> Option<Duration> {
        self.median
    }

    /// How long a unit may run before it is reported as stalled; `None` with a task timeout
    /// (which ends such a worker) or before there is a median to compare with.
    fn stall_after(&self) -> Option<Duration> {
        if self.config.task_timeout.is_some() {
            return None;
        }
        self.median_duration().map(|m| (m * STALL_FACTOR).max(STALL_FLOOR))
    }

    /// Whether the engine takes another item now (an items job within its window).
    pub fn wants_items(&self) -> bool {
        let Kind::Items(items) = &self.kind else { return false };
        let bytes_ok = items
            .batching
            .window_bytes
            .is_none_or(|max| items.held.bytes() < max || items.held.is_empty());
        !self.is_finished()
            && !items.ended
            && items.pulled < self.consumed.saturating_add(items.window_items)
            && bytes_ok
    }

    /// Ends the run's bookkeeping: every unit still in flight is logged as cancelled.
    pub fn cancel_all(&mut self, now: Instant) {
        self.respawns_due = 0;
        let cancelled: Vec<(u32, InFlight)> = self
            .workers
            .values()
            .flat_map(|w| w.in_flight.iter().map(|f| (w.pid.unwrap_or(0), *f)))
            .collect();
        for (pid, f) in cancelled {
            self.log(pid, &f, now, "cancelled".to_owned());
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if self.respawns_due > 0 && now >= self.respawn_at {
            while self.respawns_due > 0 {
                self.respawns_due -= 1;
                self.spawn();
            }
        }
        if let Some((int, at)) = self.stopping {
            if now >= at {
                self.finished = Some(Err(Stop::Interrupted(int)));
                return;
            }
        }
        self.report_stalls(now);
        let Some(limit) = self.config.task_timeout else { return };
        let mut overdue = Vec::new();
        for (&id, w) in &mut self.workers {
            let due =
                w.running_since.and_then(|at| at.checked_add(limit)).is_some_and(|d| now >= d);
            if due && w.timed_out.is_none() {
                let what = w
                    .in_flight
                    .front()
                    .map_or_else(String::new, |f| describe(&self.kind, f.unit.first, f.unit.end));
                w.timed_out =
                    Some(format!("timed out: {what} took longer than --task-timeout {limit:?}"));
                overdue.push(id);
            }
        }
        for id in overdue {
            self.actions.push(Action::Terminate { id });
        }
    }

    /// Reports each unit that has run far longer than its siblings, once.
    fn report_stalls(&mut self, now: Instant) {
        let (Some(after), Some(median)) = (self.stall_after(), self.median_duration()) else {
            return;
        };
        for w in self.workers.values_mut() {
            let Some(since) = w.running_since else { continue };
            if w.stall_reported || now < since + after {
                continue;
            }
            w.stall_reported = true;
            let what = w
                .in_flight
                .front()
                .map_or_else(String::new, |f| describe(&self.kind, f.unit.first, f.unit.end));
            let pid = w.pid.unwrap_or(0);
            self.actions.push(Action::Stalled(Stall { pid, what, ran: now - since, median }));
        }
    }

    /// Whether the run still needs workers.
    pub(super) fn needs_workers(&self) -> bool {
        !self.is_finished() && self.stopping.is_none() && !self.all_released()
    }

    fn total(&self) -> Option<u64> {
        match &self.kind {
            Kind::Range { chunks, .. } => Some(chunks.offsets(chunks.count().saturating_sub(1)).1),
            Kind::Items(items) => items.ended.then_some(items.pulled),
        }
    }

    fn all_released(&self) -> bool {
        self.total().is_some_and(|total| self.gather.released() >= total)
    }

    fn check_finished(&mut self) {
        if self.is_finished() {
            return;
        }
        if self.all_released() {
            self.finished = Some(Ok(()));
        } else if self.poisoned.as_ref().is_some_and(|(at, _)| self.gather.released() >= *at) {
            let (_, err) = self.poisoned.take().expect("checked just above");
            self.finished = Some(Err(Stop::Fatal(err)));
        } else if let Some((int, _)) = self.stopping {
            if self.workers.values().all(|w| w.in_flight.is_empty()) {
                self.finished = Some(Err(Stop::Interrupted(int)));
            }
        }
    }

    pub(super) fn spawn(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        self.workers.insert(id, WorkerState::default());
        self.actions.push(Action::Spawn { id });
    }

    /// Gives idle workers units: first one each, then a second each (see `PIPELINE_DEPTH`;
    /// never more than the config's `pipeline_depth`).
    fn dispatch(&mut self, now: Instant) {
        if self.stopping.is_some() || self.is_finished() {
            return;
        }
        let max_tasks = self.config.max_tasks_per_worker.unwrap_or(u64::MAX);
        let ids: Vec<u64> = self.workers.keys().copied().collect();
        for depth in 1..=self.config.pipeline_depth.clamp(1, PIPELINE_DEPTH) {
            for &id in &ids {
                let w = &self.workers[&id];
                let assigned = w.completed + w.in_flight.len() as u64;
                let busy = w.retiring || w.over_memory || w.in_flight.len() >= depth;
                if !w.ready || busy || assigned >= max_tasks {
                    continue;
                }
                // A worker with nothing to do gets what has arrived at once; a second unit,
                // queued behind a running one, waits until it can be a whole batch.
                let Some(unit) = self.next_unit(depth > 1) else { continue };
                let tag = self.next_tag;
                self.next_tag += 1;
                let dispatch = match &self.kind {
                    Kind::Range { chunks, .. } => {
                        Dispatch::Run(chunks.message(tag, unit.first, unit.end))
                    }
                    Kind::Items(items) => Dispatch::Items {
                        tag,
                        first: unit.first,
                        items: items.held.batch(unit.first, unit.end),
                    },
                };
                let w = self.workers.get_mut(&id).expect("listed above");
                if w.in_flight.is_empty() {
                    w.running_since = Some(now);
                }
                w.in_flight.push_back(InFlight { tag, unit, sent: now });
                self.actions.push(Action::Send { id, unit: dispatch });
            }
        }
        self.release_idle();
        self.staff();
    }

    /// Once every unit has been handed out, a worker will get no more work: it is shut down
    /// now, so that its exit overlaps the units still running instead of adding to the end of
    /// the run. In a range run that has had no failure, a worker is told at once, behind the
    /// units in its pipeline, which it answers first (it reads its messages in order): it
    /// exits after its last answer without waiting for a round trip. Other workers (a
    /// command's, a typed task's), and every worker of a run that has had a failure (a retry
    /// needs a worker: each would cost a new one), are told when idle. Units lost later, or
    /// failed and to be run again, are run by a new worker ([`Engine::staff`]), as after any
    /// death.
    fn release_idle(&mut self) {
        let Some(total) = self.total() else { return };
        if self.stopping.is_some() || !self.work.handed_out(total) {
            return;
        }
        let untroubled = self.stats.retried == 0
            && self.stats.restarts == 0
            && self.stats.failed_count == 0
            && self.poisoned.is_none();
        let behind_units = matches!(self.kind, Kind::Range { .. }) && untroubled;
        for (&id, w) in &mut self.workers {
            if w.ready && !w.retiring && (behind_units || w.in_flight.is_empty()) {
                w.retiring = true;
                w.released = true;
                self.actions.push(Action::Shutdown { id });
            }
        }
    }

    /// Starts a worker when units wait and every worker there is has been told to finish
    /// (released at the end of the run, or retiring) and none is due to be started: a unit
    /// that failed on a released worker, to be run again, has no one else to run it.
    fn staff(&mut self) {
        let Some(total) = self.total() else { return };
        if self.work.handed_out(total)
            || !self.needs_workers()
            || self.respawns_due > 0
            || !self.workers.values().all(|w| w.retiring)
        {
            return;
        }
        self.spawn();
    }

    /// The next unit: a re-run, or a new chunk within the window, or a new batch of the
    /// items at hand.
    fn next_unit(&mut self, whole: bool) -> Option<Unit> {
        let consumed = self.consumed;
        match &self.kind {
            Kind::Range { chunks, window, .. } => self.work.next(|first| {
                let index = first / chunks.size();
                let max = (consumed / chunks.size()).saturating_add(*window).min(chunks.count());
                (index < max).then(|| chunks.offsets(index).1)
            }),
            Kind::Items(items) => self.work.next(|first| {
                let end = batch_end(items, first);
                let short = end - first < items.batch_items && end == items.pulled;
                (!(whole && short && !items.ended)).then_some(end)
            }),
        }
    }

    /// A unit's output came back.
    fn on_done(&mut self, id: u64, tag: u64, items: u64, output: Bytes, now: Instant) {
        let Some(w) = self.workers.get(&id) else { return };
        let found = w.in_flight.iter().position(|f| f.tag == tag).map(|p| (p, w.in_flight[p]));
        let fits = found.is_some_and(|(_, f)| output_fits(&self.kind, f.unit, items, &output));
        let Some((pos, done)) = found.filter(|_| fits) else {
            tracing::warn!(
                id,
                tag,
                items,
                len = output.len(),
                "worker sent a result that does not fit its unit; replacing it"
            );
            self.actions.push(Action::Kill { id });
            return;
        };
        let began = self.workers[&id].running_since.filter(|_| pos == 0).unwrap_or(done.sent);
        let pid = self.answered(id, pos, now);
        self.restarts.answered();
        self.learn_batch_size(done.unit.len(), now.saturating_duration_since(began));
        self.retire_after_answer(id);
        self.log(pid, &done, now, "done".to_owned());
        self.release(done.unit.first, done.unit.end, Outcome::Done(output));
    }

    /// With a time target, sizes the next batches from what this one cost: as many items as
    /// take about the target, at most `max_items` (and `max_bytes` of input, as always).
    fn learn_batch_size(&mut self, len: u64, took: Duration) {
        let Kind::Items(items) = &mut self.kind else { return };
        let Some(target) = items.batching.target else { return };
        let per = took / u32::try_from(len.max(1)).unwrap_or(u32::MAX);
        let per = match items.per_item {
            // A moving average: a few odd units do not swing the size.
            Some(avg) => (avg * 3 + per) / 4,
            None => per,
        };
        items.per_item = Some(per);
        let fit = target.as_nanos() / per.as_nanos().max(1);
        let fit = u64::try_from(fit).unwrap_or(u64::MAX);
        items.batch_items = fit.clamp(1, items.batching.max_items.max(1));
    }

    /// Removes the answered unit at `pos` of worker `id`'s pipeline; returns the worker's pid.
    pub(super) fn answered(&mut self, id: u64, pos: usize, now: Instant) -> u32 {
        let w = self.workers.get_mut(&id).expect("the caller found it");
        w.in_flight.remove(pos);
        w.completed += 1;
        if let Some(since) = w.running_since {
            if self.durations.len() == DURATIONS_KEPT {
                self.durations.pop_front();
            }
            self.durations.push_back(now.saturating_duration_since(since));
            // Sorted again every 16 units: the median moves slowly, and units may be many.
            let stale = self.durations.len() < 16 || self.completed_total % 16 == 0;
            self.completed_total += 1;
            self.median = if !stale {
                self.median
            } else {
                (self.durations.len() >= 3).then(|| {
                    let mut sorted: Vec<Duration> = self.durations.iter().copied().collect();
                    sorted.sort_unstable();
                    sorted[sorted.len() / 2]
                })
            };
        }
        // Workers answer in order: the next unit starts running now.
        w.running_since = (!w.in_flight.is_empty()).then_some(now);
        w.stall_reported = false;
        w.pid.unwrap_or(0)
    }

    /// Hands a unit's outcome on: in input order, or at once when unordered.
    pub(super) fn release(&mut self, first: u64, end: u64, outcome: Outcome) {
        if let Kind::Items(items) = &mut self.kind {
            // An item's memory goes once its result is in.
            items.held.release(first, end);
        }
        if !self.ordered {
            if self.gather.accept(first, end, Outcome::Done(Bytes::new())).is_none() {
                tracing::warn!(first, end, "dropped a result already delivered");
            } else {
                self.actions.push(Action::Release(Released { first, end, outcome }));
            }
            return;
        }
        match self.gather.accept(first, end, outcome) {
            Some(ready) => {
                for (first, end, outcome) in ready {
                    self.actions.push(Action::Release(Released { first, end, outcome }));
                }
            }
            None => tracing::warn!(first, end, "dropped a result already released"),
        }
    }

    /// After any answer (a result or a caught failure): a worker that reached its quota, or
    /// passed its memory limit, retires once its pipeline is empty. A worker left at its
    /// quota without retiring would be given no work and never replaced: the run would hang.
    pub(super) fn retire_after_answer(&mut self, id: u64) {
        self.retire_if_due(id);
        if self.workers.get(&id).is_some_and(|w| w.over_memory && w.in_flight.is_empty()) {
            self.retire(id);
        }
    }

    /// `max_tasks_per_worker`: a worker that has answered its quota is shut down and a fresh
    /// one started in its place at once, so the pool never runs short.
    fn retire_if_due(&mut self, id: u64) {
        let Some(max) = self.config.max_tasks_per_worker else { return };
        let Some(w) = self.workers.get(&id) else { return };
        if w.retiring || w.completed < max || !w.in_flight.is_empty() {
            return;
        }
        self.retire(id);
    }

    /// `max_worker_memory`: a worker whose resident memory passed the limit after a unit takes
    /// no more work; it is shut down once its pipeline is empty, and replaced at once.
    fn recycle_if_large(&mut self, id: u64, rss: Option<u64>) {
        let (Some(limit), Some(rss)) = (self.config.max_worker_memory, rss) else { return };
        let Some(w) = self.workers.get_mut(&id) else { return };
        if w.retiring || rss <= limit {
            return;
        }
        tracing::info!(id, pid = w.pid, rss, limit, "worker passed its memory limit");
        if w.in_flight.is_empty() {
            self.retire(id);
        } else {
            // Nothing more is sent to it; it retires when its last unit is answered.
            w.over_memory = true;
        }
    }

    /// Shuts worker `id` down after its last unit and starts its replacement.
    fn retire(&mut self, id: u64) {
        let Some(w) = self.workers.get_mut(&id) else { return };
        if w.retiring {
            // Told already (released behind its units at the end of the run): once is enough.
            return;
        }
        w.retiring = true;
        self.actions.push(Action::Shutdown { id });
        self.stats.recycled += 1;
        if self.needs_workers() {
            self.spawn();
        }
    }

    /// Queues a respawn after the policy's backoff.
    pub(super) fn schedule_respawn(&mut self, now: Instant) {
        self.stats.restarts += 1;
        self.respawns_due += 1;
        self.respawn_at = now + self.restarts.backoff();
    }

    pub(super) fn log(&mut self, pid: u32, f: &InFlight, now: Instant, outcome: String) {
        self.actions.push(Action::Log(Attempt {
            first: f.unit.first,
            end: f.unit.end,
            pid,
            attempt: f.unit.failures + 1,
            sent: f.sent,
            ended: now,
            outcome,
        }));
    }
}

/// Where a new batch starting at item `first` ends: as many items at hand as fit the batch
/// limits, at least one (a large item travels alone).
fn batch_end(items: &Items, first: u64) -> u64 {
    let max_items = items.batch_items.max(1);
    items.held.batch_end(first, items.pulled, max_items, items.batching.max_bytes)
}

/// How a unit is named in messages: `inputs 3..9` of a range, `items 3..9` of an items job,
/// `lines 4-9` of lines.
pub(super) fn describe(kind: &Kind, first: u64, end: u64) -> String {
    match kind {
        Kind::Range { chunks, .. } => {
            format!("inputs {}..{}", chunks.item(first), chunks.item(end))
        }
        Kind::Items(items) if items.lines => format!("lines {}-{end}", first + 1),
        Kind::Items(_) => format!("items {first}..{end}"),
    }
}

/// How one input is named in messages: `input -3` of a range, `item 7` of an items job,
/// `line 8` of lines.
pub(super) fn name_one(kind: &Kind, offset: u64) -> String {
    match kind {
        Kind::Range { chunks, .. } => format!("input {}", chunks.item(offset)),
        Kind::Items(items) if items.lines => format!("line {}", offset + 1),
        Kind::Items(_) => format!("item {offset}"),
    }
}

/// Whether an answer of `items` items and `output` bytes is what `unit` asked for.
fn output_fits(kind: &Kind, unit: Unit, items: u64, output: &Bytes) -> bool {
    if items != unit.len() {
        return false;
    }
    let len = output.len() as u64;
    match kind {
        Kind::Range { format: Format::Lines, .. } => {
            len >= items * 2 && len <= items * Format::Lines.max_bytes_per_item() as u64
        }
        Kind::Range { format: Format::Bin, .. } => len == items * 16,
        Kind::Range { format: Format::Sum, .. } => len == 32,
        Kind::Items(_) => codec::count_records(output) == Some(items),
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
