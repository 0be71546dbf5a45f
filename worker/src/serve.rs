//! The worker loop: one chunk at a time, each answered with one frame.

use crate::bytes::{ByteState, ByteTask};
use crate::connection::{self, ConnError, Session};
use crate::exit;
use crate::registry::{ChunkOutput, ChunkTask, Registry};
use powerpool_shared::{codec, ChunkFailed, Fatal, Format, FromWorker, RunChunk, ToWorker};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

/// Connects, handshakes and serves chunks until told to stop; returns the exit status.
pub async fn run(config: connection::Config, mut registry: Registry) -> u8 {
    install_panic_capture();
    let session = match connection::handshake(&config).await {
        Ok(session) => session,
        Err(err @ (ConnError::Rejected(_) | ConnError::Untrusted(_))) => {
            tracing::error!("{err}");
            return exit::REFUSED;
        }
        Err(err) => {
            tracing::error!("{err}");
            return exit::PROTOCOL;
        }
    };
    if registry.get(&session.task).is_none() {
        registry.register_fault_task(&session.task);
    }
    match serve(session, &registry).await {
        Ok(code) => code,
        Err(err) => {
            // The coordinator going away mid-run is how a run ends when it is cancelled.
            tracing::debug!("connection ended: {err}");
            exit::PROTOCOL
        }
    }
}

async fn serve(mut session: Session, registry: &Registry) -> Result<u8, ConnError> {
    let job = if session.format == Format::Text {
        registry.get_bytes(&session.task).map(Job::Bytes)
    } else {
        registry.get(&session.task).map(Job::Int)
    };
    let Some(job) = job else {
        let known: Vec<&str> = registry.names().collect();
        let kind = if session.format == Format::Text { "byte" } else { "integer" };
        let reason = format!(
            "unknown {kind} task '{}' (this worker has: {})",
            session.task,
            known.join(", ")
        );
        session.writer.send(&FromWorker::Fatal(Fatal { reason })).await?;
        return Ok(exit::REFUSED);
    };
    session.writer.send(&FromWorker::Ready).await?;
    let mut out = ChunkOutput::default();
    // The body being received, for a byte task: its tag, state and length so far.
    let mut body: BodyInProgress = None;
    while let Some(frame) = session.reader.next_frame().await? {
        // Body pieces are read in place, without copying their bytes into a message.
        if let (Job::Bytes(task), Some((tag, last, bytes))) = (&job, codec::body_piece(&frame)) {
            on_piece(&mut session, *task, &mut body, tag, last, bytes).await?;
            continue;
        }
        match (codec::decode::<ToWorker>(&frame)?, &job) {
            (ToWorker::Run(run), Job::Int(task)) => match compute(*task, run, &session, &mut out) {
                Ok(items) => {
                    codec::finish_done_frame(out.frame_mut(), run.chunk, items)?;
                    session.writer.send_encoded(out.frame_mut()).await?;
                }
                Err(failed) => session.writer.send(&FromWorker::Failed(failed)).await?,
            },
            (ToWorker::Body(piece), Job::Bytes(task)) => {
                on_piece(&mut session, *task, &mut body, piece.chunk, piece.last, &piece.bytes)
                    .await?;
            }
            (ToWorker::Shutdown, _) => return Ok(exit::OK),
            (other, _) => return Err(ConnError::Unexpected(format!("{other:?}"))),
        }
    }
    Ok(exit::OK)
}

/// The body being received: its tag, the task's state and the length so far.
type BodyInProgress = Option<(u64, Box<dyn ByteState>, u64)>;

/// Feeds one piece of body `tag` to its task; after the last piece, sends the result (or the
/// failure, if the task panicked; the body's remaining pieces are then skipped).
async fn on_piece(
    session: &mut Session,
    task: &dyn ByteTask,
    body: &mut BodyInProgress,
    tag: u64,
    last: bool,
    bytes: &[u8],
) -> Result<(), ConnError> {
    if body.as_ref().is_some_and(|(t, _, _)| *t != tag) {
        return Err(ConnError::Unexpected("a body began before the last ended".into()));
    }
    let (tag, mut state, len) = body.take().unwrap_or_else(|| (tag, task.start(), 0));
    let len = len + bytes.len() as u64;
    let fed = panic::catch_unwind(AssertUnwindSafe(|| {
        state.update(bytes);
        state
    }));
    let failure = |reason: Option<String>| ChunkFailed {
        chunk: tag,
        item: None,
        reason: format!("task panicked: {}", reason.unwrap_or_else(|| "panicked".into())),
    };
    let Ok(state) = fed else {
        session.writer.send(&FromWorker::Failed(failure(take_panic_message()))).await?;
        return skip_until_last(session, tag, last).await;
    };
    if !last {
        *body = Some((tag, state, len));
        return Ok(());
    }
    match panic::catch_unwind(AssertUnwindSafe(|| state.finish())) {
        Ok(text) => {
            let mut frame = bytes::BytesMut::new();
            codec::write_done_frame(tag, len, text.as_bytes(), &mut frame)?;
            session.writer.send_encoded(&frame).await?;
        }
        Err(_) => session.writer.send(&FromWorker::Failed(failure(take_panic_message()))).await?,
    }
    Ok(())
}

/// What this connection computes.
enum Job<'a> {
    Int(&'a dyn ChunkTask),
    Bytes(&'a dyn ByteTask),
}

/// After a failed body, reads and drops its remaining pieces.
async fn skip_until_last(session: &mut Session, tag: u64, mut last: bool) -> Result<(), ConnError> {
    while !last {
        let Some(frame) = session.reader.next_frame().await? else { return Ok(()) };
        match codec::body_piece(&frame) {
            Some((t, l, _)) if t == tag => last = l,
            _ => return Err(ConnError::Unexpected("not the rest of a failed body".into())),
        }
    }
    Ok(())
}

/// Runs one chunk, turning a bad range or a panic into a failure report.
fn compute(
    task: &dyn ChunkTask,
    run: RunChunk,
    session: &Session,
    out: &mut ChunkOutput,
) -> Result<u64, ChunkFailed> {
    let fail = |item, reason| ChunkFailed { chunk: run.chunk, item, reason };
    let items = i128::from(run.end) - i128::from(run.start);
    if items < 0 || items > i128::from(session.format.max_chunk_items()) {
        return Err(fail(None, format!("invalid chunk range {}..{}", run.start, run.end)));
    }
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        task.run(run.start, run.end, session.format, out);
    }));
    match result {
        Ok(()) => Ok(items as u64),
        Err(_) => {
            let message = take_panic_message().unwrap_or_else(|| "panicked".to_owned());
            Err(fail(Some(out.current()), format!("task panicked: {message}")))
        }
    }
}

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Keeps a task's panic message for the failure report instead of printing it: the coordinator
/// decides what the user sees.
fn install_panic_capture() {
    panic::set_hook(Box::new(|info| {
        let text = crate::diag::panic_text(info);
        if let Ok(mut slot) = LAST_PANIC.lock() {
            *slot = Some(text);
        }
    }));
}

fn take_panic_message() -> Option<String> {
    LAST_PANIC.lock().ok().and_then(|mut slot| slot.take())
}
