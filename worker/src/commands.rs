//! The worker loop for command jobs: `run`'s jobs ([`Input::Jobs`]) and `map --exec`'s lines
//! ([`Input::Lines`]). Before any child starts, [`child::guard`] makes sure no child outlives
//! this worker, however the coordinator ends.

use crate::child;
use crate::connection::{self, ConnError, Session};
use crate::exit;
use crate::jobs::Runner;
use crate::lines::{LineWorker, UnitEnd};
use powerpool_shared::jobs::{Captured, JobOutcome, JobSpec, JobStatus, LineSpec};
use powerpool_shared::{codec, Fatal, FromWorker, Input, ToWorker};
use std::time::Duration;

/// The longest line or command line a worker takes: an item larger than one batch travels as
/// pieces, gathered here up to this size.
const MAX_LARGE_ITEM: usize = 16 << 20;

/// Serves a command job; `None` if the input is not one.
pub async fn serve(
    session: &mut Session,
    config: &connection::Config,
) -> Option<Result<u8, ConnError>> {
    let grace = match &session.input {
        Input::Jobs(spec) => spec.term_grace_ms,
        Input::Lines(spec) => spec.term_grace_ms,
        _ => return None,
    };
    if !child::guard(config.coordinator_pid, Duration::from_millis(grace)) {
        return Some(Ok(exit::OK));
    }
    Some(match session.input.clone() {
        Input::Jobs(spec) => serve_jobs(session, spec, config.slot).await,
        Input::Lines(spec) => serve_lines(session, spec, config.slot).await,
        _ => unreachable!("checked above"),
    })
}

/// Gathers the pieces of a large item; the whole item once its last piece is in.
#[derive(Default)]
struct Large {
    tag: Option<u64>,
    bytes: Vec<u8>,
    too_large: bool,
}

impl Large {
    fn add(&mut self, tag: u64, last: bool, piece: &[u8]) -> Option<(u64, Option<Vec<u8>>)> {
        if self.tag != Some(tag) {
            *self = Large { tag: Some(tag), ..Large::default() };
        }
        if self.bytes.len() + piece.len() > MAX_LARGE_ITEM {
            self.too_large = true;
            self.bytes = Vec::new();
        } else if !self.too_large {
            self.bytes.extend_from_slice(piece);
        }
        if !last {
            return None;
        }
        let done = std::mem::take(self);
        Some((tag, (!done.too_large).then_some(done.bytes)))
    }
}

async fn send_records(
    session: &mut Session,
    tag: u64,
    n: u64,
    records: &mut [u8],
) -> Result<(), ConnError> {
    codec::finish_done_frame(records, tag, n)?;
    session.writer.send_encoded(records).await?;
    Ok(())
}

fn start_records(records: &mut Vec<u8>) {
    records.clear();
    records.resize(codec::DONE_PREFIX, 0);
}

async fn serve_jobs(session: &mut Session, spec: JobSpec, slot: u64) -> Result<u8, ConnError> {
    session.writer.send(&FromWorker::Ready).await?;
    let mut runner = Runner::new(spec, slot);
    let mut records = Vec::new();
    let mut large = Large::default();
    while let Some(frame) = session.reader.next_frame().await? {
        if let Some((tag, _, items)) = codec::items_batch(&frame) {
            start_records(&mut records);
            for item in &items {
                let outcome = runner.run(item).await;
                codec::push_record(&mut records, &outcome.encode()?);
            }
            send_records(session, tag, items.len() as u64, &mut records).await?;
            continue;
        }
        if let Some((tag, last, piece)) = codec::body_piece(&frame) {
            let Some((tag, item)) = large.add(tag, last, piece) else { continue };
            let outcome = match item {
                Some(item) => runner.run(&item).await,
                None => too_long(),
            };
            start_records(&mut records);
            codec::push_record(&mut records, &outcome.encode()?);
            send_records(session, tag, 1, &mut records).await?;
            continue;
        }
        match codec::decode::<ToWorker>(&frame)? {
            ToWorker::Shutdown => return Ok(exit::OK),
            other => return Err(ConnError::Unexpected(format!("{other:?}"))),
        }
    }
    Ok(exit::OK)
}

fn too_long() -> JobOutcome {
    let why = "the command line is longer than 16 MiB";
    JobOutcome {
        status: JobStatus::CannotStart(why.into()),
        started_us: 0,
        runtime_us: 0,
        attempts: 1,
        pid: 0,
        slot: 0,
        stdout: Captured::Inline(Default::default()),
        stderr: Captured::Inline(format!("powerpool: {why}\n").into_bytes().into()),
    }
}

async fn serve_lines(session: &mut Session, spec: LineSpec, slot: u64) -> Result<u8, ConnError> {
    let mut worker = LineWorker::new(spec, slot);
    if let Err(reason) = worker.start() {
        session.writer.send(&FromWorker::Fatal(Fatal { reason })).await?;
        return Ok(exit::REFUSED);
    }
    session.writer.send(&FromWorker::Ready).await?;
    let mut records = Vec::new();
    let mut large = Large::default();
    loop {
        let frame = tokio::select! {
            frame = session.reader.next_frame() => frame?,
            said = worker.idle() => {
                if let Some(reason) = worker.on_idle(said.flatten()).await {
                    return broken(session, reason).await;
                }
                continue;
            }
        };
        let Some(frame) = frame else { break };
        let (tag, n, end) = if let Some((tag, first, items)) = codec::items_batch(&frame) {
            start_records(&mut records);
            let end = worker.unit(tag, Some(first), &items, &mut records).await;
            (tag, items.len() as u64, end)
        } else if let Some((tag, last, piece)) = codec::body_piece(&frame) {
            let Some((tag, item)) = large.add(tag, last, piece) else { continue };
            start_records(&mut records);
            let end = match item {
                Some(line) => worker.unit(tag, None, &[&line], &mut records).await,
                None => UnitEnd::Failed(powerpool_shared::ChunkFailed {
                    chunk: tag,
                    item: None,
                    reason: "a line longer than 16 MiB".into(),
                }),
            };
            (tag, 1, end)
        } else {
            match codec::decode::<ToWorker>(&frame)? {
                ToWorker::Shutdown => break,
                other => return Err(ConnError::Unexpected(format!("{other:?}"))),
            }
        };
        match end {
            UnitEnd::Done => send_records(session, tag, n, &mut records).await?,
            UnitEnd::Failed(failed) => session.writer.send(&FromWorker::Failed(failed)).await?,
            UnitEnd::Broken(reason) => return broken(session, reason).await,
        }
    }
    match worker.finish().await {
        Some(reason) => broken(session, reason).await,
        None => Ok(exit::OK),
    }
}

/// Says the contract was broken, on the socket and on stderr, and ends the worker.
async fn broken(session: &mut Session, reason: String) -> Result<u8, ConnError> {
    session.writer.send(&FromWorker::Broken(Fatal { reason })).await?;
    Ok(exit::BROKEN)
}
