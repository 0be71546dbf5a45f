//! The items of an items job held until their results are in, in the groups they arrived in:
//! a [`Run`] of framed items from a client that gathers them (the typed library), or loose
//! items one by one (lines, commands, fetched bodies). Items are numbered in arrival order,
//! so the group holding an item is found by its number, and a unit of consecutive items of
//! a run is taken as one slice of its buffer: nothing is done per item but a flag.

use super::job::Item;
use super::runs::Run;
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct Held {
    groups: VecDeque<Group>,
    /// The number the next item pushed gets.
    next: u64,
    live: usize,
    bytes: usize,
}

#[derive(Debug)]
struct Group {
    /// The number of its first item.
    first: u64,
    items: Items,
    /// Which of its items are still held.
    held: Vec<bool>,
    live: usize,
}

#[derive(Debug)]
enum Items {
    Framed(Run),
    /// A released loose item is replaced by an empty one: its memory goes at once.
    Loose(Vec<Item>),
}

impl Group {
    fn item_len(&self, at: usize) -> usize {
        match &self.items {
            Items::Framed(run) => run.item_len(at),
            Items::Loose(items) => items[at].len(),
        }
    }
}

/// The items of one unit, as they are sent: slices of runs, and loose items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    segments: Vec<Segment>,
    len: usize,
    bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `count` consecutive items of a run, framed (each its length, then its bytes).
    Framed {
        bytes: bytes::Bytes,
        count: usize,
    },
    Loose(Item),
}

impl Batch {
    /// How many items.
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes of the items, lengths not counted.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Each item on its own (a large item sent in pieces, tests).
    pub fn items(&self) -> Vec<Item> {
        let mut items = Vec::with_capacity(self.len);
        for segment in &self.segments {
            match segment {
                Segment::Loose(item) => items.push(item.clone()),
                Segment::Framed { bytes, count } => {
                    let mut at = 0;
                    for _ in 0..*count {
                        let len =
                            u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
                        let end = at + 8 + len as usize;
                        items.push(Item::from(bytes.slice(at + 8..end)));
                        at = end;
                    }
                }
            }
        }
        items
    }
}

impl Held {
    /// Holds the next items, numbered on from the last.
    pub fn push_items(&mut self, items: Vec<Item>) {
        let bytes = items.iter().map(Item::len).sum();
        self.push(Items::Loose(items), bytes);
    }

    /// Holds the items of `run`, numbered on from the last.
    pub fn push_run(&mut self, run: Run) {
        let bytes = run.items_len(0, run.len());
        self.push(Items::Framed(run), bytes);
    }

    fn push(&mut self, items: Items, bytes: usize) {
        let len = match &items {
            Items::Framed(run) => run.len(),
            Items::Loose(items) => items.len(),
        };
        if len == 0 {
            return;
        }
        self.groups.push_back(Group { first: self.next, items, held: vec![true; len], live: len });
        self.next += len as u64;
        self.live += len;
        self.bytes += bytes;
    }

    /// The group holding `number` (released or not), and its place there.
    fn find(&self, number: u64) -> Option<(usize, usize)> {
        let g = self.groups.partition_point(|g| g.first <= number).checked_sub(1)?;
        let at = usize::try_from(number - self.groups[g].first).ok()?;
        (at < self.groups[g].held.len()).then_some((g, at))
    }

    /// The first place at or after `number` (the groups before it may be gone): its group
    /// and its place there.
    fn seek(&self, number: u64) -> Option<(usize, usize)> {
        let Some(g) = self.groups.partition_point(|g| g.first <= number).checked_sub(1) else {
            return (!self.groups.is_empty()).then_some((0, 0));
        };
        match self.find(number) {
            Some(found) => Some(found),
            None => (g + 1 < self.groups.len()).then_some((g + 1, 0)),
        }
    }

    /// The places of group `g` from `at` that come before item `end`: `(g, at, stop)`, or
    /// `None` past the last group or at `end`.
    fn span(&self, g: usize, at: usize, end: u64) -> Option<(usize, usize, usize)> {
        let group = self.groups.get(g)?;
        let number = group.first + at as u64;
        let left =
            usize::try_from(end.checked_sub(number).filter(|&n| n > 0)?).unwrap_or(usize::MAX);
        Some((g, at, group.held.len().min(at.saturating_add(left))))
    }

