//! The protocol between the powerpool coordinator and its worker processes.
//!
//! Both sides link this crate, so the messages, their encoding and the framing are defined once.
//!
//! # Theory of operation
//!
//! The coordinator owns a private directory (mode 0700) with one filesystem socket in it (mode
//! 0600). It spawns each worker with three environment variables ([`mod@env`]): the socket path, a
//! per-run secret token and the worker's slot id. The token never appears on a command line, where
//! `ps` would show it.
//!
//! Every message travels in one frame: a 4-byte little-endian length, then the message encoded by
//! [`codec`] (bincode 2, fixed-width integers). A frame is at most [`MAX_FRAME`] bytes; a longer
//! one ends the connection before anything is allocated for it.
//!
//! # Handshake and work, step by step
//!
//! 1. The worker connects and sends [`FromWorker::Hello`]: protocol version, slot id, token, pid.
//!    The version sits at a fixed offset (bytes 4..8 of the frame body), so a peer of any version
//!    can be told precisely why it is refused.
//! 2. The coordinator checks the version, the token (in constant time) and the slot id. On any
//!    mismatch it answers [`ToWorker::Reject`] with a reason and closes the connection.
//! 3. Otherwise it answers [`ToWorker::Welcome`], naming the task and the job's [`Input`]: a
//!    range answered in an output [`Format`], or opaque items.
//! 4. The worker answers [`FromWorker::Ready`], or [`FromWorker::Fatal`] if it cannot run that
//!    task, and exits.
//! 5. The coordinator sends work units, each tagged: for a range, [`ToWorker::Run`] chunks (a
//!    half-open range of inputs that the worker generates itself); for items,
//!    [`ToWorker::Items`] batches (many items in one frame), or for one item too large for a
//!    frame, [`ToWorker::Body`] pieces of at most [`MAX_BODY_PIECE`] bytes, the last marked.
//!    The worker answers each unit, in the order received, with [`FromWorker::Done`] carrying
//!    the whole unit's output in one frame (for items, one length-prefixed record per item:
//!    [`codec::push_record`]), or [`FromWorker::Failed`] naming the failing input or item when
//!    it knows it. Work is pulled: a worker has at most [`PIPELINE_DEPTH`] units outstanding.
//! 6. [`ToWorker::Shutdown`], or end of file on the socket, ends the worker with exit status 0.
//!
//! Command jobs ([`Input::Jobs`] for `run`, [`Input::Lines`] for `map --exec`) are items too:
//! their items and records are described in [`jobs`]. A worker that finds, after it has sent
//! results, that they cannot be trusted (a line worker's command printed a line with no input
//! outstanding) says [`FromWorker::Broken`], and the run stops.

pub mod codec;
pub mod env;
pub mod jobs;
pub mod message;
pub(crate) mod owning;
pub mod task;
pub mod transport;
pub mod version;
pub mod wide;

pub use codec::{CodecError, MAX_FRAME};
pub use message::{
    BodyPiece, ChunkDone, ChunkFailed, Fatal, Format, FromWorker, Hello, Input, ItemBatch, ItemsAt,
    Reject, RunChunk, ToWorker, UnitProgress, Welcome, MAX_BODY_PIECE, TOKEN_LEN,
};
pub use version::PROTOCOL_VERSION;
pub use wide::I256;

/// How many chunks the coordinator may send a worker before the worker has answered the first:
/// two, so the next chunk is already in the worker's socket buffer when it finishes one, and a
/// worker never waits a round trip for work.
pub const PIPELINE_DEPTH: usize = 2;

/// The largest chunk, in items, that one `Run` message may ask for in any format; see
/// [`Format::max_chunk_items`] for each format's own limit.
pub const MAX_CHUNK_ITEMS: u64 = 1 << 24;
