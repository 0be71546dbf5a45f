//! The worker loop of a typed job (`powerpool::task!` tasks): batches of items, each naming its
//! task, answered with one record per item. A panic fails the batch at its item, with the panic
//! message (and the backtrace when `RUST_BACKTRACE` is set); a slow item sends progress so the
//! coordinator's deadline runs per item.

use crate::arena::Arena;
use crate::connection::{ConnError, Session};
use crate::exit;
use crate::serve::take_panic_message;
use crate::typed::{self, coarse_now, Span, State, Stop, TASKS};
use powerpool_shared::{codec, ChunkFailed, Fatal, FromWorker, ToWorker, UnitProgress};
use std::panic::{self, AssertUnwindSafe};

/// Serves a typed job until told to stop.
pub async fn serve(mut session: Session) -> Result<u8, ConnError> {
    let arena = match Arena::given() {
        Ok(arena) => arena,
        Err(reason) => {
            // Slower, not broken: the batches come through the socket instead.
            session.writer.send(&FromWorker::NoArena(Fatal { reason })).await?;
            None
        }
    };
    session.writer.send(&FromWorker::Ready).await?;
    // A batch is read out of the arena whole before its items are split: one streaming copy
    // brings it into this core's cache far faster than reading each item's length where it
    // lies (each read waits for the last: 4x the time, measured on B9).
    let mut local = Vec::new();
    let mut states: Vec<State> = TASKS.iter().map(|_| State::default()).collect();
    let mut records = Vec::new();
    // A large item arrives in pieces: its tag and bytes so far.
    let mut large: Option<(u64, Vec<u8>)> = None;
    while let Some(frame) = session.reader.next_frame().await? {
        if let Some((tag, first, items)) = codec::items_batch(&frame) {
            run_batch(&mut session, &mut states, tag, first, &items, &mut records).await?;
            continue;
        }
        if let Some((tag, last, bytes)) = codec::body_piece(&frame) {
            let (t, mut buf) = large.take().unwrap_or_else(|| (tag, Vec::new()));
            if t != tag {
                return Err(ConnError::Unexpected("an item began before the last ended".into()));
            }
            buf.extend_from_slice(bytes);
            if !last {
                large = Some((tag, buf));
                continue;
            }
            // A large item is a batch of one whose index the coordinator keeps: failures name
            // none, and it cuts nothing.
            run_batch(&mut session, &mut states, tag, u64::MAX, &[&buf], &mut records).await?;
            continue;
        }
        match codec::decode::<ToWorker>(&frame)? {
            ToWorker::ItemsAt(at) => {
                local.clear();
                let copied = arena.as_ref().and_then(|arena| {
                    at.extents
                        .iter()
                        .try_for_each(|&(offset, len)| arena.read(offset, len, &mut local))
                });
                let mut items = Vec::with_capacity(at.count.min(1 << 20) as usize);
                let found = copied.and_then(|()| codec::framed_items(&local, &mut items));
                if found.is_none() || items.len() as u64 != at.count {
                    return Err(ConnError::Unexpected("items outside the item arena".into()));
                }
                run_batch(&mut session, &mut states, at.chunk, at.first, &items, &mut records)
                    .await?;
            }
            ToWorker::Shutdown => return Ok(exit::OK),
            other => return Err(ConnError::Unexpected(format!("{other:?}"))),
        }
    }
    Ok(exit::OK)
}

/// Runs the items of one unit in order into `records`, then sends them as one `Done`; or the
/// failure of the item that failed. Each stretch of items of one task is one call of that
/// task's monomorphised loop ([`typed::CallFn`]), under one unwind guard.
async fn run_batch(
    session: &mut Session,
    states: &mut [State],
    tag: u64,
    first: u64,
    items: &[&[u8]],
    records: &mut Vec<u8>,
) -> Result<(), ConnError> {
    records.clear();
    records.resize(codec::DONE_PREFIX, 0);
    let mut span = Span { items, task: 0, next: 0, out: records, last_frame: coarse_now() };
    while span.next < items.len() {
        let stop = match typed::split_item(items[span.next]) {
            Err(why) => Stop::Failed(why),
            Ok((index, _)) => {
                span.task = index as u32;
                let call = TASKS[index].call;
                let state = &mut states[index];
                panic::catch_unwind(AssertUnwindSafe(|| call(state, &mut span))).unwrap_or_else(
                    |_| {
                        let message = take_panic_message();
                        Stop::Failed(format!(
                            "task panicked: {}",
                            message.unwrap_or_else(|| "panicked".to_owned())
                        ))
                    },
                )
            }
        };
        match stop {
            Stop::End | Stop::Switch => {}
            Stop::Progress => {
                let done = span.next as u64;
                let progress = FromWorker::Progress(UnitProgress { chunk: tag, done });
                session.writer.send(&progress).await?;
                span.last_frame = coarse_now();
            }
            Stop::Failed(reason) => {
                let index = (first != u64::MAX).then(|| first.saturating_add(span.next as u64));
                let item = index.and_then(|x| i64::try_from(x).ok());
                let failed = ChunkFailed { chunk: tag, item, reason };
                return Ok(session.writer.send(&FromWorker::Failed(failed)).await?);
            }
        }
    }
    codec::finish_done_frame(records, tag, items.len() as u64)?;
    Ok(session.writer.send_encoded(records).await?)
}
