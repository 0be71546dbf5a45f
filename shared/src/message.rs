//! One message enum per direction; each variant wraps a small struct.
//!
//! bincode is not self-describing: variants and fields are encoded by position, so a variant is
//! only ever appended, and any change to an existing one bumps [`crate::PROTOCOL_VERSION`]. No
//! `flatten`, `untagged` or `skip_serializing_if` here: they need a self-describing format.

use crate::jobs::{JobSpec, LineSpec};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Length of the per-run secret, in bytes (256 bits).
pub const TOKEN_LEN: usize = 32;

/// Coordinator to worker.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum ToWorker {
    /// Handshake accepted: the job every chunk of this connection belongs to.
    Welcome(Welcome),
    /// Handshake refused; the connection closes after it.
    Reject(Reject),
    /// Compute one chunk.
    Run(RunChunk),
    /// No more work: exit with status 0.
    Shutdown,
    /// A piece of one large item (items jobs): an item too large for a batch travels alone as
    /// one or more pieces, the last marked, each at most [`MAX_BODY_PIECE`] bytes.
    Body(BodyPiece),
    /// A batch of items (items jobs), computed in order; answered with one `Done` whose payload
    /// holds one record per item (see [`crate::codec::push_record`]).
    Items(ItemBatch),
    /// A batch of items as [`ToWorker::Items`], lying in the item arena the worker opened
    /// ([`crate::env::ITEMS_ARENA`]) instead of in this frame.
    ItemsAt(ItemsAt),
}

/// The largest piece of an item one frame carries: 1 MiB, so an item of any size travels in
/// bounded frames.
pub const MAX_BODY_PIECE: usize = 1 << 20;

/// Items `first..first + items.len()` of the run, tagged `chunk` (echoed in the answer).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemBatch {
    pub chunk: u64,
    /// The index of the first item: a failure names its item by index.
    pub first: u64,
    pub items: Vec<serde_bytes::ByteBuf>,
}

impl fmt::Debug for ItemBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemBatch")
            .field("chunk", &self.chunk)
            .field("first", &self.first)
            .field("items", &self.items.len())
            .finish()
    }
}

/// Items `first..first + count` of the run, tagged `chunk`, laid out in the item arena as an
/// items frame lays them out (each its 8-byte length, then its bytes), in `extents`
/// (`(offset, length)`, in order).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct ItemsAt {
    pub chunk: u64,
    pub first: u64,
    pub count: u64,
    pub extents: Vec<(u64, u64)>,
}

/// A piece of the item sent alone as `chunk` (the coordinator's tag, echoed in the answer).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyPiece {
    pub chunk: u64,
    /// The last piece: the worker answers after it.
    pub last: bool,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl fmt::Debug for BodyPiece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyPiece")
            .field("chunk", &self.chunk)
            .field("last", &self.last)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Worker to coordinator.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromWorker {
    /// First frame of every connection. Must stay variant 0 with `version` first.
    Hello(Hello),
    /// The worker knows the task and format of the [`Welcome`] and waits for chunks.
    Ready,
    /// The worker cannot run this job at all (for example, an unknown task); it exits next.
    Fatal(Fatal),
    /// A chunk's output, whole.
    Done(ChunkDone),
    /// A chunk could not be computed; the worker stays usable.
    Failed(ChunkFailed),
    /// The worker broke its job's contract after results were sent (a line worker's command
    /// printed a line with no input outstanding): the run cannot be trusted and stops.
    Broken(Fatal),
    /// Items of the unit `chunk` are done so far (items jobs): the unit's deadline runs per
    /// item, so a slow batch is not killed for being a batch. Sent only when an item took a
    /// while, never once per item of a fast batch.
    Progress(UnitProgress),
    /// The worker cannot use the item arena it was given (why): its batches must come as
    /// `Items`, through the socket. Sent before `Ready`.
    NoArena(Fatal),
}

/// How far a worker got in a unit.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct UnitProgress {
    pub chunk: u64,
    pub done: u64,
}

