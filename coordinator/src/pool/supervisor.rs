//! The supervisor loop: the one place that decides. It owns the work still to do, the table of
//! workers and the ordered gather; slots and the listener report to it by message. What comes
//! back is handled in `results.rs`, what a failure means in `failures.rs`, on the same state.

use super::listener::{self, Authenticated, SocketDir};
use super::process::SpawnSpec;
use super::results::{next_body, Body, BodyEvent};
use super::slot::{self, Slot, SlotCmd, SlotEvent, SlotLimits};
use super::work::{Unit, Work};
use super::{Job, Observers, Stats};
use crate::errors::Error;
use crate::gather::Gather;

use crate::output::Writer;
use crate::signal::Interrupt;
use bytes::Bytes;
use powerpool_shared::env::to_hex;
use powerpool_shared::{transport, Welcome, PIPELINE_DEPTH};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long in-flight chunks may take to finish after a first SIGINT or SIGTERM.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// Why the loop stopped short of success.
#[derive(Debug)]
pub enum Stop {
    Fatal(Error),
    /// The writer task stopped: its error comes from `Writer::finish`.
    WriterGone,
    Interrupted(Interrupt),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Fatal(e)
    }
}

pub(super) struct Worker {
    pub slot: Slot,
    pub pid: Option<u32>,
    pub ready: bool,
    /// Units sent and not answered, oldest first.
    pub in_flight: Vec<InFlight>,
    /// Units answered.
    pub completed: u64,
    /// Told to shut down after its last unit (`--max-tasks-per-worker`).
    pub retiring: bool,
}

/// A unit sent to a worker: its tag, and when it was sent.
#[derive(Clone, Copy, Debug)]
pub(super) struct InFlight {
    pub tag: u64,
    pub unit: Unit,
    pub sent: Instant,
}

pub(super) struct Supervisor<'a> {
    pub job: &'a Job,
    spec: Arc<SpawnSpec>,
    events_tx: mpsc::UnboundedSender<SlotEvent>,
    pub workers: BTreeMap<u64, Worker>,
    next_id: u64,
    /// Tags name each dispatch of a unit; the worker echoes them.
    next_tag: u64,
    pub work: Work,
    /// Bodies fetched and not yet computed (`fetch --process`), by URL index.
    pub bodies: HashMap<u64, Body>,
    pub gather: Gather,
    /// The end offset of the range.
    pub total: u64,
    /// Stop-at-first-failure mode: the failed item's offset and the error to end with once
    /// everything before it is written.
    pub poisoned: Option<(u64, Error)>,
    pub start_failures: u32,
    pub deaths_in_a_row: u32,
    /// Units answered (done or failed) by any worker so far.
    pub answered: u64,
    /// Workers that died after their handshake while no unit had yet been answered.
    pub deaths_before_any_answer: u32,
    /// Why the listener last refused a connection: often why workers cannot start.
    pub last_refusal: Option<String>,
    pub respawns_due: usize,
    pub respawn_at: Instant,
    stopping: Option<(Interrupt, Instant)>,
    pub stats: Stats,
    pub observers: &'a mut Observers,
}

