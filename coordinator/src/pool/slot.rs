//! One task per worker process: it owns the process and its connection, and talks to the
//! supervisor only by messages. One slot task lives exactly as long as one process; a
//! replacement is a new slot with a new id. It decides nothing: the engine says what to send
//! and when to end the worker; the slot says what happened, ending with exactly one
//! [`Event::Exited`].

use super::arena::Arena;
use super::engine::{Dispatch, Event};
use super::held::{Batch, Segment};
use super::listener::{self, Authenticated, Registration, HANDSHAKE_TIMEOUT};
use super::process::{self, Exit, Forked, SpawnSpec, Worker};
use super::zygote::Answer;
use powerpool_shared::codec::{self, Incoming, ItemsFrame};
use powerpool_shared::transport::{self, FrameReader, FrameWriter, Half};
use powerpool_shared::{FromWorker, ItemsAt, ToWorker, Welcome, MAX_BODY_PIECE, TOKEN_LEN};
use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long a worker told to shut down may take before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a worker that overran the task timeout has between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(500);
/// An item larger than this travels alone, in pieces, instead of in a batch frame.
const LARGE_ITEM: usize = MAX_BODY_PIECE;

/// A write to the worker in progress: it owns the writer, and gives it back with whether it
/// was the request to shut down.
type Writing =
    Pin<Box<dyn Future<Output = (FrameWriter<Half>, Result<bool, transport::SendError>)> + Send>>;

/// What waits to be written to the worker, in order.
enum Outgoing {
    Unit(Dispatch),
    Shutdown,
}

/// What the supervisor tells a slot.
#[derive(Debug)]
pub enum SlotCmd {
    Send(Dispatch),
    /// Finish: the worker exits by itself, or is killed after a grace period.
    Shutdown,
    /// SIGTERM now, SIGKILL after a grace period.
    Terminate,
    /// End the worker at once.
    Kill,
    /// The zygote could not fork this slot's worker: execute one, connecting to the socket
    /// this spec names.
    Exec(Arc<SpawnSpec>),
}

/// How a slot's connection comes: from the listener, which checked it, or from the worker's
/// own socket pair, checked here.
type Connecting = Pin<Box<dyn Future<Output = Result<Authenticated, String>> + Send>>;