/// What every worker says first.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// The slot id from the worker's environment.
    pub worker_id: u64,
    pub token: [u8; TOKEN_LEN],
    pub pid: u32,
}

/// The job of this connection.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Welcome {
    /// A task name from the worker's registry.
    pub task: String,
    pub input: Input,
}

/// What a job's work units are.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum Input {
    /// Slices of an integer range ([`ToWorker::Run`]), each answered in this format.
    Range(Format),
    /// Opaque items ([`ToWorker::Items`], or [`ToWorker::Body`] pieces for a large one), each
    /// answered with one record of bytes.
    Items,
    /// `run`: each item is one command ([`crate::jobs::JobCommand`]) that the worker runs as its
    /// child, in a process group of its own; each is answered with one
    /// [`crate::jobs::JobOutcome`] record.
    Jobs(JobSpec),
    /// `map --exec`: each item is one line, written to a command the worker keeps running;
    /// each is answered with the line it printed back (without its newline).
    Lines(LineSpec),
}

/// Why a handshake was refused.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Reject {
    pub reason: String,
}

/// Why a worker cannot run the job it was given.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Fatal {
    pub reason: String,
}

/// A half-open range of inputs, `start..end`, numbered `chunk` by the coordinator.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct RunChunk {
    pub chunk: u64,
    pub start: i64,
    pub end: i64,
}

impl RunChunk {
    /// How many inputs the chunk covers (0 if the range is inverted).
    pub fn len(&self) -> u64 {
        u64::try_from(i128::from(self.end) - i128::from(self.start)).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The whole output of one chunk, already in the run's [`Format`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkDone {
    pub chunk: u64,
    /// How many inputs the chunk covered.
    pub items: u64,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// A chunk that failed, and at which item when the worker knows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct ChunkFailed {
    pub chunk: u64,
    /// The failing input (range jobs) or the failing item's index (items jobs).
    pub item: Option<i64>,
    pub reason: String,
}

/// What a worker sends back for each chunk. Formatting happens in the workers, in parallel, so
/// the coordinator only moves bytes.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum Format {
    /// One decimal result per line, each ending in `\n`.
    Lines,
    /// Each result as a 16-byte little-endian two's-complement `i128`.
    Bin,
    /// The chunk's exact sum, as a 32-byte little-endian [`crate::I256`].
    Sum,
}

impl Format {
    /// The largest chunk, in items, a `Run` may ask for in this format. It bounds the reply
    /// frame: a chunk's output stays under [`crate::MAX_FRAME`] (`lines`: 2^18 items of at most
    /// 41 bytes; `bin`: 2^19 items of 16 bytes; `sum`: 32 bytes whatever the chunk, so the cap
    /// only bounds the time one chunk takes).
    pub const fn max_chunk_items(self) -> u64 {
        match self {
            Format::Lines => 1 << 18,
            Format::Bin => 1 << 19,
            Format::Sum => crate::MAX_CHUNK_ITEMS,
        }
    }

    /// The largest payload one item can produce in this format, in bytes.
    pub const fn max_bytes_per_item(self) -> usize {
        match self {
            // "-170141183460469231731687303715884105728\n" is 41 bytes.
            Format::Lines => 41,
            Format::Bin => 16,
            Format::Sum => 0,
        }
    }
}

// Short, hand-written Debug for messages that carry a token or a large payload: logs show their
// shape, never a secret or megabytes of output.
impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("version", &self.version)
            .field("worker_id", &self.worker_id)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ChunkDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkDone")
            .field("chunk", &self.chunk)
            .field("items", &self.items)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl fmt::Debug for FromWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FromWorker::Hello(m) => m.fmt(f),
            FromWorker::Ready => f.write_str("Ready"),
            FromWorker::Fatal(m) => m.fmt(f),
            FromWorker::Done(m) => m.fmt(f),
            FromWorker::Failed(m) => m.fmt(f),
            FromWorker::Broken(m) => f.debug_tuple("Broken").field(m).finish(),
            FromWorker::Progress(m) => m.fmt(f),
            FromWorker::NoArena(m) => f.debug_tuple("NoArena").field(m).finish(),
        }
    }
}
