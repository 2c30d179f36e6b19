//! The free block queue: an intrusive doubly linked list over two index arrays.
//!
//! Why not a `VecDeque`: a freed block that still holds a cached prefix must be revivable
//! (taken out of the *middle* of the queue) in O(1) when a later prompt hits it. Links live
//! in `prev`/`next` arrays indexed by block id; index `n` is the sentinel of a circular
//! list, so push, pop and remove never branch on "first" or "last". A block that is not in
//! the queue has `next == NOT_LINKED`, which makes membership an O(1) check as well.
//!
//! Order is LRU: blocks are taken from the front and returned to the back, so the block
//! freed longest ago is evicted (reused) first.

const NOT_LINKED: u32 = u32::MAX;

/// O(1) free queue with removal from the middle. Stores no heap data per operation.
#[derive(Clone, Debug)]
pub(crate) struct FreeQueue {
    prev: Vec<u32>,
    next: Vec<u32>,
    len: usize,
}

impl FreeQueue {
    /// A queue holding every block `0..n` in id order.
    pub(crate) fn full(n: usize) -> Self {
        let s = n as u32; // sentinel
        let mut prev = Vec::with_capacity(n + 1);
        let mut next = Vec::with_capacity(n + 1);
        for i in 0..=s {
            prev.push(if i == 0 { s } else { i - 1 });
            next.push(if i == s { 0 } else { i + 1 });
        }
        if n == 0 {
            prev[0] = 0;
            next[0] = 0;
        }
        Self { prev, next, len: n }
    }

    #[inline]
    fn sentinel(&self) -> u32 {
        (self.next.len() - 1) as u32
    }

    /// Number of blocks in the queue.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `b` is in the queue.
    #[inline]
    pub(crate) fn contains(&self, b: u32) -> bool {
        self.next[b as usize] != NOT_LINKED
    }

    /// The block at the front (next to be handed out), if any.
    #[inline]
    pub(crate) fn front(&self) -> Option<u32> {
        let f = self.next[self.sentinel() as usize];
        (f != self.sentinel()).then_some(f)
    }

    /// Removes and returns the front block.
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<u32> {
        let f = self.front()?;
        self.remove(f);
        Some(f)
    }

    /// Appends `b` at the back. `b` must not be in the queue.
    #[inline]
    pub(crate) fn push_back(&mut self, b: u32) {
        debug_assert!(!self.contains(b), "block {b} pushed twice");
        let s = self.sentinel();
        let last = self.prev[s as usize];
        self.prev[b as usize] = last;
        self.next[b as usize] = s;
        self.next[last as usize] = b;
        self.prev[s as usize] = b;
        self.len += 1;
    }

    /// Puts `b` at the front (next to be handed out). `b` must not be in the queue.
    #[inline]
    pub(crate) fn push_front(&mut self, b: u32) {
        debug_assert!(!self.contains(b), "block {b} pushed twice");
        let s = self.sentinel();
        let first = self.next[s as usize];
        self.prev[b as usize] = s;
        self.next[b as usize] = first;
        self.prev[first as usize] = b;
        self.next[s as usize] = b;
        self.len += 1;
    }

    /// Unlinks `b` from wherever it is. `b` must be in the queue.
    #[inline]
    pub(crate) fn remove(&mut self, b: u32) {
        debug_assert!(self.contains(b), "block {b} is not queued");
        let (p, n) = (self.prev[b as usize], self.next[b as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
        self.next[b as usize] = NOT_LINKED;
        self.prev[b as usize] = NOT_LINKED;
        self.len -= 1;
    }

    /// Front-to-back iteration (for invariant checks and tests; O(len)).
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let s = self.sentinel();
        let mut cur = self.next[s as usize];
        std::iter::from_fn(move || {
            if cur == s {
                None
            } else {
                let b = cur;
                cur = self.next[b as usize];
                Some(b)
            }
        })
    }

    /// Heap bytes of the link arrays.
    #[inline]
    pub(crate) fn heap_bytes(&self) -> usize {
        (self.prev.capacity() + self.next.capacity()) * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_middle_removal() {
        let mut q = FreeQueue::full(4);
        assert_eq!(q.iter().collect::<Vec<_>>(), [0, 1, 2, 3]);
        q.remove(2);
        assert!(!q.contains(2));
        assert_eq!(q.iter().collect::<Vec<_>>(), [0, 1, 3]);
        assert_eq!(q.pop_front(), Some(0));
        q.push_back(2);
        q.push_back(0);
        assert_eq!(q.iter().collect::<Vec<_>>(), [1, 3, 2, 0]);
        assert_eq!(q.len(), 4);
        while q.pop_front().is_some() {}
        assert_eq!(q.len(), 0);
        assert_eq!(q.front(), None);
        q.push_back(3);
        assert_eq!(q.iter().collect::<Vec<_>>(), [3]);
        q.push_front(1);
        assert_eq!(q.iter().collect::<Vec<_>>(), [1, 3]);
    }
}