/// Runs `job` to the end, writing outputs in order through `writer`.
/// Returns what happened along the way whether or not the run succeeded.
pub async fn run(
    job: &Job,
    writer: &mut Writer,
    interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
    observers: &mut Observers,
    mut bodies: Option<&mut mpsc::UnboundedReceiver<BodyEvent>>,
) -> (Stats, Result<(), Stop>) {
    let setup = (|| {
        let dir = SocketDir::create()?;
        let socket = dir.socket_path();
        let listener = transport::bind(&socket)?;
        let token = listener::new_token()?;
        Ok((dir, socket, listener, token))
    })();
    let (dir, socket, listener, token) = match setup {
        Ok(parts) => parts,
        Err(err) => return (Stats::default(), Err(Stop::Fatal(Error::Socket(err)))),
    };
    let (auth_tx, mut auth_rx) = mpsc::unbounded_channel();
    let accept = tokio::spawn(listener::accept_loop(listener, token, auth_tx));
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let spec = SpawnSpec { command: job.command.clone(), socket, token_hex: to_hex(&token) };
    // The window: every worker's pipeline full, plus one more chunk each.
    let window = (job.workers * (PIPELINE_DEPTH + 1)) as u64;
    let mut sup = Supervisor {
        job,
        spec: Arc::new(spec),
        events_tx,
        workers: BTreeMap::new(),
        next_id: 0,
        next_tag: 0,
        work: match bodies {
            Some(_) => Work::bodies(job.chunks.count(), job.retries),
            None => Work::new(job.chunks, window, job.retries),
        },
        bodies: HashMap::new(),
        gather: Gather::new(),
        total: job.chunks.offsets(job.chunks.count().saturating_sub(1)).1,
        poisoned: None,
        start_failures: 0,
        deaths_in_a_row: 0,
        answered: 0,
        deaths_before_any_answer: 0,
        last_refusal: None,
        respawns_due: 0,
        respawn_at: Instant::now(),
        stopping: None,
        stats: Stats::default(),
        observers,
    };
    for _ in 0..job.workers {
        sup.spawn_worker();
    }
    let result = sup.main_loop(writer, &mut auth_rx, &mut events_rx, interrupts, &mut bodies).await;
    let kill = !matches!(result, Ok(()));
    sup.stop_all(kill, &mut events_rx).await;
    accept.abort();
    drop(dir);
    (std::mem::take(&mut sup.stats), result)
}