    /// The length of item `number`, if it is held.
    #[cfg(test)]
    pub fn len_of(&self, number: u64) -> Option<usize> {
        let (g, at) = self.find(number)?;
        let group = &self.groups[g];
        group.held[at].then(|| group.item_len(at))
    }

    /// Where a batch from `first` ends: at most `max_items` items before `limit` and, past the
    /// first, at most `max_bytes` bytes (items no longer held count nothing).
    pub fn batch_end(&self, first: u64, limit: u64, max_items: u64, max_bytes: usize) -> u64 {
        let most = limit.min(first.saturating_add(max_items));
        let mut end = first;
        let mut bytes = 0usize;
        let mut at = self.seek(first);
        if let Some((g, i)) = at {
            // Items before the oldest group are released and gone: they weigh nothing.
            end = end.max((self.groups[g].first + i as u64).min(most));
        }
        while end < limit && end - first < max_items {
            let Some((g, i)) = at else {
                // Past every group: nothing held there weighs anything.
                return most;
            };
            let group = &self.groups[g];
            let room = (max_items - (end - first)).min(limit - end);
            let room = usize::try_from(room).unwrap_or(usize::MAX).min(group.held.len() - i);
            // How many items this step takes, and whether the byte budget stopped it.
            let (taken, full) = match &group.items {
                // A whole run still held (new items always are): its items up to the budget
                // in one binary search, not one step per item.
                Items::Framed(run) if group.live == group.held.len() && end > first => {
                    let fits =
                        |k: usize| bytes.saturating_add(run.items_len(i, i + k)) <= max_bytes;
                    let (mut lo, mut hi) = (0, room);
                    while lo < hi {
                        let mid = lo + (hi - lo).div_ceil(2);
                        if fits(mid) {
                            lo = mid;
                        } else {
                            hi = mid - 1;
                        }
                    }
                    bytes += run.items_len(i, i + lo);
                    (lo, lo < room)
                }
                _ => {
                    let len = if group.held[i] { group.item_len(i) } else { 0 };
                    // The first item of a batch goes whatever its size.
                    if end > first && bytes.saturating_add(len) > max_bytes {
                        (0, true)
                    } else {
                        bytes = bytes.saturating_add(len);
                        (1, false)
                    }
                }
            };
            end += taken as u64;
            if full {
                break;
            }
            at = if i + taken < group.held.len() {
                Some((g, i + taken))
            } else {
                (g + 1 < self.groups.len()).then_some((g + 1, 0))
            };
        }
        end
    }

    /// The items `first..end` still held, as a batch (a run's consecutive items as one slice).
    pub fn batch(&self, first: u64, end: u64) -> Batch {
        let mut batch = Batch::default();
        let mut next = self.seek(first);
        while let Some((g, mut at, stop)) = next.and_then(|(g, at)| self.span(g, at, end)) {
            let group = &self.groups[g];
            while at < stop {
                let from = at;
                while at < stop && group.held[at] {
                    at += 1;
                }
                if at > from {
                    batch.len += at - from;
                    match &group.items {
                        Items::Framed(run) => {
                            batch.bytes += run.items_len(from, at);
                            let bytes = run.framed(from, at);
                            batch.segments.push(Segment::Framed { bytes, count: at - from });
                        }
                        Items::Loose(items) => {
                            for item in &items[from..at] {
                                batch.bytes += item.len();
                                batch.segments.push(Segment::Loose(item.clone()));
                            }
                        }
                    }
                }
                while at < stop && !group.held[at] {
                    at += 1;
                }
            }
            next = Some((g + 1, 0));
        }
        batch
    }

