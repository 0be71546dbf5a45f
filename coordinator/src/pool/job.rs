//! What a client gives the pool (a [`Job`]: a task and its work, a range or a stream of
//! items) and what it gets back (a [`Released`] outcome per unit, through [`results`]).

use super::config::PoolConfig;
use crate::chunk::Chunks;
use bytes::Bytes;
use powerpool_shared::{Format, Input};
use tokio::sync::{mpsc, watch};

/// What the pool computes, and how.
#[derive(Debug)]
pub struct Job {
    /// A task name the workers know.
    pub task: String,
    pub work: Work,
    pub config: PoolConfig,
    /// Release outcomes in input order, or as they arrive (each with its offsets).
    pub ordered: bool,
}

/// The work of a job.
#[derive(Debug)]
pub enum Work {
    /// An integer range: workers generate their own inputs and format their results in place
    /// (the fast path: no input crosses the socket).
    Range { chunks: Chunks, format: Format },
    /// Opaque items pulled from `source` as the pool has room, numbered from 0 in the order
    /// received; the source closing ends the input. Each item's result is one record. `lines`:
    /// the items are the lines of an input (`map TASK --input`), named in messages as the user
    /// counts lines (`line 3`, from 1).
    Items { source: mpsc::Receiver<Item>, batching: Batching, lines: bool },
    /// The same as `Items`, with items arriving in runs: a client that gathers items anyway
    /// (the typed library) encodes them framed into one buffer, and the pool holds, batches
    /// and sends them without work per item.
    Runs { source: mpsc::Receiver<super::Run>, batching: Batching },
    /// Items for the workers' command modes (`run`'s jobs, `map --exec`'s lines): the same
    /// engine as `Items`, with `input` telling the workers what the items are and how to run
    /// them (the task name is not used).
    Commands { source: mpsc::Receiver<Item>, batching: Batching, input: Input },
}

/// How items are grouped into units: at most `max_items` items and `max_bytes` bytes a batch
/// (one item larger than that travels alone, in pieces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub max_items: u64,
    pub max_bytes: usize,
    /// Size batches from measured cost: start with one item, then as many as take about this
    /// long (within the limits above). `None`: always up to `max_items`.
    pub target: Option<std::time::Duration>,
    /// The most item bytes held (pulled and not yet released); `None` leaves memory to the
    /// client (`fetch --process` bounds it with its own byte budget).
    pub window_bytes: Option<usize>,
}

/// One item: bytes, held as the pieces they arrived in (a fetched body is never copied into
/// one buffer). Cloning is cheap (a reference count), so a retry or a bisection sends the same
/// memory again; an item of one piece costs no allocation of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    repr: Repr,
    len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    One(Bytes),
    Many(std::sync::Arc<[Bytes]>),
}

impl Default for Repr {
    fn default() -> Repr {
        Repr::One(Bytes::new())
    }
}

impl Item {
    /// An item made of `pieces`, in order.
    pub fn from_pieces(mut pieces: Vec<Bytes>) -> Item {
        let len = pieces.iter().map(Bytes::len).sum();
        let repr = match pieces.len() {
            0 => Repr::One(Bytes::new()),
            1 => Repr::One(pieces.swap_remove(0)),
            _ => Repr::Many(pieces.into()),
        };
        Item { repr, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in order.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> + Clone {
        let many: &[Bytes] = match &self.repr {
            Repr::One(_) => &[],
            Repr::Many(pieces) => pieces,
        };
        let one = match &self.repr {
            Repr::One(bytes) => Some(&bytes[..]),
            Repr::Many(_) => None,
        };
        one.into_iter().chain(many.iter().map(|p| &p[..]))
    }
}

impl From<Bytes> for Item {
    fn from(bytes: Bytes) -> Item {
        Item { len: bytes.len(), repr: Repr::One(bytes) }
    }
}

/// What became of a unit of offsets `first..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub first: u64,
    pub end: u64,
    pub outcome: Outcome,
}

/// A unit's outcome: explicit, never "empty means failed".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The unit's output: a range's results in its format, or an items unit's records.
    Done(Bytes),
    /// The one item of this unit was given up (`keep_going`): why, with the worker's pid.
    Failed(String),
}

/// The pool's end of the results channel.
#[derive(Debug)]
pub struct ResultSender {
    /// `None` marks the end of a complete run.
    tx: mpsc::UnboundedSender<Option<Released>>,
    /// How far the consumer got: the offset written (ordered), or the count of results taken
    /// (unordered). Dispatch stays within a window of it, which is what bounds memory.
    pub consumed: watch::Receiver<u64>,
}

/// The consumer's end: outcomes in release order, then `None` if the run was complete (the
/// channel closing without it means the run stopped short).
#[derive(Debug)]
pub struct ResultReceiver {
    pub rx: mpsc::UnboundedReceiver<Option<Released>>,
    pub consumed: watch::Sender<u64>,
}

/// A results channel between a pool run and its consumer.
pub fn results() -> (ResultSender, ResultReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (consumed_tx, consumed) = watch::channel(0);
    (ResultSender { tx, consumed }, ResultReceiver { rx, consumed: consumed_tx })
}

impl ResultSender {
    /// Hands one outcome on; false if the consumer is gone.
    pub fn push(&self, released: Released) -> bool {
        self.tx.send(Some(released)).is_ok()
    }

    /// Closes the channel; `complete` says every result was released.
    pub fn finish(self, complete: bool) {
        if complete {
            let _ = self.tx.send(None);
        }
    }
}
