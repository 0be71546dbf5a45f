//! Typed tasks: a user's own function over their own serde types, compiled into the same
//! executable as the pool that runs it.
//!
//! `powerpool::task!` declares a task once, as a typed handle (`Task<T, R>`) and as an entry of
//! [`TASKS`], a slice that the linker gathers from every crate of the program (`linkme`). A
//! worker process is the same executable started again, so it finds every task in [`TASKS`]
//! in the same order: an item names its task by index. Nothing is registered by hand, and a
//! task that does not exist cannot be named (the handle would not compile).
//!
//! An item of a typed job is a 4-byte little-endian task index, then the input as the codec
//! encodes it (bincode, serde path, fixed-width integers); its result is the encoded output.

use powerpool_shared::codec;
use serde::{de::DeserializeOwned, Serialize};
use std::any::Any;
use std::time::Duration;

#[doc(hidden)]
pub use linkme;

/// The task name in `Welcome` of a typed job.
pub const TYPED_JOB: &str = "powerpool:typed";

/// Every typed task of this program, in link order (the same in every process of it).
#[linkme::distributed_slice]
pub static TASKS: [TaskEntry];

/// One typed task, as the worker runs it: its name and its type-erased call.
#[derive(Debug)]
pub struct TaskEntry {
    pub name: &'static str,
    pub call: CallFn,
}

/// Runs the items of a batch from `span.next` on, for as long as they name this task: each
/// input decoded, the task run (its per-worker state created first if it has one), the result
/// encoded into `span.out` after a 4-byte length. Monomorphised per task, so a batch of one
/// task is one call with the decoding, the task and the encoding inlined, not one call through
/// the table per item.
pub type CallFn = fn(&mut State, &mut Span<'_>) -> Stop;

/// One task's per-worker state, created on its first item in each worker process.
#[derive(Default)]
pub struct State {
    value: Option<Box<dyn Any>>,
    /// The first result was checked to come back unchanged through the codec.
    checked: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("initialized", &self.value.is_some()).finish()
    }
}

/// Where a batch stands while its items run.
#[derive(Debug)]
pub struct Span<'a> {
    /// The batch's items, each a 4-byte task index and the encoded input.
    pub items: &'a [&'a [u8]],
    /// The index in [`TASKS`] of the task running now.
    pub task: u32,
    /// The next item to run; after a panic, the item that panicked.
    pub next: usize,
    /// The records so far.
    pub out: &'a mut Vec<u8>,
    /// When the worker last sent a frame (on the coarse clock).
    pub last_frame: Duration,
}

/// Why a span stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Every item of the batch ran.
    End,
    /// Item `next` names another task.
    Switch,
    /// An item ran past [`PROGRESS_EVERY`] since the last frame: a progress frame is due
    /// before item `next`.
    Progress,
    /// Item `next` failed, for this reason.
    Failed(String),
}

/// An item that ran longer than this since the last frame is followed by a progress frame:
/// fast batches send none, and a deadline never waits on more than one item and this.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(20);

/// The call of a task `fn(T) -> R`.
pub fn call_plain<T, R>(name: &str, f: fn(T) -> R, state: &mut State, span: &mut Span<'_>) -> Stop
where
    T: DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    run_span(name, &mut state.checked, span, |input| Ok(f(input)))
}

/// The call of a task `fn(&S, T) -> R` whose state `init` makes once per worker process.
pub fn call_with_state<S, T, R>(
    name: &str,
    init: fn() -> S,
    f: fn(&S, T) -> R,
    state: &mut State,
    span: &mut Span<'_>,
) -> Stop
where
    S: 'static,
    T: DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let State { value, checked } = state;
    run_span(name, checked, span, |input| {
        let value = value.get_or_insert_with(|| Box::new(init()));
        let value = value.downcast_ref::<S>();
        let value = value.ok_or_else(|| format!("task {name}: its state has another type"))?;
        Ok(f(value, input))
    })
}

