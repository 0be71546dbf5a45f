//! The worker loop: one chunk at a time, each answered with one frame.

use crate::connection::{self, ConnError, Session};
use crate::exit;
use crate::registry::{ChunkOutput, ChunkTask, Registry};
use powerpool_shared::{codec, ChunkFailed, Fatal, FromWorker, RunChunk, ToWorker};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

/// Connects, handshakes and serves chunks until told to stop; returns the exit status.
pub async fn run(config: connection::Config, mut registry: Registry) -> u8 {
    install_panic_capture();
    let session = match connection::handshake(&config).await {
        Ok(session) => session,
        Err(err @ ConnError::Rejected(_)) => {
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
    let Some(task) = registry.get(&session.task) else {
        let known: Vec<&str> = registry.names().collect();
        let reason =
            format!("unknown task '{}' (this worker has: {})", session.task, known.join(", "));
        session.writer.send(&FromWorker::Fatal(Fatal { reason })).await?;
        return Ok(exit::REFUSED);
    };
    session.writer.send(&FromWorker::Ready).await?;
    let mut out = ChunkOutput::default();
    while let Some(frame) = session.reader.next_frame().await? {
        match codec::decode::<ToWorker>(&frame)? {
            ToWorker::Run(run) => match compute(task, run, &session, &mut out) {
                Ok(items) => {
                    codec::finish_done_frame(out.frame_mut(), run.chunk, items)?;
                    session.writer.send_encoded(out.frame_mut()).await?;
                }
                Err(failed) => session.writer.send(&FromWorker::Failed(failed)).await?,
            },
            ToWorker::Shutdown => return Ok(exit::OK),
            other => return Err(ConnError::Unexpected(format!("{other:?}"))),
        }
    }
    Ok(exit::OK)
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
