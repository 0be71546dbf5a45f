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

/// Decodes an input, runs the task (creating the per-worker state first if it has one),
/// encodes the result into `out`; a decode or encode failure is an error naming the task.
pub type CallFn = fn(&mut State, &[u8], &mut Vec<u8>) -> Result<(), String>;

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

/// The call of a task `fn(T) -> R`.
pub fn call_plain<T, R>(
    name: &str,
    f: fn(T) -> R,
    state: &mut State,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String>
where
    T: DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let input: T = decode_input(name, input)?;
    encode_result(name, &f(input), state, out)
}

/// The call of a task `fn(&S, T) -> R` whose state `init` makes once per worker process.
pub fn call_with_state<S, T, R>(
    name: &str,
    init: fn() -> S,
    f: fn(&S, T) -> R,
    state: &mut State,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String>
where
    S: 'static,
    T: DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let input: T = decode_input(name, input)?;
    if state.value.is_none() {
        state.value = Some(Box::new(init()));
    }
    let value = state.value.as_ref().and_then(|v| v.downcast_ref::<S>());
    let value = value.ok_or_else(|| format!("task {name}: its state has another type"))?;
    let result = f(value, input);
    encode_result(name, &result, state, out)
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
    state: &mut State,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let start = out.len();
    codec::encode_value(result, out)
        .map_err(|e| format!("task {name}: cannot encode its result ({e})"))?;
    if !state.checked {
        round_trips::<R>(&out[start..])
            .map_err(|why| format!("task {name}: its result type {why}; {UNSUPPORTED}"))?;
        state.checked = true;
    }
    Ok(())
}

/// Whether `encoded` decodes as a `T` that encodes to the same bytes.
pub fn round_trips<T: Serialize + DeserializeOwned>(encoded: &[u8]) -> Result<(), String> {
    let back: T = codec::decode(encoded).map_err(|e| format!("does not decode back ({e})"))?;
    let mut again = Vec::with_capacity(encoded.len());
    codec::encode_value(&back, &mut again).map_err(|e| format!("does not encode again ({e})"))?;
    if again != encoded {
        return Err("decodes to a different value".to_owned());
    }
    Ok(())
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
