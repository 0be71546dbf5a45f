//! How a range is cut into chunks.
//!
//! # The automatic chunk size
//!
//! Aim for about eight chunks per worker, so a slow chunk or a slow worker is balanced by the
//! rest, capped so that one chunk stays a few milliseconds of work and its output about a
//! megabyte (65,536 items for `lines` and `bin`; 4,194,304 for `sum`, whose output is 32 bytes
//! a chunk). Below the cap, a range of L items over W workers gets chunks of ceil(L / 8W).
//! `--chunk-size N` overrides it (at most [`Format::max_chunk_items`]: 262,144 for `lines`,
//! 524,288 for `bin`, 16,777,216 for `sum`).

#[cfg(test)]
use powerpool_shared::MAX_CHUNK_ITEMS;
use powerpool_shared::{Format, RunChunk};

/// Chunks per worker that the automatic size aims for.
const CHUNKS_PER_WORKER: u128 = 8;

/// The automatic chunk size for `len` items over `workers` workers in `format`.
pub fn auto_size(len: u64, workers: usize, format: Format) -> u64 {
    let cap: u64 = match format {
        Format::Sum => 1 << 22,
        Format::Lines | Format::Bin => 1 << 16,
    };
    let per = CHUNKS_PER_WORKER * workers.max(1) as u128;
    let target = (u128::from(len)).div_ceil(per);
    u64::try_from(target).unwrap_or(u64::MAX).clamp(1, cap.min(format.max_chunk_items()))
}

/// A half-open range `start..end` cut into chunks of `size` items (the last may be shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunks {
    start: i64,
    end: i64,
    size: u64,
    count: u64,
}

impl Chunks {
    /// `start >= end` is an empty range, as in Python; `size` must be at least 1.
    pub fn new(start: i64, end: i64, size: u64) -> Chunks {
        let size = size.max(1);
        let count = u64::try_from(Chunks::len_of(start, end).div_ceil(u128::from(size)))
            .expect("a range of at most 2^64 items has at most 2^64 chunks");
        Chunks { start, end, size, count }
    }

    /// Number of items in `start..end`: up to 2^64 - 1, so u128 arithmetic.
    fn len_of(start: i64, end: i64) -> u128 {
        if start >= end {
            0
        } else {
            (i128::from(end) - i128::from(start)) as u128
        }
    }

    /// How many items the whole range holds.
    pub fn items(&self) -> u128 {
        Chunks::len_of(self.start, self.end)
    }

    /// How many chunks.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Items per chunk (the last chunk may hold fewer).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Chunk `index` as offsets `first..end` from the start of the range.
    pub fn offsets(&self, index: u64) -> (u64, u64) {
        let first = u128::from(index) * u128::from(self.size);
        let end = (first + u128::from(self.size)).min(self.items());
        // Offsets never exceed the item count, which fits a u64.
        (first as u64, end as u64)
    }

    /// The input at `offset` from the start of the range.
    pub fn item(&self, offset: u64) -> i64 {
        // start + offset lies within start..=end, so it fits an i64.
        (i128::from(self.start) + i128::from(offset)) as i64
    }

    /// The offset of input `item`, if it lies in `first..end` (offsets).
    pub fn offset_of(&self, item: i64, first: u64, end: u64) -> Option<u64> {
        let off = i128::from(item) - i128::from(self.start);
        (off >= i128::from(first) && off < i128::from(end)).then_some(off as u64)
    }

    /// Offsets `first..end` as a message tagged `tag`.
    pub fn message(&self, tag: u64, first: u64, end: u64) -> RunChunk {
        RunChunk { chunk: tag, start: self.item(first), end: self.item(end) }
    }

    /// Chunk `index` as a message; `index` must be below [`Chunks::count`].
    pub fn get(&self, index: u64) -> RunChunk {
        debug_assert!(index < self.count);
        let from = i128::from(self.start) + i128::from(index) * i128::from(self.size);
        let to = (from + i128::from(self.size)).min(i128::from(self.end));
        // Both lie within start..=end, so they fit an i64.
        RunChunk { chunk: index, start: from as i64, end: to as i64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(c: &Chunks) -> Vec<(i64, i64)> {
        (0..c.count()).map(|i| c.get(i)).map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn chunks_tile_the_range_exactly() {
        assert_eq!(covered(&Chunks::new(0, 10, 4)), vec![(0, 4), (4, 8), (8, 10)]);
        assert_eq!(covered(&Chunks::new(-3, 3, 100)), vec![(-3, 3)]);
        assert_eq!(covered(&Chunks::new(5, 5, 1)), vec![]);
        assert_eq!(covered(&Chunks::new(5, -5, 1)), vec![]);
        assert_eq!(covered(&Chunks::new(7, 8, 1)), vec![(7, 8)]);
    }

    #[test]
    fn the_widest_range_does_not_overflow() {
        let c = Chunks::new(i64::MIN, i64::MAX, MAX_CHUNK_ITEMS);
        assert_eq!(c.items(), u128::from(u64::MAX));
        let last = c.get(c.count() - 1);
        assert_eq!(last.end, i64::MAX);
        assert_eq!(c.get(0).start, i64::MIN);
        let near_top = Chunks::new(i64::MAX - 2, i64::MAX, 5);
        assert_eq!(covered(&near_top), vec![(i64::MAX - 2, i64::MAX)]);
    }

    #[test]
    fn auto_size_aims_for_eight_chunks_per_worker_under_a_cap() {
        assert_eq!(auto_size(100_000, 4, Format::Lines), 3125);
        assert_eq!(auto_size(10, 4, Format::Lines), 1);
        assert_eq!(auto_size(0, 4, Format::Lines), 1);
        assert_eq!(auto_size(1_000_000_000, 2, Format::Lines), 1 << 16);
        assert_eq!(auto_size(1_000_000_000, 2, Format::Sum), 1 << 22);
        assert_eq!(auto_size(u64::MAX, 1, Format::Bin), 1 << 16);
    }
}