/// The loop of [`CallFn`], for the task that `call` runs.
fn run_span<T, R>(
    name: &str,
    checked: &mut bool,
    span: &mut Span<'_>,
    mut call: impl FnMut(T) -> Result<R, String>,
) -> Stop
where
    T: DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    while let Some(item) = span.items.get(span.next) {
        // The caller checked the first item's task; an item of another task ends the span.
        let input = match item.split_first_chunk::<4>() {
            Some((head, input)) if u32::from_le_bytes(*head) == span.task => input,
            _ => return Stop::Switch,
        };
        // The result is encoded in place, after room for its record's length.
        let at = span.out.len();
        span.out.extend_from_slice(&[0; 4]);
        let ran = decode_input(name, input)
            .and_then(&mut call)
            .and_then(|result| encode_result(name, &result, checked, span.out));
        if let Err(why) = ran {
            return Stop::Failed(why);
        }
        let len = span.out.len() - at - 4;
        if span.out.len() > codec::MAX_FRAME {
            // One frame answers a batch: a result that would not fit fails here, named, and
            // the coordinator runs it again alone (where it fits, or fails for good).
            return Stop::Failed(format!(
                "its result of {len} bytes (with the batch's before it) passes the {} MiB a \
                 frame carries",
                codec::MAX_FRAME >> 20
            ));
        }
        span.out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
        span.next += 1;
        if span.next < span.items.len()
            && coarse_now().saturating_sub(span.last_frame) >= PROGRESS_EVERY
        {
            return Stop::Progress;
        }
    }
    Stop::End
}

/// The time on the coarse monotonic clock: read per item, so it must cost next to nothing. It
/// reads a value the kernel keeps (no timer read, several times cheaper here than
/// `Instant::now`), at a resolution of a few milliseconds: ample for [`PROGRESS_EVERY`].
pub fn coarse_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

/// What the codec cannot carry, said once where it shows.
pub const UNSUPPORTED: &str = "bincode is not self-describing: `#[serde(flatten)]`, \
    `#[serde(untagged)]`, `#[serde(skip_serializing_if)]` and `serde_json::Value` do not \
    round-trip";

fn decode_input<T: DeserializeOwned>(name: &str, input: &[u8]) -> Result<T, String> {
    codec::decode(input).map_err(|e| {
        if input.len() >= codec::MAX_FRAME {
            format!("task {name}: its input passes the {} MiB limit", codec::MAX_FRAME >> 20)
        } else {
            format!("task {name}: cannot decode its input ({e}); {UNSUPPORTED}")
        }
    })
}

/// Encodes a result; the first one of each task in each worker is decoded and encoded again,
/// so a type the codec cannot carry fails here, naming the task, never as a wrong value.
fn encode_result<R: Serialize + DeserializeOwned>(
    name: &str,
    result: &R,
    checked: &mut bool,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let start = out.len();
    codec::encode_value(result, out)
        .map_err(|e| format!("task {name}: cannot encode its result ({e})"))?;
    if !*checked {
        round_trips::<R>(&out[start..])
            .map_err(|why| format!("task {name}: its result type {why}; {UNSUPPORTED}"))?;
        *checked = true;
    }
    Ok(())
}

/// Whether `encoded` decodes as a `T` that encodes to the same bytes, in the same order or,
/// for maps and sets without a fixed order (`HashMap`, `HashSet`: each map's hasher has its
/// own seed, so two maps with the same entries list them in different orders), reordered.
/// What the codec cannot carry fails to decode, or decodes to other bytes.
pub fn round_trips<T: Serialize + DeserializeOwned>(encoded: &[u8]) -> Result<(), String> {
    let back: T = codec::decode(encoded).map_err(|e| format!("does not decode back ({e})"))?;
    let mut again = Vec::with_capacity(encoded.len());
    codec::encode_value(&back, &mut again).map_err(|e| format!("does not encode again ({e})"))?;
    if again != encoded && byte_counts(&again) != byte_counts(encoded) {
        return Err("decodes to a different value".to_owned());
    }
    Ok(())
}

/// How many times each byte value occurs in `bytes`, and its length.
fn byte_counts(bytes: &[u8]) -> (usize, [u32; 256]) {
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    (bytes.len(), counts)
}