/// Starts a slot task: spawns the worker process (unless the zygote is forking it: `forked`
/// brings its pid and the coordinator's end of its connection when it is born) and serves it.
/// An executed worker's connection arrives from the listener; a forked one's handshake is
/// checked against `token` here. If the zygote could not fork it, the slot says so
/// (`Event::ForkFailed`) and executes a worker when told where it is to connect
/// (`SlotCmd::Exec`). Its events go to `events`, tagged with nothing but their own id.
#[allow(clippy::too_many_arguments)]
pub fn start(
    id: u64,
    number: u64,
    forked: Option<Answer>,
    token: [u8; TOKEN_LEN],
    spec: Arc<SpawnSpec>,
    welcome: Welcome,
    listener: mpsc::UnboundedSender<Registration>,
    events: mpsc::UnboundedSender<Event>,
) -> mpsc::UnboundedSender<SlotCmd> {
    let (cmd, cmds) = mpsc::unbounded_channel();
    let register = move |worker: Worker| -> (Worker, Connecting) {
        let (conn_tx, conn) = oneshot::channel();
        let pid = worker.id().unwrap_or(0);
        let _ = listener.send(Registration { worker_id: id, pid, conn: conn_tx });
        (worker, Box::pin(async move { conn.await.map_err(|_| "the listener stopped".into()) }))
    };
    let born = move |pid: u32, conn: OwnedFd| -> (Worker, Connecting) {
        let check = async move {
            let stream = transport::from_fd(conn).map_err(|e| format!("its connection: {e}"))?;
            let checked = listener::check(stream, &token).await?;
            if checked.worker_id == id {
                Ok(checked)
            } else {
                Err(format!("it said hello as worker {}, not {id}", checked.worker_id))
            }
        };
        (Worker::Forked(Forked::new(pid)), Box::pin(check))
    };
    // An ordinary async task (never spawn_blocking): see `process` on PR_SET_PDEATHSIG.
    tokio::spawn(async move {
        let measure_memory = spec.measure_memory;
        let arena = spec.arena.clone();
        let own = forked.is_some() || spec.is_own_worker();
        let mut slot = Slot {
            id,
            cmds,
            events,
            note: None,
            kill_at: None,
            pid: None,
            measure_memory,
            arena,
            own,
            unanswered: 0,
            shutdown_told: false,
            shutdown_queued: false,
        };
        let started = match forked {
            None => process::spawn(&spec, id, number).map(register),
            Some(answer) => match answer.await {
                Ok(Ok((pid, conn))) => Ok(born(pid, conn)),
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer".to_owned(),
                    };
                    tracing::debug!(id, "the zygote could not fork a worker: {why}");
                    let _ = slot.events.send(Event::ForkFailed { id });
                    match slot.wait_for_exec().await {
                        Some(spec) => process::spawn(&spec, id, number).map(register),
                        None => Err(std::io::Error::other("the run ended before it started")),
                    }
                }
            },
        };
        let exit = match started {
            Ok((mut child, conn)) => slot.run(&mut child, welcome, conn).await,
            Err(err) => {
                let program = spec.command.program.display();
                Exit::NotStarted(format!("cannot start a worker ({program}): {err}"))
            }
        };
        let _ = slot.events.send(Event::Exited { id, exit, note: slot.note });
    });
    cmd
}

struct Slot {
    id: u64,
    cmds: mpsc::UnboundedReceiver<SlotCmd>,
    events: mpsc::UnboundedSender<Event>,
    /// What the slot knows of why the worker ended.
    note: Option<String>,
    /// When the worker is killed if it has not exited by then.
    kill_at: Option<Instant>,
    /// The worker's pid, to read its memory after each unit (`max_worker_memory`).
    pid: Option<u32>,
    measure_memory: bool,
    /// Where batches of items lie for this worker to read, if its pool has an arena.
    arena: Option<Arena>,
    /// The worker is this program's own, which knows every task the coordinator accepts: it
    /// is ready as soon as it is welcomed (see [`Slot::run`]).
    own: bool,
    /// Units sent (or queued to be) that the worker has not answered yet.
    unanswered: usize,
    /// It was told to shut down with units still unanswered: the grace before it is killed
    /// starts with its last answer, not with the message (it answers them first).
    shutdown_told: bool,
    /// `Shutdown` is queued or sent: a second one (the end of the run telling every worker
    /// that is still there, after it was released behind its last units) would find a
    /// worker that may have closed its socket already, fail, and kill it as it exits.
    shutdown_queued: bool,
}

impl Slot {
    /// Waits for the spec to execute a worker with, after the zygote failed to fork one;
    /// `None` if the slot is to end first.
    async fn wait_for_exec(&mut self) -> Option<Arc<SpawnSpec>> {
        loop {
            match self.cmds.recv().await {
                Some(SlotCmd::Exec(spec)) => return Some(spec),
                Some(SlotCmd::Send(_)) => {} // never sent before Ready
                Some(SlotCmd::Shutdown | SlotCmd::Terminate | SlotCmd::Kill) | None => return None,
            }
        }
    }

