//! The items of an items job held until their results are in: numbered in arrival order, so
//! a ring indexed from the oldest still held makes every step O(1).

use super::job::Item;
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct Held {
    /// The number of `slots[0]`.
    base: u64,
    slots: VecDeque<Option<Item>>,
    live: usize,
    bytes: usize,
}

impl Held {
    /// Holds the next item; its number is the count pushed before it.
    pub fn push(&mut self, item: Item) {
        self.bytes += item.len();
        self.live += 1;
        self.slots.push_back(Some(item));
    }

    pub fn get(&self, number: u64) -> Option<&Item> {
        let at = usize::try_from(number.checked_sub(self.base)?).ok()?;
        self.slots.get(at)?.as_ref()
    }

    /// Lets go of items `first..end` (those still held).
    pub fn release(&mut self, first: u64, end: u64) {
        for number in first.max(self.base)..end {
            let Some(slot) =
                usize::try_from(number - self.base).ok().and_then(|at| self.slots.get_mut(at))
            else {
                break;
            };
            if let Some(item) = slot.take() {
                self.bytes -= item.len();
                self.live -= 1;
            }
        }
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    /// Clones of items `first..end`.
    pub fn range(&self, first: u64, end: u64) -> Vec<Item> {
        let mut items = Vec::with_capacity(usize::try_from(end.saturating_sub(first)).unwrap_or(0));
        items.extend((first..end).filter_map(|n| self.get(n).cloned()));
        items
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
    use super::*;
    use bytes::Bytes;

    fn item(n: usize) -> Item {
        Item::from(Bytes::from(vec![b'x'; n]))
    }

    #[test]
    fn items_are_held_by_number_until_released_in_any_order() {
        let mut h = Held::default();
        for n in [1, 2, 3, 4] {
            h.push(item(n));
        }
        assert_eq!((h.bytes(), h.get(2).map(Item::len)), (10, Some(3)));
        h.release(1, 3);
        assert_eq!((h.bytes(), h.get(1), h.get(0).map(Item::len)), (5, None, Some(1)));
        h.release(0, 1);
        assert_eq!(h.base, 3, "the ring moved past everything released");
        assert_eq!(h.range(0, 4).iter().map(Item::len).collect::<Vec<_>>(), vec![4]);
        h.release(3, 4);
        assert!(h.is_empty());
        h.push(item(7));
        assert_eq!(h.get(4).map(Item::len), Some(7), "numbering goes on");
    }
}