/// The task at `index`, and the input after the 4-byte index.
pub fn split_item(item: &[u8]) -> Result<(usize, &[u8]), String> {
    let (head, input) = item.split_first_chunk::<4>().ok_or("an item without its task index")?;
    let index = u32::from_le_bytes(*head) as usize;
    if index >= TASKS.len() {
        return Err(format!("no task number {index} in this worker ({} known)", TASKS.len()));
    }
    Ok((index, input))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::panic::AssertUnwindSafe;

    fn item(task: u32, input: &impl Serialize) -> Vec<u8> {
        let mut item = task.to_le_bytes().to_vec();
        codec::encode_value(input, &mut item).expect("encodes");
        item
    }

    fn records(out: &[u8]) -> Vec<u64> {
        let mut found = Vec::new();
        let mut rest = out;
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = u32::from_le_bytes(*len) as usize;
            found.push(codec::decode(&tail[..len]).expect("a record"));
            rest = &tail[len..];
        }
        found
    }

    fn double(x: u64) -> u64 {
        assert!(x != 13, "unlucky");
        x * 2
    }

    fn span<'a>(items: &'a [&'a [u8]], out: &'a mut Vec<u8>) -> Span<'a> {
        // The last frame was just now: no progress is due in these tests unless they say so.
        Span { items, task: 7, next: 0, out, last_frame: coarse_now() }
    }

    #[test]
    fn a_span_runs_its_task_until_an_item_names_another() {
        let owned = [item(7, &1u64), item(7, &2u64), item(3, &5u64), item(7, &4u64)];
        let items: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        let mut span = span(&items, &mut out);
        assert_eq!(call_plain("t", double, &mut State::default(), &mut span), Stop::Switch);
        assert_eq!(span.next, 2);
        // Picked up again past the other task's item, it runs to the end.
        span.next = 3;
        assert_eq!(call_plain("t", double, &mut State::default(), &mut span), Stop::End);
        assert_eq!(records(&out), vec![2, 4, 8]);
    }

    #[test]
    fn a_failure_or_a_panic_stops_at_its_item() {
        let owned = [item(7, &1u64), item(7, &"not a number"), item(7, &13u64)];
        let items: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        let mut span = span(&items, &mut out);
        let stop = call_plain("t", double, &mut State::default(), &mut span);
        assert!(matches!(&stop, Stop::Failed(why) if why.starts_with("task t: cannot decode")));
        assert_eq!(span.next, 1);
        span.next = 2;
        let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            call_plain("t", double, &mut State::default(), &mut span)
        }));
        assert!(panicked.is_err());
        assert_eq!(span.next, 2, "the item that panicked");
    }

    #[test]
    fn progress_is_due_between_items_never_after_the_last() {
        let owned = [item(7, &1u64), item(7, &2u64)];
        let items: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        let mut span = span(&items, &mut out);
        span.last_frame = Duration::ZERO;
        assert_eq!(call_plain("t", double, &mut State::default(), &mut span), Stop::Progress);
        assert_eq!(span.next, 1);
        assert_eq!(call_plain("t", double, &mut State::default(), &mut span), Stop::End);
        assert_eq!(records(&out), vec![2, 4]);
    }

    #[test]
    fn maps_without_a_fixed_order_round_trip_and_skipped_fields_do_not() {
        use std::collections::{HashMap, HashSet};
        for n in 0..50u8 {
            let map: HashMap<String, Vec<u8>> =
                (0..6).map(|k| (format!("key{k}"), vec![k, n])).collect();
            let mut encoded = Vec::new();
            codec::encode_value(&map, &mut encoded).expect("encodes");
            assert_eq!(round_trips::<HashMap<String, Vec<u8>>>(&encoded), Ok(()));
            let set: HashSet<u64> = (0..8).map(|k| k * 1000 + u64::from(n)).collect();
            let mut encoded = Vec::new();
            codec::encode_value(&set, &mut encoded).expect("encodes");
            assert_eq!(round_trips::<HashSet<u64>>(&encoded), Ok(()));
        }
        #[derive(Serialize, serde::Deserialize)]
        struct Sloppy {
            #[serde(skip_serializing_if = "Option::is_none")]
            a: Option<u32>,
            b: u32,
        }
        let mut encoded = Vec::new();
        codec::encode_value(&Sloppy { a: None, b: 1 }, &mut encoded).expect("encodes");
        assert!(round_trips::<Sloppy>(&encoded).is_err());
    }

    thread_local! {
        static INITS: Cell<u64> = const { Cell::new(0) };
    }

    fn init() -> u64 {
        INITS.set(INITS.get() + 1);
        100
    }

    fn add(base: &u64, x: u64) -> u64 {
        base + x
    }

    #[test]
    fn the_state_is_made_once_on_the_first_item_that_decodes() {
        let owned = [item(7, &"bad"), item(7, &1u64), item(7, &2u64)];
        let items: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        let mut span = span(&items, &mut out);
        let mut state = State::default();
        let stop = call_with_state("t", init, add, &mut state, &mut span);
        assert!(matches!(stop, Stop::Failed(_)));
        assert_eq!(INITS.get(), 0, "an input that does not decode makes no state");
        // A failed batch's records are dropped whole (the coordinator runs it again).
        span.out.clear();
        span.next = 1;
        assert_eq!(call_with_state("t", init, add, &mut state, &mut span), Stop::End);
        span.next = 1;
        assert_eq!(call_with_state("t", init, add, &mut state, &mut span), Stop::End);
        assert_eq!(INITS.get(), 1);
        assert_eq!(records(&out), vec![101, 102, 101, 102]);
    }
}
