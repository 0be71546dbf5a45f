//! The supervisor loop: the one place that decides. It owns the queue of chunks, the table of
//! workers and the ordered gather; slots and the listener report to it by message.

use super::listener::{self, Authenticated, SocketDir};
use super::process::SpawnSpec;
use super::queue::Queue;
use super::slot::{self, Slot, SlotCmd, SlotEvent};
use super::{Job, Stats};
use crate::errors::Error;
use crate::gather::Gather;
use crate::output::Writer;
use crate::signal::Interrupt;
use bytes::Bytes;
use powerpool_shared::env::to_hex;
use powerpool_shared::{transport, Format, Welcome, PIPELINE_DEPTH};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Workers in a row that may fail to start before the run gives up.
const MAX_START_FAILURES: u32 = 5;
/// Times one chunk may be lost with its worker before the run gives up.
const MAX_CHUNK_ATTEMPTS: u32 = 4;
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

struct Worker {
    slot: Slot,
    pid: Option<u32>,
    attached: bool,
    ready: bool,
    in_flight: Vec<u64>,
}

struct Supervisor<'a> {
    job: &'a Job,
    spec: Arc<SpawnSpec>,
    events_tx: mpsc::UnboundedSender<SlotEvent>,
    workers: BTreeMap<u64, Worker>,
    next_id: u64,
    queue: Queue,
    gather: Gather,
    start_failures: u32,
    last_start_failure: String,
    /// Why the listener last refused a connection: often why workers cannot start.
    last_refusal: Option<String>,
    respawns_due: usize,
    respawn_at: Instant,
    stopping: Option<(Interrupt, Instant)>,
    stats: Stats,
}

/// Runs `job` to the end, writing outputs in order through `writer`.
pub async fn run(
    job: &Job,
    writer: &mut Writer,
    interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
) -> Result<Stats, Stop> {
    let dir = SocketDir::create().map_err(Error::Socket)?;
    let socket = dir.socket_path();
    let listener = transport::bind(&socket).map_err(Error::Socket)?;
    let token = listener::new_token().map_err(Error::Socket)?;
    let (auth_tx, mut auth_rx) = mpsc::unbounded_channel();
    let accept = tokio::spawn(listener::accept_loop(listener, token, auth_tx));
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let spec = SpawnSpec { command: job.command.clone(), socket, token_hex: to_hex(&token) };
    let mut sup = Supervisor {
        job,
        spec: Arc::new(spec),
        events_tx,
        workers: BTreeMap::new(),
        next_id: 0,
        // The window: every worker's pipeline full, plus one more chunk each.
        queue: Queue::new(job.chunks.count(), (job.workers * (PIPELINE_DEPTH + 1)) as u64),
        gather: Gather::new(),
        start_failures: 0,
        last_start_failure: String::new(),
        last_refusal: None,
        respawns_due: 0,
        respawn_at: Instant::now(),
        stopping: None,
        stats: Stats::default(),
    };
    for _ in 0..job.workers {
        sup.spawn_worker();
    }
    let result = sup.main_loop(writer, &mut auth_rx, &mut events_rx, interrupts).await;
    let kill = !matches!(result, Ok(()));
    sup.stop_all(kill, &mut events_rx).await;
    accept.abort();
    drop(dir);
    result.map(|()| sup.stats)
}

