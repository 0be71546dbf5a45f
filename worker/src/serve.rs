//! The worker loop: one chunk at a time, each answered with one frame.

use crate::bytes::{ByteState, ByteTask};
use crate::connection::{self, ConnError, Session};
use crate::exit;
use crate::registry::{ChunkOutput, ChunkTask, Registry};
use powerpool_shared::{codec, ChunkFailed, Fatal, FromWorker, Input, RunChunk, ToWorker};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

/// Connects, handshakes and serves chunks until told to stop; returns the exit status.
pub async fn run(mut config: connection::Config, mut registry: Registry) -> u8 {
    install_panic_capture();
    let config_pid = config.coordinator_pid;
    let mut session = match connection::handshake(&mut config).await {
        Ok(session) => session,
        Err(err @ (ConnError::Rejected(_) | ConnError::Untrusted(_))) => {
            tracing::error!("{err}");
            return exit::REFUSED;
        }
        Err(err) => {
            // A coordinator that is gone (it exited while this worker started) is no error
            // worth a line: there is no one left to serve.
            if connection::parent_is(config_pid) {
                tracing::error!("{err}");
            } else {
                tracing::debug!("{err} (the coordinator is gone)");
            }
            return exit::PROTOCOL;
        }
    };
    if registry.get(&session.task).is_none() {
        registry.register_fault_task(&session.task);
    }
    let served = match crate::commands::serve(&mut session, &config).await {
        Some(served) => served,
        None => {
            connection::yield_to_coordinator();
            serve(session, &registry).await
        }
    };
    match served {
        Ok(code) => code,
        Err(err) => {
            // The coordinator going away mid-run is how a run ends when it is cancelled.
            tracing::debug!("connection ended: {err}");
            exit::PROTOCOL
        }
    }
}

async fn serve(mut session: Session, registry: &Registry) -> Result<u8, ConnError> {
    if session.task == crate::typed::TYPED_JOB && session.input == Input::Items {
        return crate::serve_typed::serve(session).await;
    }
    let job = match session.input {
        Input::Items => registry.get_bytes(&session.task).map(Job::Items),
        Input::Range(_) => registry.get(&session.task).map(Job::Range),
        Input::Jobs(_) | Input::Lines(_) => None,
    };
    let Some(job) = job else {
        let known: Vec<&str> = registry.names().collect();
        let kind = if session.input == Input::Items { "byte" } else { "integer" };
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
    // An items job's answer is built here, after room for the frame header, and reused.
    let mut records = Vec::new();
    // The large item being received in pieces: its tag, state and length so far.
    let mut body: BodyInProgress = None;
    while let Some(frame) = session.reader.next_frame().await? {
        // Items and pieces are read in place, without copying their bytes into a message.
        if let Job::Items(task) = &job {
            if let Some((tag, first, items)) = codec::items_batch(&frame) {
                let answer = compute_items(*task, tag, first, &items, &mut records);
                send_items_answer(&mut session, answer, tag, &mut records).await?;
                continue;
            }
            if let Some((tag, last, bytes)) = codec::body_piece(&frame) {
                on_piece(&mut session, *task, &mut body, tag, last, bytes).await?;
                continue;
            }
        }
        match (codec::decode::<ToWorker>(&frame)?, &job) {
            (ToWorker::Run(run), Job::Range(task)) => {
                match compute(*task, run, &session, &mut out) {
                    Ok(items) => {
                        codec::finish_done_frame(out.frame_mut(), run.chunk, items)?;
                        session.writer.send_encoded(out.frame_mut()).await?;
                    }
                    Err(failed) => session.writer.send(&FromWorker::Failed(failed)).await?,
                }
            }
            (ToWorker::Shutdown, _) => return Ok(exit::OK),
            (other, _) => return Err(ConnError::Unexpected(format!("{other:?}"))),
        }
    }
    Ok(exit::OK)
}

/// What this connection computes.
enum Job<'a> {
    Range(&'a dyn ChunkTask),
    Items(&'a dyn ByteTask),
}

/// Computes each item of a batch into `records` (after room for the frame header): one record
/// per item. A panic fails the batch at that item, whose index the failure names.
fn compute_items(
    task: &dyn ByteTask,
    tag: u64,
    first: u64,
    items: &[&[u8]],
    records: &mut Vec<u8>,
) -> Result<u64, ChunkFailed> {
    records.clear();
    records.resize(codec::DONE_PREFIX, 0);
    for (i, item) in items.iter().enumerate() {
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut state = task.start();
            state.update(item);
            state.finish()
        }));
        match result {
            Ok(text) => codec::push_record(records, text.as_bytes()),
            Err(_) => {
                let message = take_panic_message().unwrap_or_else(|| "panicked".to_owned());
                let index = first.saturating_add(i as u64);
                return Err(ChunkFailed {
                    chunk: tag,
                    item: i64::try_from(index).ok(),
                    reason: format!("task panicked: {message}"),
                });
            }
        }
    }
    Ok(items.len() as u64)
}