impl Supervisor<'_> {
    async fn main_loop(
        &mut self,
        writer: &mut Writer,
        auth_rx: &mut mpsc::UnboundedReceiver<Result<Authenticated, String>>,
        events_rx: &mut mpsc::UnboundedReceiver<SlotEvent>,
        interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
        bodies: &mut Option<&mut mpsc::UnboundedReceiver<BodyEvent>>,
    ) -> Result<(), Stop> {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        loop {
            if self.gather.released() >= self.total {
                return Ok(());
            }
            if let Some((at, _)) = &self.poisoned {
                if self.gather.released() >= *at {
                    let (_, err) = self.poisoned.take().expect("checked just above");
                    return Err(Stop::Fatal(err));
                }
            }
            if let Some((int, _)) = self.stopping {
                if self.workers.values().all(|w| w.in_flight.is_empty()) {
                    return Err(Stop::Interrupted(int));
                }
            }
            self.dispatch(*writer.written.borrow());
            let grace_end = self.stopping.map_or(far, |(_, at)| at);
            tokio::select! {
                Some(verdict) = auth_rx.recv() => match verdict {
                    Ok(auth) => self.attach(auth),
                    Err(why) => {
                        tracing::warn!("refused a connection: {why}");
                        self.last_refusal = Some(why);
                    }
                },
                Some(event) = events_rx.recv() => self.on_event(event, writer)?,
                changed = writer.written.changed() => {
                    if changed.is_err() {
                        return Err(Stop::WriterGone);
                    }
                    if let Some(bar) = &self.observers.progress {
                        bar.set_position(*writer.written.borrow());
                    }
                }
                () = tokio::time::sleep_until(self.respawn_at), if self.respawns_due > 0 => {
                    self.respawns_due -= 1;
                    self.spawn_worker();
                }
                event = next_body(bodies) => match event {
                    Some(BodyEvent { index, body: Some(body) }) => {
                        self.bodies.insert(index, body);
                        self.work.make_ready(index);
                    }
                    Some(BodyEvent { index, body: None }) => {
                        self.release(index, index + 1, Bytes::new(), writer)?;
                    }
                    None => *bodies = None,
                },
                Some(int) = interrupts.recv() => {
                    if self.stopping.is_some() {
                        return Err(Stop::Interrupted(int));
                    }
                    tracing::warn!("{}: finishing the chunks in flight, then stopping", int.name);
                    self.stopping = Some((int, Instant::now() + INTERRUPT_GRACE));
                }
                () = tokio::time::sleep_until(grace_end), if self.stopping.is_some() => {
                    return Err(Stop::Interrupted(self.stopping.map_or(crate::signal::SIGINT, |s| s.0)));
                }
            }
        }
    }

    pub fn spawn_worker(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        let welcome = Welcome { task: self.job.task.clone(), format: self.job.format };
        let limits = SlotLimits { task_timeout: self.job.task_timeout };
        let spec = Arc::clone(&self.spec);
        let slot = slot::start(id, spec, welcome, limits, self.events_tx.clone());
        let worker = Worker {
            slot,
            pid: None,
            ready: false,
            in_flight: Vec::new(),
            completed: 0,
            retiring: false,
        };
        self.workers.insert(id, worker);
    }

    /// Routes an authenticated connection to its slot, which checks that it comes from the
    /// process it started (SO_PEERCRED) and that it has no connection yet.
    fn attach(&mut self, auth: Authenticated) {
        match self.workers.get(&auth.worker_id) {
            Some(w) => {
                let _ = w.slot.cmd.send(SlotCmd::Attach(Box::new(auth)));
            }
            None => tracing::warn!(
                "dropped a connection for worker id {} (pid {}): no such worker is waiting",
                auth.worker_id,
                auth.pid
            ),
        }
    }

    /// Gives idle workers units: first one each, then a second each (see `PIPELINE_DEPTH`).
    fn dispatch(&mut self, written: u64) {
        if self.stopping.is_some() {
            return;
        }
        let max_tasks = self.job.max_tasks_per_worker.unwrap_or(u64::MAX);
        for depth in 1..=PIPELINE_DEPTH {
            for w in self.workers.values_mut() {
                let assigned = w.completed + w.in_flight.len() as u64;
                if !w.ready || w.retiring || w.in_flight.len() >= depth || assigned >= max_tasks {
                    continue;
                }
                let Some(unit) = self.work.next(written) else { return };
                let tag = self.next_tag;
                let cmd = match self.bodies.get(&unit.first) {
                    Some(body) => SlotCmd::Body {
                        tag,
                        body: body.bytes.clone(),
                        what: format!("the body of {}", body.url),
                    },
                    None => SlotCmd::Run(self.job.chunks.message(tag, unit.first, unit.end)),
                };
                if w.slot.cmd.send(cmd).is_ok() {
                    self.next_tag += 1;
                    w.in_flight.push(InFlight { tag, unit, sent: Instant::now() });
                } else {
                    self.work.requeue(unit);
                }
            }
        }
    }

    fn on_event(&mut self, event: SlotEvent, writer: &Writer) -> Result<(), Stop> {
        match event {
            SlotEvent::Spawned { id, pid } => {
                tracing::debug!(id, pid, "worker spawned");
                if let Some(w) = self.workers.get_mut(&id) {
                    w.pid = Some(pid);
                }
            }
            SlotEvent::Ready { id } => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.ready = true;
                    tracing::info!(id, pid = w.pid, "worker ready");
                }
            }
            SlotEvent::Done { id, chunk, items, output } => {
                self.on_done(id, chunk, items, output, writer)?
            }
            SlotEvent::Failed { id, failed } => self.on_failed(id, failed, writer)?,
            SlotEvent::Refused { id, reason } => {
                tracing::debug!(id, "worker refused the job");
                return Err(Stop::Fatal(Error::JobRefused(reason)));
            }
            SlotEvent::Exited { id, exit, note, timed_out } => {
                self.on_exit(id, exit, note, timed_out, writer)?
            }
        }
        Ok(())
    }

    /// Ends every worker and waits until each has been reaped: no orphan, no zombie.
    async fn stop_all(&mut self, kill: bool, events_rx: &mut mpsc::UnboundedReceiver<SlotEvent>) {
        self.respawns_due = 0;
        let cancelled: Vec<(u32, InFlight)> = self
            .workers
            .values()
            .flat_map(|w| w.in_flight.iter().map(|f| (w.pid.unwrap_or(0), *f)))
            .collect();
        for (pid, f) in cancelled {
            self.log_attempt(pid, &f, "cancelled");
        }
        for w in self.workers.values() {
            let _ = w.slot.cmd.send(if kill { SlotCmd::Kill } else { SlotCmd::Shutdown });
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.workers.is_empty() {
            match tokio::time::timeout_at(deadline, events_rx.recv()).await {
                Ok(Some(SlotEvent::Exited { id, .. })) => {
                    self.workers.remove(&id);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// Whether the run still needs workers.
    pub fn needs_workers(&self) -> bool {
        self.gather.released() < self.total && self.stopping.is_none()
    }
}