impl Supervisor<'_> {
    async fn main_loop(
        &mut self,
        writer: &mut Writer,
        auth_rx: &mut mpsc::UnboundedReceiver<Result<Authenticated, String>>,
        events_rx: &mut mpsc::UnboundedReceiver<SlotEvent>,
        interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
    ) -> Result<(), Stop> {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        loop {
            if self.gather.released() == self.job.chunks.count() {
                return Ok(());
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
                }
                () = tokio::time::sleep_until(self.respawn_at), if self.respawns_due > 0 => {
                    self.respawns_due -= 1;
                    self.spawn_worker();
                }
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

    fn spawn_worker(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        let welcome = Welcome { task: self.job.task.clone(), format: self.job.format };
        let slot = slot::start(id, Arc::clone(&self.spec), welcome, self.events_tx.clone());
        let worker =
            Worker { slot, pid: None, attached: false, ready: false, in_flight: Vec::new() };
        self.workers.insert(id, worker);
    }

    fn attach(&mut self, auth: Authenticated) {
        match self.workers.get_mut(&auth.worker_id) {
            Some(w) if !w.attached => {
                w.attached = true;
                let _ = w.slot.cmd.send(SlotCmd::Attach(Box::new(auth)));
            }
            _ => tracing::warn!(
                "dropped a connection for worker id {} (pid {}): no such worker is waiting",
                auth.worker_id,
                auth.pid
            ),
        }
    }

    /// Gives idle workers chunks: first one each, then a second each (see `PIPELINE_DEPTH`).
    fn dispatch(&mut self, written: u64) {
        if self.stopping.is_some() {
            return;
        }
        for depth in 1..=PIPELINE_DEPTH {
            for w in self.workers.values_mut() {
                if !w.ready || w.in_flight.len() >= depth {
                    continue;
                }
                let Some(next) = self.queue.next(written) else { return };
                if w.slot.cmd.send(SlotCmd::Run(self.job.chunks.get(next))).is_ok() {
                    w.in_flight.push(next);
                } else {
                    self.queue.put_back(next);
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
                    self.start_failures = 0;
                    tracing::info!(id, pid = w.pid, "worker ready");
                }
            }
            SlotEvent::Done { id, chunk, items, output } => {
                self.on_done(id, chunk, items, output, writer)?
            }
            SlotEvent::Failed { id, failed } => {
                let pid = self.workers.get(&id).and_then(|w| w.pid).unwrap_or(0);
                let item = failed.item.map_or_else(|| "?".to_owned(), |i| i.to_string());
                return Err(Stop::Fatal(Error::TaskFailed {
                    item,
                    reason: format!("{} (worker pid {pid})", failed.reason),
                }));
            }
            SlotEvent::Refused { id, reason } => {
                tracing::debug!(id, "worker refused the job");
                return Err(Stop::Fatal(Error::JobRefused(reason)));
            }
            SlotEvent::Exited { id, exit, note } => self.on_exit(id, exit, note)?,
        }
        Ok(())
    }

    fn on_done(
        &mut self,
        id: u64,
        chunk: u64,
        items: u64,
        output: Bytes,
        writer: &Writer,
    ) -> Result<(), Stop> {
        let Some(w) = self.workers.get_mut(&id) else { return Ok(()) };
        let valid = chunk < self.job.chunks.count()
            && w.in_flight.contains(&chunk)
            && self.job.chunks.get(chunk).len() == items
            && output_fits(self.job.format, items, output.len());
        if !valid {
            tracing::warn!(
                id,
                chunk,
                items,
                len = output.len(),
                "worker sent a result that does not fit its chunk; replacing it"
            );
            let _ = w.slot.cmd.send(SlotCmd::Kill);
            return Ok(());
        }
        w.in_flight.retain(|&c| c != chunk);
        if let Some(ready) = self.gather.accept(chunk, output) {
            for out in ready {
                if !writer.push(out) {
                    return Err(Stop::WriterGone);
                }
            }
        }
        Ok(())
    }

    fn on_exit(
        &mut self,
        id: u64,
        exit: super::process::Exit,
        note: Option<String>,
    ) -> Result<(), Stop> {
        let Some(w) = self.workers.remove(&id) else { return Ok(()) };
        let pid = w.pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
        let how = match &note {
            Some(note) => format!("{exit} ({note})"),
            None => exit.to_string(),
        };
        if !w.ready {
            self.start_failures += 1;
            self.last_start_failure = match &self.last_refusal {
                Some(why) => format!("worker pid {pid} {how}; its connection was refused: {why}"),
                None => format!("worker pid {pid} {how}"),
            };
            tracing::warn!("worker pid {pid} failed to start: {how}");
            if self.start_failures >= MAX_START_FAILURES {
                return Err(Stop::Fatal(Error::WorkersWontStart {
                    attempts: self.start_failures,
                    last: self.last_start_failure.clone(),
                }));
            }
        } else {
            let lost: Vec<String> = w.in_flight.iter().map(|c| c.to_string()).collect();
            tracing::warn!("worker pid {pid} {how}; re-running chunk(s) [{}]", lost.join(", "));
        }
        let lost: Vec<u64> = w.in_flight.iter().copied().filter(|&c| !self.gather.has(c)).collect();
        for (chunk, attempts) in self.queue.requeue_lost(&lost) {
            if attempts >= MAX_CHUNK_ATTEMPTS {
                let c = self.job.chunks.get(chunk);
                return Err(Stop::Fatal(Error::ChunkKeepsFailing {
                    chunk,
                    start: c.start,
                    end: c.end,
                    attempts,
                    last: format!("worker pid {pid} {how}"),
                }));
            }
            self.stats.retried_chunks += 1;
        }
        let remaining = self.gather.released() < self.job.chunks.count();
        if remaining && self.stopping.is_none() {
            let delay = match self.start_failures {
                0 => Duration::ZERO,
                n => Duration::from_millis(25 << (n - 1).min(6)).min(Duration::from_secs(1)),
            };
            self.stats.restarts += 1;
            self.respawns_due += 1;
            self.respawn_at = Instant::now() + delay;
        }
        Ok(())
    }

    /// Ends every worker and waits until each has been reaped: no orphan, no zombie.
    async fn stop_all(&mut self, kill: bool, events_rx: &mut mpsc::UnboundedReceiver<SlotEvent>) {
        self.respawns_due = 0;
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
}

/// Whether `len` output bytes are plausible for `items` inputs in `format`.
fn output_fits(format: Format, items: u64, len: usize) -> bool {
    let len = len as u64;
    match format {
        Format::Lines => {
            len >= items * 2 && len <= items * Format::Lines.max_bytes_per_item() as u64
        }
        Format::Bin => len == items * 16,
        Format::Sum => len == 32,
    }
}
