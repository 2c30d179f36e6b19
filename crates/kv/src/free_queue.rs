//! The free block queue: an intrusive doubly linked list over one array of block records.
//!
//! Why not a `VecDeque`: a freed block that still holds a cached prefix must be revivable
//! (taken out of the *middle* of the queue) in O(1) when a later prompt hits it. Each
//! block's record holds its `prev`/`next` links next to its payload (the pool's per-block
//! state), so one operation on a block touches one cache line for both — this is what keeps
//! a pool of a million blocks as fast as one of a hundred. Index `n` is the sentinel of a
//! circular list, so push, pop and remove never branch on "first" or "last". A block that
//! is not in the queue has `next == NOT_LINKED`, which makes membership O(1) as well.
//!
//! Order is LRU: blocks are taken from the front and returned to the back, so the block
//! freed longest ago is evicted (reused) first.

const NOT_LINKED: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Node<T> {
    prev: u32,
    next: u32,
    payload: T,
}

/// O(1) free queue with removal from the middle, over records carrying a payload of type
/// `T` per block. Stores no heap data per operation.
#[derive(Clone, Debug)]
pub(crate) struct FreeQueue<T> {
    nodes: Vec<Node<T>>,
    len: usize,
}

impl<T: Copy + Default> FreeQueue<T> {
    /// A queue holding every block `0..n` in id order, each with a default payload.
    pub(crate) fn full(n: usize) -> Self {
        let s = n as u32; // sentinel
        let nodes = (0..=s)
            .map(|i| Node {
                prev: if i == 0 { s } else { i - 1 },
                next: if i == s { 0 } else { i + 1 },
                payload: T::default(),
            })
            .collect();
        Self { nodes, len: n }
    }

    #[inline]
    fn sentinel(&self) -> u32 {
        (self.nodes.len() - 1) as u32
    }

    /// Number of blocks (queued or not).
    #[inline]
    pub(crate) fn num_blocks(&self) -> usize {
        self.nodes.len() - 1
    }

    /// The payload of block `b`.
    #[inline]
    pub(crate) fn payload(&self, b: u32) -> &T {
        &self.nodes[b as usize].payload
    }

    /// The payload of block `b`, mutable.
    #[inline]
    pub(crate) fn payload_mut(&mut self, b: u32) -> &mut T {
        &mut self.nodes[b as usize].payload
    }

    /// Every block's payload, by block id.
    pub(crate) fn payloads(&self) -> impl Iterator<Item = &T> + '_ {
        self.nodes[..self.num_blocks()].iter().map(|n| &n.payload)
    }

    /// Number of blocks in the queue.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `b` is in the queue.
    #[inline]
    pub(crate) fn contains(&self, b: u32) -> bool {
        self.nodes[b as usize].next != NOT_LINKED
    }

    /// The block at the front (next to be handed out), if any.
    #[inline]
    pub(crate) fn front(&self) -> Option<u32> {
        let f = self.nodes[self.sentinel() as usize].next;
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
        let last = self.nodes[s as usize].prev;
        self.nodes[b as usize].prev = last;
        self.nodes[b as usize].next = s;
        self.nodes[last as usize].next = b;
        self.nodes[s as usize].prev = b;
        self.len += 1;
    }

    /// Puts `b` at the front (next to be handed out). `b` must not be in the queue.
    #[inline]
    pub(crate) fn push_front(&mut self, b: u32) {
        debug_assert!(!self.contains(b), "block {b} pushed twice");
        let s = self.sentinel();
        let first = self.nodes[s as usize].next;
        self.nodes[b as usize].prev = s;
        self.nodes[b as usize].next = first;
        self.nodes[first as usize].prev = b;
        self.nodes[s as usize].next = b;
        self.len += 1;
    }

    /// Unlinks `b` from wherever it is. `b` must be in the queue.
    #[inline]
    pub(crate) fn remove(&mut self, b: u32) {
        debug_assert!(self.contains(b), "block {b} is not queued");
        let Node {
            prev: p, next: n, ..
        } = self.nodes[b as usize];
        self.nodes[p as usize].next = n;
        self.nodes[n as usize].prev = p;
        self.nodes[b as usize].next = NOT_LINKED;
        self.nodes[b as usize].prev = NOT_LINKED;
        self.len -= 1;
    }

    /// Front-to-back iteration (for invariant checks and tests; O(len)).
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let s = self.sentinel();
        let mut cur = self.nodes[s as usize].next;
        std::iter::from_fn(move || {
            if cur == s {
                None
            } else {
                let b = cur;
                cur = self.nodes[b as usize].next;
                Some(b)
            }
        })
    }

    /// Heap bytes of the records (links and payloads).
    #[inline]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node<T>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_middle_removal() {
        let mut q = FreeQueue::<()>::full(4);
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
