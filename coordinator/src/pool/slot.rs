//! One task per worker process: it owns the process and its connection, and talks to the
//! supervisor only by messages. One slot task lives exactly as long as one process; a
//! replacement is a new slot with a new id.

use super::listener::{Authenticated, HANDSHAKE_TIMEOUT};
use super::process::{self, Exit, SpawnSpec};
use bytes::Bytes;
use powerpool_shared::codec::{self, Incoming};
use powerpool_shared::{ChunkFailed, FromWorker, RunChunk, ToWorker, Welcome};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Child;
use tokio::sync::mpsc;

/// How long a worker told to shut down may take before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the supervisor tells a slot.
#[derive(Debug)]
pub enum SlotCmd {
    /// The worker's authenticated connection.
    Attach(Box<Authenticated>),
    /// Compute this chunk.
    Run(RunChunk),
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
    },
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
    events: mpsc::UnboundedSender<SlotEvent>,
) -> Slot {
    let (cmd, cmds) = mpsc::unbounded_channel();
    // An ordinary async task (never spawn_blocking): see `process` on PR_SET_PDEATHSIG.
    tokio::spawn(async move {
        let (exit, note) = match process::spawn(&spec, id) {
            Ok(child) => run(id, child, welcome, cmds, &events).await,
            Err(err) => (
                Exit::Unknown("never started".into()),
                Some(format!("cannot start {}: {err}", spec.command.program.display())),
            ),
        };
        let _ = events.send(SlotEvent::Exited { id, exit, note });
    });
    Slot { cmd }
}

async fn run(
    id: u64,
    mut child: Child,
    welcome: Welcome,
    mut cmds: mpsc::UnboundedReceiver<SlotCmd>,
    events: &mpsc::UnboundedSender<SlotEvent>,
) -> (Exit, Option<String>) {
    if let Some(pid) = child.id() {
        let _ = events.send(SlotEvent::Spawned { id, pid });
    }
    // Phase 1: wait for the listener to route this worker's authenticated connection.
    let handshake = tokio::time::sleep(HANDSHAKE_TIMEOUT);
    tokio::pin!(handshake);
    let mut conn = loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(SlotCmd::Attach(conn)) => break conn,
                Some(SlotCmd::Run(_)) => {} // never sent before Ready
                Some(SlotCmd::Shutdown | SlotCmd::Kill) | None => {
                    return (reap_killed(&mut child).await, None);
                }
            },
            status = child.wait() => return (exited(status), Some("exited before its handshake".into())),
            () = &mut handshake => {
                let why = format!("no handshake within {HANDSHAKE_TIMEOUT:?}");
                return (reap_killed(&mut child).await, Some(why));
            }
        }
    };
    // Phase 2: the job, then chunks until the end.
    if let Err(err) = conn.writer.send(&ToWorker::Welcome(welcome)).await {
        return (reap_killed(&mut child).await, Some(format!("handshake failed: {err}")));
    }
    let mut note: Option<String> = None;
    let mut reading = true;
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    let mut grace_armed = false;
    loop {
        tokio::select! {
            status = child.wait() => {
                if reading {
                    drain(id, &mut conn, events, &mut note).await;
                }
                return (exited(status), note);
            }
            cmd = cmds.recv() => match cmd {
                Some(SlotCmd::Run(chunk)) => {
                    if let Err(err) = conn.writer.send(&ToWorker::Run(chunk)).await {
                        tracing::debug!(id, "send failed: {err}");
                        process::kill_group(&mut child);
                    }
                }
                Some(SlotCmd::Shutdown) => {
                    let _ = conn.writer.send(&ToWorker::Shutdown).await;
                    grace.as_mut().reset(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                    grace_armed = true;
                }
                Some(SlotCmd::Kill) | None => process::kill_group(&mut child),
                Some(SlotCmd::Attach(_)) => {} // a second connection for one slot: dropped
            },
            frame = conn.reader.next_frame(), if reading => match frame {
                Ok(Some(body)) => {
                    if let Err(why) = forward(id, body, events, &mut note) {
                        tracing::warn!(id, "worker sent an invalid frame: {why}");
                        note = Some(format!("protocol error: {why}"));
                        process::kill_group(&mut child);
                    }
                }
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
        }
    }
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

/// Turns one frame from the worker into an event for the supervisor.
fn forward(
    id: u64,
    body: bytes::BytesMut,
    events: &mpsc::UnboundedSender<SlotEvent>,
    note: &mut Option<String>,
) -> Result<(), String> {
    let event = match codec::decode_from_worker(body).map_err(|e| e.to_string())? {
        Incoming::Done { chunk, items, payload } => {
            SlotEvent::Done { id, chunk, items, output: payload }
        }
        Incoming::Other(FromWorker::Ready) => SlotEvent::Ready { id },
        Incoming::Other(FromWorker::Failed(failed)) => SlotEvent::Failed { id, failed },
        Incoming::Other(FromWorker::Fatal(fatal)) => {
            *note = Some(fatal.reason.clone());
            SlotEvent::Refused { id, reason: fatal.reason }
        }
        Incoming::Other(other) => return Err(format!("unexpected {other:?}")),
    };
    let _ = events.send(event);
    Ok(())
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
