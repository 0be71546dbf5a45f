//! The worker loop of a typed job (`powerpool::task!` tasks): batches of items, each naming its
//! task, answered with one record per item. A panic fails the batch at its item, with the panic
//! message (and the backtrace when `RUST_BACKTRACE` is set); a slow item sends progress so the
//! coordinator's deadline runs per item.

use crate::connection::{ConnError, Session};
use crate::exit;
use crate::serve::take_panic_message;
use crate::typed::{self, State, TASKS};
use powerpool_shared::{codec, ChunkFailed, FromWorker, ToWorker, UnitProgress};
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

/// An item that ran longer than this since the last frame is followed by a progress frame:
/// fast batches send none, and a deadline never waits on more than one item and this.
const PROGRESS_EVERY: Duration = Duration::from_millis(20);

/// Serves a typed job until told to stop.
pub async fn serve(mut session: Session) -> Result<u8, ConnError> {
    session.writer.send(&FromWorker::Ready).await?;
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
            ToWorker::Shutdown => return Ok(exit::OK),
            other => return Err(ConnError::Unexpected(format!("{other:?}"))),
        }
    }
    Ok(exit::OK)
}

/// Runs the items of one unit in order into `records`, then sends them as one `Done`; or the
/// failure of the item that failed.
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
    let mut last_frame = coarse_now();
    for (i, item) in items.iter().enumerate() {
        // The result is encoded in place, after room for its record's length.
        let at = records.len();
        records.extend_from_slice(&[0; 4]);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| run_item(states, item, records)));
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(_) => Some(format!(
                "task panicked: {}",
                take_panic_message().unwrap_or_else(|| "panicked".to_owned())
            )),
        };
        if let Some(reason) = failure {
            let index = (first != u64::MAX).then(|| first.saturating_add(i as u64));
            let item = index.and_then(|x| i64::try_from(x).ok());
            let failed = ChunkFailed { chunk: tag, item, reason };
            return Ok(session.writer.send(&FromWorker::Failed(failed)).await?);
        }
        let len = records.len() - at - 4;
        if records.len() > codec::MAX_FRAME {
            // One frame answers a batch: a result that would not fit fails here, named, and
            // the coordinator runs it again alone (where it fits, or fails for good).
            let reason = format!(
                "its result of {len} bytes (with the batch's before it) passes the {} MiB a frame \
                 carries",
                codec::MAX_FRAME >> 20
            );
            let index = (first != u64::MAX).then(|| first.saturating_add(i as u64));
            let item = index.and_then(|x| i64::try_from(x).ok());
            let failed = ChunkFailed { chunk: tag, item, reason };
            return Ok(session.writer.send(&FromWorker::Failed(failed)).await?);
        }
        records[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
        if coarse_now().saturating_sub(last_frame) >= PROGRESS_EVERY && i + 1 < items.len() {
            let done = (i + 1) as u64;
            session.writer.send(&FromWorker::Progress(UnitProgress { chunk: tag, done })).await?;
            last_frame = coarse_now();
        }
    }
    codec::finish_done_frame(records, tag, items.len() as u64)?;
    Ok(session.writer.send_encoded(records).await?)
}

/// The time on the coarse monotonic clock: read per item, so it must cost next to nothing. It
/// reads a value the kernel keeps (no timer read, several times cheaper here than
/// `Instant::now`), at a resolution of a few milliseconds: ample for [`PROGRESS_EVERY`].
fn coarse_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

fn run_item(states: &mut [State], item: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let (index, input) = typed::split_item(item)?;
    let entry = &TASKS[index];
    (entry.call)(&mut states[index], input, out)
}