    async fn run(&mut self, child: &mut Worker, welcome: Welcome, conn: Connecting) -> Exit {
        if let Some(pid) = child.id() {
            let _ = self.events.send(Event::Spawned { id: self.id, pid });
        }
        self.pid = child.id().filter(|_| self.measure_memory);
        let mut conn = match self.connect(child, conn).await {
            Ok(conn) => conn,
            Err(Some(exit)) => return exit,
            Err(None) => return reap_killed(child).await,
        };
        if let Err(err) = conn.writer.send(&ToWorker::Welcome(welcome)).await {
            self.note = Some(format!("handshake failed: {err}"));
            return reap_killed(child).await;
        }
        if self.own {
            // Our own worker can only accept the job (a refusal would be a bug, and it still
            // ends the run): its first units go out now, behind the welcome, instead of a
            // round trip later, after its `Ready`. That wait was a sleep and a wake-up on each
            // side, per worker, on a tiny job's critical path.
            let _ = self.events.send(Event::Ready { id: self.id });
        }
        self.serve(child, *conn).await
    }

    /// Phase 1: waits for this worker's authenticated connection (the listener checked that it
    /// comes from the process this slot started, or it is the worker's own socket pair).
    /// `Err(Some(exit))`: the worker exited; `Err(None)`: it is killed (already: before its
    /// connection is dropped, or a worker whose hello is still unread would see the connection
    /// reset and report it as an error on its way out) and is to be reaped.
    async fn connect(
        &mut self,
        child: &mut Worker,
        mut conn: Connecting,
    ) -> Result<Box<Authenticated>, Option<Exit>> {
        let deadline = tokio::time::sleep(HANDSHAKE_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                auth = &mut conn => {
                    return match auth {
                        Ok(auth) => Ok(Box::new(auth)),
                        Err(why) => {
                            self.note = Some(format!("handshake failed: {why}"));
                            Err(None)
                        }
                    };
                }
                cmd = self.cmds.recv() => match cmd {
                    Some(SlotCmd::Send(_) | SlotCmd::Exec(_)) => {} // never sent before Ready
                    Some(SlotCmd::Shutdown | SlotCmd::Terminate | SlotCmd::Kill) | None => {
                        process::kill_group(child);
                        return Err(None);
                    }
                },
                status = child.wait() => {
                    self.note = Some("exited before its handshake".into());
                    return Err(Some(exited(status)));
                }
                () = &mut deadline => {
                    self.note = Some(format!("no handshake within {HANDSHAKE_TIMEOUT:?}"));
                    process::kill_group(child);
                    return Err(None);
                }
            }
        }
    }

    /// Phase 2: sends what the engine dispatches, forwards what the worker answers, until the
    /// process ends.
    ///
    /// Reading never waits on a write: a worker answers its unit while the next one is being
    /// written to it, and if the slot stopped reading until that write ended, a result and a
    /// unit each larger than a socket buffer would leave both sides waiting on each other for
    /// ever. So a write runs as a future of its own, which owns the writer while it runs and
    /// hands it back; what the engine sends meanwhile waits in `outbox`, in order.
    async fn serve(&mut self, child: &mut Worker, conn: Authenticated) -> Exit {
        let Authenticated { mut reader, writer, .. } = conn;
        let mut idle = Some(writer);
        let mut outbox: VecDeque<Outgoing> = VecDeque::new();
        let mut writing: Option<Writing> = None;
        let mut reading = true;
        loop {
            // The writer is idle exactly when no write is in progress: the next one starts.
            if let (None, Some(mut writer)) = (&writing, idle.take()) {
                match outbox.pop_front() {
                    None => idle = Some(writer),
                    Some(next) => {
                        let arena = self.arena.clone();
                        writing = Some(Box::pin(async move {
                            let sent = match next {
                                Outgoing::Unit(unit) => {
                                    send(&mut writer, unit, arena.as_ref()).await.map(|()| false)
                                }
                                Outgoing::Shutdown => {
                                    writer.send(&ToWorker::Shutdown).await.map(|()| true)
                                }
                            };
                            (writer, sent)
                        }));
                    }
                }
            }
            let kill_at = self.kill_at;
            tokio::select! {
                status = child.wait() => {
                    if reading {
                        self.drain(&mut reader).await;
                    }
                    return exited(status);
                }
                (writer, sent) = async {
                    match writing.as_mut() {
                        Some(write) => write.await,
                        None => std::future::pending().await,
                    }
                }, if writing.is_some() => {
                    writing = None;
                    idle = Some(writer);
                    match sent {
                        Ok(false) => {}
                        // The worker was asked to finish: it is killed if it has not by then,
                        // counted from its last answer if units are still unanswered.
                        Ok(true) if self.unanswered == 0 => {
                            self.kill_by(Instant::now() + SHUTDOWN_GRACE);
                        }
                        Ok(true) => self.shutdown_told = true,
                        Err(err) => {
                            tracing::debug!(id = self.id, "send failed: {err}");
                            process::kill_group(child);
                        }
                    }
                }
                cmd = self.cmds.recv() => match cmd {
                    Some(SlotCmd::Send(unit)) => {
                        self.unanswered += 1;
                        outbox.push_back(Outgoing::Unit(unit));
                    }
                    Some(SlotCmd::Shutdown) if !self.shutdown_queued => {
                        self.shutdown_queued = true;
                        outbox.push_back(Outgoing::Shutdown);
                    }
                    Some(SlotCmd::Shutdown) => {}
                    // Neither waits behind a write in progress.
                    Some(SlotCmd::Terminate) => {
                        process::terminate_group(child);
                        self.kill_by(Instant::now() + TERM_GRACE);
                    }
                    Some(SlotCmd::Kill) | None => process::kill_group(child),
                    Some(SlotCmd::Exec(_)) => {} // only before a worker is started
                },
                frame = reader.next_frame(), if reading => match frame {
                    Ok(Some(body)) => {
                        if let Err(why) = self.forward(body) {
                            tracing::warn!(id = self.id, "worker sent an invalid frame: {why}");
                            self.note = Some(format!("protocol error: {why}"));
                            process::kill_group(child);
                        }
                    }
                    Ok(None) | Err(_) => {
                        // The worker closed its end: it is exiting. Give it a moment, then make
                        // sure.
                        reading = false;
                        self.kill_by(Instant::now() + SHUTDOWN_GRACE);
                    }
                },
                () = sleep_until(kill_at), if kill_at.is_some() => {
                    self.kill_at = None;
                    process::kill_group(child);
                }
            }
        }
    }

    /// Arms (or brings forward) the kill timer.
    fn kill_by(&mut self, at: Instant) {
        self.kill_at = Some(self.kill_at.map_or(at, |t| t.min(at)));
    }

    /// Reads what a worker sent before it exited (a last result, or why it could not run the
    /// job), up to end of file or a short deadline: a descendant may still hold the socket.
    async fn drain(&mut self, reader: &mut FrameReader<Half>) {
        let deadline = Instant::now() + Duration::from_millis(200);
        while let Ok(Ok(Some(body))) = tokio::time::timeout_at(deadline, reader.next_frame()).await
        {
            if self.forward(body).is_err() {
                break;
            }
        }
    }

    /// Turns one frame from the worker into an event for the engine.
    fn forward(&mut self, body: bytes::BytesMut) -> Result<(), String> {
        let id = self.id;
        let decoded = codec::decode_from_worker(body).map_err(|e| e.to_string())?;
        if matches!(decoded, Incoming::Done { .. } | Incoming::Other(FromWorker::Failed(_))) {
            self.unanswered = self.unanswered.saturating_sub(1);
            if self.unanswered == 0 && self.shutdown_told {
                self.kill_by(Instant::now() + SHUTDOWN_GRACE);
            }
        }
        let event = match decoded {
            Incoming::Done { chunk, items, payload } => {
                let rss = self.pid.and_then(process::resident_bytes);
                Event::Done { id, tag: chunk, items, output: payload, rss }
            }
            Incoming::Other(FromWorker::Progress(p)) => Event::Progress { id, tag: p.chunk },
            // Ready since its welcome (see `run`).
            Incoming::Other(FromWorker::Ready) if self.own => return Ok(()),
            Incoming::Other(FromWorker::NoArena(why)) => {
                // Before its `Ready`, so before any batch: all of them go by socket.
                tracing::debug!(id, "the worker cannot use the item arena: {}", why.reason);
                self.arena = None;
                return Ok(());
            }
            Incoming::Other(FromWorker::Ready) => Event::Ready { id },
            Incoming::Other(FromWorker::Failed(failed)) => Event::Failed { id, failed },
            Incoming::Other(FromWorker::Broken(broken)) => {
                self.note = Some(broken.reason.clone());
                Event::Broken { id, reason: broken.reason }
            }
            Incoming::Other(FromWorker::Fatal(fatal)) => {
                self.note = Some(fatal.reason.clone());
                Event::Refused { id, reason: fatal.reason }
            }
            Incoming::Other(other) => return Err(format!("unexpected {other:?}")),
        };
        let _ = self.events.send(event);
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends one unit: a range chunk, where a batch of items lies in the arena, a batch of items
/// in one frame, or one large item as pieces of at most `MAX_BODY_PIECE` bytes straight from
/// the item's memory.
async fn send(
    writer: &mut FrameWriter<Half>,
    unit: Dispatch,
    arena: Option<&Arena>,
) -> Result<(), transport::SendError> {
    if let (Some(arena), Dispatch::Items { tag, first, items }) = (arena, &unit) {
        if let Some(extents) = extents(arena, items) {
            let at = ItemsAt { chunk: *tag, first: *first, count: items.len() as u64, extents };
            return writer.send(&ToWorker::ItemsAt(at)).await;
        }
    }
    match unit {
        Dispatch::Run(chunk) => writer.send(&ToWorker::Run(chunk)).await,
        Dispatch::Items { tag, items, .. } if items.len() == 1 && items.bytes() > LARGE_ITEM => {
            let item = items.items().pop().unwrap_or_default();
            send_pieces(writer, tag, &item).await
        }
        Dispatch::Items { tag, first, items } if worth_vectored(&items) => {
            let head = codec::items_frame_head(tag, first, items.len(), items.bytes())?;
            let lengths: Vec<_> = items
                .segments()
                .iter()
                .map(|s| match s {
                    Segment::Loose(item) => codec::item_length(item.len()),
                    Segment::Framed { .. } => [0; codec::ITEM_OVERHEAD],
                })
                .collect();
            let mut parts = Vec::with_capacity(1 + 3 * items.segments().len());
            parts.push(IoSlice::new(&head));
            for (segment, length) in items.segments().iter().zip(&lengths) {
                match segment {
                    // Items of a run lie framed already: one slice for them all.
                    Segment::Framed { bytes, .. } => parts.push(IoSlice::new(bytes)),
                    Segment::Loose(item) => {
                        parts.push(IoSlice::new(length));
                        parts.extend(item.pieces().filter(|p| !p.is_empty()).map(IoSlice::new));
                    }
                }
            }
            writer.send_vectored(&mut parts).await
        }
        Dispatch::Items { tag, first, items } => {
            writer
                .send_built(|buf| {
                    let mut frame = ItemsFrame::begin(buf, tag, first);
                    for segment in items.segments() {
                        match segment {
                            Segment::Framed { bytes, count } => frame.push_framed(bytes, *count),
                            Segment::Loose(item) => frame.push(item.pieces()),
                        }
                    }
                    frame.finish()
                })
                .await
        }
    }
}

/// Where a batch's runs lie in the arena, in order, if every item of it lies there: runs
/// written into it, sliced by the engine as it likes (a batch of loose items, or of runs left
/// on the heap, goes by socket).
fn extents(arena: &Arena, items: &Batch) -> Option<Vec<(u64, u64)>> {
    items
        .segments()
        .iter()
        .map(|s| match s {
            Segment::Framed { bytes, .. } => arena.extent(bytes),
            Segment::Loose(_) => None,
        })
        .collect()
}

/// Whether a batch is better written straight from its items' memory (large pieces: fetched
/// bodies, or a run's items, framed already in one buffer) than copied into one frame buffer
/// (many small pieces: lines, jobs, where one copy is cheaper than a slice per piece).
fn worth_vectored(items: &Batch) -> bool {
    const MIN_PIECE: usize = 4 << 10;
    let slices: usize = items
        .segments()
        .iter()
        .map(|s| match s {
            Segment::Framed { .. } => 1,
            Segment::Loose(item) => 1 + item.pieces().count(),
        })
        .sum();
    items.bytes() >= 64 << 10 && items.bytes() >= slices * MIN_PIECE
}

/// Sends a large item as `Body` frames of `MAX_BODY_PIECE` bytes (the last may be shorter,
/// and is marked), each written straight from the pieces the item arrived in (often a few KiB
/// each, as read from the network) with vectored writes: no copy.
async fn send_pieces(
    writer: &mut FrameWriter<Half>,
    tag: u64,
    item: &super::Item,
) -> Result<(), transport::SendError> {
    let mut pieces = item.pieces().flat_map(|p| p.chunks(MAX_BODY_PIECE));
    let mut carry: &[u8] = &[];
    let mut left = item.len();
    while left > 0 {
        let size = left.min(MAX_BODY_PIECE);
        left -= size;
        let last = left == 0;
        let head = codec::body_piece_header(tag, last, size)?;
        let mut parts = vec![IoSlice::new(&head)];
        let mut need = size;
        while need > 0 {
            if carry.is_empty() {
                carry = pieces
                    .next()
                    .ok_or(codec::CodecError::Records("an item is shorter than its length"))?;
            }
            let take = need.min(carry.len());
            parts.push(IoSlice::new(&carry[..take]));
            carry = &carry[take..];
            need -= take;
        }
        writer.send_vectored(&mut parts).await?;
    }
    Ok(())
}

fn exited(status: std::io::Result<std::process::ExitStatus>) -> Exit {
    match status {
        Ok(status) => Exit::from_status(status),
        Err(err) => Exit::Unknown(err.to_string()),
    }
}

async fn reap_killed(child: &mut Worker) -> Exit {
    process::kill_group(child);
    exited(child.wait().await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::held::Held;
    use crate::pool::{Item, RunBuilder};
    use bytes::Bytes;

    fn item(pieces: &[usize]) -> Item {
        Item::from_pieces(pieces.iter().map(|&n| Bytes::from(vec![7u8; n])).collect())
    }

    fn batch(items: Vec<Item>) -> Batch {
        let n = items.len() as u64;
        let mut held = Held::default();
        held.push_items(items);
        held.batch(0, n)
    }

    #[test]
    fn large_pieces_are_written_in_place_and_small_ones_copied() {
        // Fetched bodies: 100 KiB in pieces of 16 KiB or more.
        let bodies = batch((0..10).map(|_| item(&[16 << 10, 40 << 10, 44 << 10])).collect());
        assert!(worth_vectored(&bodies));
        // Lines and jobs: thousands of short items; one copy beats a slice per piece.
        let lines = batch((0..4096).map(|_| item(&[80])).collect());
        assert!(!worth_vectored(&lines));
        // A batch too small to matter, and large items cut into tiny pieces.
        assert!(!worth_vectored(&batch(vec![item(&[1000])])));
        assert!(!worth_vectored(&batch(vec![item(&[100; 1000])])));
        // The same short items framed in a run: one slice, written as it lies.
        let mut run = RunBuilder::default();
        for _ in 0..4096 {
            run.push_bytes(&[7; 80]);
        }
        let mut held = Held::default();
        held.push_run(run.finish());
        assert!(worth_vectored(&held.batch(0, 4096)));
    }
}
