//! One task per worker process: it owns the process and its connection, and talks to the
//! supervisor only by messages. One slot task lives exactly as long as one process; a
//! replacement is a new slot with a new id.

use super::listener::{Authenticated, HANDSHAKE_TIMEOUT};
use super::process::{self, Exit, SpawnSpec};
use bytes::Bytes;
use powerpool_shared::codec::{self, Incoming};
use powerpool_shared::{ChunkFailed, FromWorker, RunChunk, ToWorker, Welcome, MAX_BODY_PIECE};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a worker told to shut down may take before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a worker that overran `--task-timeout` has between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(500);

/// What the supervisor tells a slot.
#[derive(Debug)]
pub enum SlotCmd {
    /// The worker's authenticated connection.
    Attach(Box<Authenticated>),
    /// Compute this chunk.
    Run(RunChunk),
    /// Compute this body (a byte task), sent in pieces of at most `MAX_BODY_PIECE` bytes;
    /// `tag` names it in the answer, `what` in messages.
    Body { tag: u64, body: Bytes, what: String },
    /// Finish: the worker exits by itself, or is killed after a grace period.
    Shutdown,
    /// End the worker at once.
    Kill,
}

/// What a slot tells the supervisor. Every slot ends with exactly one `Exited`, after all its
/// other events.
#[derive(Debug)]
pub enum SlotEvent {
    Spawned {
        id: u64,
        pid: u32,
    },
    Ready {
        id: u64,
    },
    Done {
        id: u64,
        chunk: u64,
        items: u64,
        output: Bytes,
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
    Exited {
        id: u64,
        exit: Exit,
        note: Option<String>,
        /// Ended because a chunk overran `--task-timeout`.
        timed_out: bool,
    },
}

/// How a slot's worker is run.
#[derive(Debug, Clone, Copy)]
pub struct SlotLimits {
    /// The longest one chunk may take (`--task-timeout`).
    pub task_timeout: Option<Duration>,
}

/// The supervisor's handle on a slot.
#[derive(Debug)]
pub struct Slot {
    pub cmd: mpsc::UnboundedSender<SlotCmd>,
}

/// Starts a slot task: spawns the worker process and serves it.
pub fn start(
    id: u64,
    spec: Arc<SpawnSpec>,
    welcome: Welcome,
    limits: SlotLimits,
    events: mpsc::UnboundedSender<SlotEvent>,
) -> Slot {
    let (cmd, cmds) = mpsc::unbounded_channel();
    // An ordinary async task (never spawn_blocking): see `process` on PR_SET_PDEATHSIG.
    tokio::spawn(async move {
        let mut ended = Ended { note: None, timed_out: false };
        let exit = match process::spawn(&spec, id) {
            Ok(child) => run(id, child, welcome, limits, cmds, &events, &mut ended).await,
            Err(err) => {
                let program = spec.command.program.display();
                Exit::NotStarted(format!("cannot start a worker ({program}): {err}"))
            }
        };
        let Ended { note, timed_out } = ended;
        let _ = events.send(SlotEvent::Exited { id, exit, note, timed_out });
    });
    Slot { cmd }
}

/// Why a worker ended, as far as its slot knows.
struct Ended {
    note: Option<String>,
    timed_out: bool,
}

async fn run(
    id: u64,
    mut child: Child,
    welcome: Welcome,
    limits: SlotLimits,
    mut cmds: mpsc::UnboundedReceiver<SlotCmd>,
    events: &mpsc::UnboundedSender<SlotEvent>,
    ended: &mut Ended,
) -> Exit {
    if let Some(pid) = child.id() {
        let _ = events.send(SlotEvent::Spawned { id, pid });
    }
    // Phase 1: wait for the listener to route this worker's authenticated connection.
    let handshake = tokio::time::sleep(HANDSHAKE_TIMEOUT);
    tokio::pin!(handshake);
    let mut conn = loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(SlotCmd::Attach(conn)) => {
                    if process::spawned(&child, conn.peer_pid) {
                        break conn;
                    }
                    tracing::warn!(
                        "refused a connection for worker id {id} from pid {}: not a process this \
                         coordinator started",
                        conn.peer_pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
                    );
                }
                Some(SlotCmd::Run(_) | SlotCmd::Body { .. }) => {} // never sent before Ready
                Some(SlotCmd::Shutdown | SlotCmd::Kill) | None => {
                    return reap_killed(&mut child).await;
                }
            },
            status = child.wait() => {
                ended.note = Some("exited before its handshake".into());
                return exited(status);
            }
            () = &mut handshake => {
                ended.note = Some(format!("no handshake within {HANDSHAKE_TIMEOUT:?}"));
                return reap_killed(&mut child).await;
            }
        }
    };
    // Phase 2: the job, then chunks until the end.
    if let Err(err) = conn.writer.send(&ToWorker::Welcome(welcome)).await {
        ended.note = Some(format!("handshake failed: {err}"));
        return reap_killed(&mut child).await;
    }
    let mut reading = true;
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    let mut grace_armed = false;
    // Chunks sent and not yet answered, oldest first: the worker computes them in that order,
    // so the oldest is the one running, and the deadline is its.
    let mut running: VecDeque<(u64, String)> = VecDeque::new();
    let deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(deadline);
    let mut deadline_armed = false;
    loop {
        tokio::select! {
            status = child.wait() => {
                if reading {
                    drain(id, &mut conn, events, &mut ended.note).await;
                }
                return exited(status);
            }
            cmd = cmds.recv() => match cmd {
                Some(SlotCmd::Run(chunk)) => {
                    if let Err(err) = conn.writer.send(&ToWorker::Run(chunk)).await {
                        tracing::debug!(id, "send failed: {err}");
                        process::kill_group(&mut child);
                    }
                    running.push_back((chunk.chunk, format!("inputs {}..{}", chunk.start, chunk.end)));
                    if let (1, Some(limit)) = (running.len(), limits.task_timeout) {
                        deadline.as_mut().reset(Instant::now() + limit);
                        deadline_armed = true;
                    }
                }
                Some(SlotCmd::Body { tag, body, what }) => {
                    if let Err(err) = send_body(&mut conn, tag, &body).await {
                        tracing::debug!(id, "send failed: {err}");
                        process::kill_group(&mut child);
                    }
                    running.push_back((tag, what));
                    if let (1, Some(limit)) = (running.len(), limits.task_timeout) {
                        deadline.as_mut().reset(Instant::now() + limit);
                        deadline_armed = true;
                    }
                }
                Some(SlotCmd::Shutdown) => {
                    let _ = conn.writer.send(&ToWorker::Shutdown).await;
                    grace.as_mut().reset(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                    grace_armed = true;
                }
                Some(SlotCmd::Kill) | None => process::kill_group(&mut child),
                Some(SlotCmd::Attach(extra)) => tracing::warn!(
                    "dropped a second connection for worker id {id} (from pid {})",
                    extra.peer_pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
                ),
            },
            frame = conn.reader.next_frame(), if reading => match frame {
                Ok(Some(body)) => match forward(id, body, events, &mut ended.note) {
                    Ok(Some(tag)) => {
                        if running.front().is_some_and(|(t, _)| *t == tag) {
                            running.pop_front();
                        }
                        deadline_armed = false;
                        if let (false, Some(limit)) = (running.is_empty(), limits.task_timeout) {
                            deadline.as_mut().reset(Instant::now() + limit);
                            deadline_armed = true;
                        }
                    }
                    Ok(None) => {}
                    Err(why) => {
                        tracing::warn!(id, "worker sent an invalid frame: {why}");
                        ended.note = Some(format!("protocol error: {why}"));
                        process::kill_group(&mut child);
                    }
                },
                Ok(None) | Err(_) => {
                    // The worker closed its end: it is exiting. Give it a moment, then make sure.
                    reading = false;
                    if !grace_armed {
                        grace.as_mut().reset(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                        grace_armed = true;
                    }
                }
            },
            () = &mut grace, if grace_armed => {
                grace_armed = false;
                process::kill_group(&mut child);
            }
            () = &mut deadline, if deadline_armed => {
                deadline_armed = false;
                let limit = limits.task_timeout.unwrap_or_default();
                if let Some((_, what)) = running.front() {
                    ended.note =
                        Some(format!("timed out: {what} took longer than --task-timeout {limit:?}"));
                }
                ended.timed_out = true;
                process::terminate_group(&child);
                grace.as_mut().reset(Instant::now() + TERM_GRACE);
                grace_armed = true;
            }
        }
    }
}

/// Sends a body as `Body` frames of at most `MAX_BODY_PIECE` bytes, the last one marked (an
/// empty body is one empty last piece).
async fn send_body(
    conn: &mut Authenticated,
    tag: u64,
    body: &Bytes,
) -> Result<(), powerpool_shared::transport::SendError> {
    let mut pieces = body.chunks(MAX_BODY_PIECE).peekable();
    if pieces.peek().is_none() {
        let head = codec::body_piece_header(tag, true, 0)?;
        return conn.writer.send_parts(&head, &[]).await;
    }
    // Each piece goes out straight from the fetched body: no copy into a message.
    while let Some(piece) = pieces.next() {
        let head = codec::body_piece_header(tag, pieces.peek().is_none(), piece.len())?;
        conn.writer.send_parts(&head, piece).await?;
    }
    Ok(())
}

/// Reads what a worker sent before it exited (a last result, or why it could not run the job),
/// up to end of file or a short deadline: a descendant may still hold the socket open.
async fn drain(
    id: u64,
    conn: &mut Authenticated,
    events: &mpsc::UnboundedSender<SlotEvent>,
    note: &mut Option<String>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
    while let Ok(Ok(Some(body))) = tokio::time::timeout_at(deadline, conn.reader.next_frame()).await
    {
        if forward(id, body, events, note).is_err() {
            break;
        }
    }
}

/// Turns one frame from the worker into an event for the supervisor; returns the tag of the
/// chunk it answers, if it answers one.
fn forward(
    id: u64,
    body: bytes::BytesMut,
    events: &mpsc::UnboundedSender<SlotEvent>,
    note: &mut Option<String>,
) -> Result<Option<u64>, String> {
    let mut answered = None;
    let event = match codec::decode_from_worker(body).map_err(|e| e.to_string())? {
        Incoming::Done { chunk, items, payload } => {
            answered = Some(chunk);
            SlotEvent::Done { id, chunk, items, output: payload }
        }
        Incoming::Other(FromWorker::Ready) => SlotEvent::Ready { id },
        Incoming::Other(FromWorker::Failed(failed)) => {
            answered = Some(failed.chunk);
            SlotEvent::Failed { id, failed }
        }
        Incoming::Other(FromWorker::Fatal(fatal)) => {
            *note = Some(fatal.reason.clone());
            SlotEvent::Refused { id, reason: fatal.reason }
        }
        Incoming::Other(other) => return Err(format!("unexpected {other:?}")),
    };
    let _ = events.send(event);
    Ok(answered)
}

fn exited(status: std::io::Result<std::process::ExitStatus>) -> Exit {
    match status {
        Ok(status) => Exit::from_status(status),
        Err(err) => Exit::Unknown(err.to_string()),
    }
}

async fn reap_killed(child: &mut Child) -> Exit {
    process::kill_group(child);
    exited(child.wait().await)
}