    /// Lets go of items `first..end` (those still held).
    pub fn release(&mut self, first: u64, end: u64) {
        let mut next = self.seek(first);
        while let Some((g, at, stop)) = next.and_then(|(g, at)| self.span(g, at, end)) {
            let group = &mut self.groups[g];
            for i in at..stop {
                if std::mem::replace(&mut group.held[i], false) {
                    self.bytes -= group.item_len(i);
                    if let Items::Loose(items) = &mut group.items {
                        items[i] = Item::default();
                    }
                    group.live -= 1;
                    self.live -= 1;
                }
            }
            next = Some((g + 1, 0));
        }
        while self.groups.front().is_some_and(|g| g.live == 0) {
            self.groups.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::super::runs::run_of;
    use super::*;
    use bytes::Bytes;

    fn item(n: usize) -> Item {
        Item::from(Bytes::from(vec![b'x'; n]))
    }

    fn lens(batch: &Batch) -> Vec<usize> {
        batch.items().iter().map(Item::len).collect()
    }

    #[test]
    fn loose_items_are_held_by_number_until_released_in_any_order() {
        let mut h = Held::default();
        h.push_items(vec![item(1), item(2), item(3), item(4)]);
        assert_eq!((h.bytes(), h.len_of(2)), (10, Some(3)));
        h.release(1, 3);
        assert_eq!((h.bytes(), h.len_of(1), h.len_of(0)), (5, None, Some(1)));
        h.release(0, 1);
        assert_eq!(lens(&h.batch(0, 4)), vec![4]);
        h.release(3, 4);
        assert!(h.is_empty() && h.groups.is_empty(), "every group let go");
        h.push_items(vec![item(7)]);
        assert_eq!(h.len_of(4), Some(7), "numbering goes on");
    }

    #[test]
    fn a_unit_of_a_run_is_one_slice_per_stretch_of_held_items_across_runs() {
        let mut h = Held::default();
        h.push_run(run_of([&b"a"[..], b"bb", b"ccc"]));
        h.push_items(vec![item(4)]);
        h.push_run(run_of([&b"ddddd"[..], b"eeeeee"]));
        assert_eq!((h.bytes(), h.len_of(4), h.len_of(5)), (21, Some(5), Some(6)));
        let all = h.batch(0, 6);
        assert_eq!((all.len(), all.bytes(), all.segments().len()), (6, 21, 3));
        assert_eq!(lens(&all), vec![1, 2, 3, 4, 5, 6]);
        h.release(1, 2);
        let batch = h.batch(0, 5);
        assert_eq!(lens(&batch), vec![1, 3, 4, 5], "a released item is skipped");
        let framed = batch.segments().iter().filter(|s| matches!(s, Segment::Framed { .. }));
        assert_eq!(framed.count(), 3, "the first run in two slices, around the gap");
        assert_eq!(h.batch_end(0, 6, 10, 8), 4, "bytes stop it past the first item");
        assert_eq!(h.batch_end(5, 6, 10, 1), 6, "the first item goes whatever its size");
        assert_eq!(h.batch_end(0, 6, 2, 100), 2);
        h.release(0, 3);
        assert_eq!(h.groups.len(), 2, "the first run went once all of it was released");
        assert_eq!(h.batch_end(0, 6, 10, 8), 4, "from a group gone: its items weigh nothing");
        h.release(0, 5);
        assert_eq!((h.bytes(), lens(&h.batch(0, 6))), (6, vec![6]), "from a group gone");
        h.release(0, 6);
        assert!(h.is_empty() && h.bytes() == 0 && h.groups.is_empty());
        assert!(h.batch(0, 6).is_empty());
    }

    /// Where a batch ends, one item at a time: what `batch_end` must agree with.
    fn batch_end_by_steps(h: &Held, first: u64, limit: u64, max_items: u64, max: usize) -> u64 {
        let (mut end, mut bytes) = (first, 0usize);
        while end < limit && end - first < max_items {
            let len = h.len_of(end).unwrap_or(0);
            if end > first && bytes + len > max {
                break;
            }
            bytes += len;
            end += 1;
        }
        end
    }

    proptest::proptest! {
        #[test]
        fn batch_end_agrees_with_a_walk_item_by_item(
            groups in proptest::collection::vec(
                (proptest::bool::ANY, proptest::collection::vec(0usize..40, 1..30)), 1..6),
            released in proptest::collection::vec((0u64..120, 0u64..8), 0..4),
            front in 0u64..40,
            first in 0u64..120,
            max_items in 1u64..80,
            max_bytes in 0usize..400,
        ) {
            let mut h = Held::default();
            for (framed, sizes) in &groups {
                if *framed {
                    let items: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![1; n]).collect();
                    h.push_run(run_of(items.iter().map(Vec::as_slice)));
                } else {
                    h.push_items(sizes.iter().map(|&n| item(n)).collect());
                }
            }
            for (from, n) in released {
                h.release(from, from + n);
            }
            // Often the oldest groups are gone altogether.
            h.release(0, front);
            let limit = h.next;
            proptest::prop_assert_eq!(
                h.batch_end(first, limit, max_items, max_bytes),
                batch_end_by_steps(&h, first, limit, max_items, max_bytes)
            );
        }
    }
}
