//! Items that arrive together, laid out as the workers read them.
//!
//! A client that gathers items anyway (the typed library encodes a call's items one after
//! another into one buffer) hands them to the pool as a [`Run`]: each item already carries
//! the 8-byte length an items frame gives it. The pool then holds, batches and sends a run's
//! items without touching them one by one: a unit of consecutive items is one slice of the
//! run's buffer, written to the worker's socket as it lies.

use bytes::Bytes;
use powerpool_shared::codec::ITEM_OVERHEAD;

/// Items laid out one after another in one buffer, each as an items frame carries it (its
/// length, 8 bytes little-endian, then its bytes). Only [`RunBuilder`] makes one, so the
/// layout always holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Run {
    bytes: Bytes,
    /// Where each item ends in `bytes`; the next one's length starts there.
    ends: Vec<usize>,
}

impl Run {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Where item `i`'s length starts (`i` may be `len()`: the end of the run).
    fn start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            i => self.ends[i - 1],
        }
    }

    /// Items `from..to` as an items frame carries them (lengths included): one slice.
    pub fn framed(&self, from: usize, to: usize) -> Bytes {
        self.bytes.slice(self.start(from)..self.start(to))
    }

    /// Item `i`'s bytes, without its length.
    pub fn item(&self, i: usize) -> Bytes {
        self.bytes.slice(self.start(i) + ITEM_OVERHEAD..self.ends[i])
    }

    /// The length of item `i`'s bytes.
    pub fn item_len(&self, i: usize) -> usize {
        self.ends[i] - self.start(i) - ITEM_OVERHEAD
    }

    /// The bytes of items `from..to`, lengths not counted.
    pub fn items_len(&self, from: usize, to: usize) -> usize {
        self.start(to) - self.start(from) - ITEM_OVERHEAD * (to - from)
    }
}

/// Builds a [`Run`] item by item, encoding each in place.
#[derive(Debug, Default)]
pub struct RunBuilder {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl RunBuilder {
    /// A builder whose buffer holds `bytes` before it grows.
    pub fn with_capacity(bytes: usize) -> RunBuilder {
        RunBuilder { buf: Vec::with_capacity(bytes), ends: Vec::new() }
    }

    /// Appends one item, whose bytes `write` appends to the buffer it is given; the item's
    /// bytes are returned. If `write` fails, the run is left as it was.
    pub fn push_with<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<&[u8], E> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; ITEM_OVERHEAD]);
        if let Err(e) = write(&mut self.buf) {
            self.buf.truncate(start);
            return Err(e);
        }
        let len = (self.buf.len() - start - ITEM_OVERHEAD) as u64;
        self.buf[start..start + ITEM_OVERHEAD].copy_from_slice(&len.to_le_bytes());
        self.ends.push(self.buf.len());
        Ok(&self.buf[start + ITEM_OVERHEAD..])
    }

    /// Appends one item given whole.
    #[cfg(test)]
    pub fn push_bytes(&mut self, item: &[u8]) {
        let _ = self.push_with(|buf| {
            buf.extend_from_slice(item);
            Ok::<(), ()>(())
        });
    }

    /// Takes the last item back out.
    pub fn pop(&mut self) {
        if self.ends.pop().is_some() {
            let start = self.ends.last().copied().unwrap_or(0);
            self.buf.truncate(start);
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of the buffer so far, lengths included.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Whether the buffer has memory of its own (a fresh builder allocates on demand).
    pub fn has_capacity(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// The run built so far, copied into a free slab of `arena` if there is one (the builder
    /// then keeps its buffer for the next run); otherwise as [`RunBuilder::finish`].
    pub fn finish_in(&mut self, arena: Option<&super::Arena>) -> Run {
        match arena.and_then(|arena| arena.fill(&self.buf)) {
            Some(bytes) => {
                self.buf.clear();
                Run { bytes, ends: std::mem::take(&mut self.ends) }
            }
            None => self.finish(),
        }
    }

    /// The run built so far; the builder is left empty, without memory.
    pub fn finish(&mut self) -> Run {
        Run {
            bytes: Bytes::from(std::mem::take(&mut self.buf)),
            ends: std::mem::take(&mut self.ends),
        }
    }
}

/// A run of `items`, each given whole.
#[cfg(test)]
pub fn run_of<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Run {
    let mut b = RunBuilder::default();
    items.into_iter().for_each(|item| b.push_bytes(item));
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_holds_its_items_framed_and_gives_each_back_whole() {
        let run = run_of([&b"ab"[..], b"", b"cde"]);
        assert_eq!(run.len(), 3);
        assert_eq!(
            (run.item(0), run.item(1), run.item(2)),
            (b"ab"[..].into(), Bytes::new(), b"cde"[..].into())
        );
        assert_eq!((run.item_len(2), run.items_len(0, 3), run.items_len(1, 3)), (3, 5, 3));
        let mut framed = Vec::new();
        for item in [&b""[..], b"cde"] {
            framed.extend_from_slice(&(item.len() as u64).to_le_bytes());
            framed.extend_from_slice(item);
        }
        assert_eq!(run.framed(1, 3), framed, "an items frame's layout: length, then bytes");
        assert!(run.framed(2, 2).is_empty());
    }

    #[test]
    fn a_failed_or_popped_item_leaves_the_run_as_it_was() {
        let mut b = RunBuilder::default();
        b.push_bytes(&[1]);
        assert_eq!(
            b.push_with(|buf| {
                buf.push(2);
                Err("no")
            }),
            Err("no")
        );
        b.push_bytes(&[3, 4]);
        b.pop();
        let run = b.finish();
        assert_eq!((run.len(), run.item(0)), (1, Bytes::from_static(&[1])));
        assert_eq!(run.framed(0, 1).len(), ITEM_OVERHEAD + 1, "nothing of the others is left");
    }
}