/// Sends an items unit's answer: its records as one `Done`, or its failure.
async fn send_items_answer(
    session: &mut Session,
    answer: Result<u64, ChunkFailed>,
    tag: u64,
    records: &mut [u8],
) -> Result<(), ConnError> {
    match answer {
        Ok(count) => {
            codec::finish_done_frame(records, tag, count)?;
            session.writer.send_encoded(records).await?;
        }
        Err(failed) => session.writer.send(&FromWorker::Failed(failed)).await?,
    }
    Ok(())
}

/// The large item being received: its tag, the task's state.
type BodyInProgress = Option<(u64, Box<dyn ByteState>)>;

/// Feeds one piece of the large item `tag` to its task; after the last piece, sends its
/// result as one record (or the failure, if the task panicked; the item's remaining pieces
/// are then skipped).
async fn on_piece(
    session: &mut Session,
    task: &dyn ByteTask,
    body: &mut BodyInProgress,
    tag: u64,
    last: bool,
    bytes: &[u8],
) -> Result<(), ConnError> {
    if body.as_ref().is_some_and(|(t, _)| *t != tag) {
        return Err(ConnError::Unexpected("an item began before the last one ended".into()));
    }
    let (tag, mut state) = body.take().unwrap_or_else(|| (tag, task.start()));
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
        *body = Some((tag, state));
        return Ok(());
    }
    match panic::catch_unwind(AssertUnwindSafe(|| state.finish())) {
        Ok(text) => {
            let mut payload = Vec::with_capacity(4 + text.len());
            codec::push_record(&mut payload, text.as_bytes());
            let mut frame = bytes::BytesMut::new();
            codec::write_done_frame(tag, 1, &payload, &mut frame)?;
            session.writer.send_encoded(&frame).await?;
        }
        Err(_) => session.writer.send(&FromWorker::Failed(failure(take_panic_message()))).await?,
    }
    Ok(())
}

/// After a failed item, reads and drops its remaining pieces.
async fn skip_until_last(session: &mut Session, tag: u64, mut last: bool) -> Result<(), ConnError> {
    while !last {
        let Some(frame) = session.reader.next_frame().await? else { return Ok(()) };
        match codec::body_piece(&frame) {
            Some((t, l, _)) if t == tag => last = l,
            _ => return Err(ConnError::Unexpected("not the rest of a failed item".into())),
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
    let Input::Range(format) = &session.input else {
        return Err(fail(None, "a range chunk in an items job".to_owned()));
    };
    let items = i128::from(run.end) - i128::from(run.start);
    let format = *format;
    if items < 0 || items > i128::from(format.max_chunk_items()) {
        return Err(fail(None, format!("invalid chunk range {}..{}", run.start, run.end)));
    }
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        task.run(run.start, run.end, format, out);
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
/// decides what the user sees. With `RUST_BACKTRACE` set, the backtrace comes with it.
fn install_panic_capture() {
    let backtraces = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    panic::set_hook(Box::new(move |info| {
        let mut text = crate::diag::panic_text(info);
        if backtraces {
            text.push_str(&format!("\nbacktrace:\n{}", std::backtrace::Backtrace::force_capture()));
        }
        if let Ok(mut slot) = LAST_PANIC.lock() {
            *slot = Some(text);
        }
    }));
}

pub(crate) fn take_panic_message() -> Option<String> {
    LAST_PANIC.lock().ok().and_then(|mut slot| slot.take())
}
