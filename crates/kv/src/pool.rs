//! The block pool: every physical block's ref count and fill level, the free queue, and
//! the prefix cache. Mechanism only; which sequence holds which block is the manager's
//! business (`block_manager.rs`).
//!
//! Invariants kept here (checked by `BlockManager::check_invariants`):
//! - a block is in the free queue iff its ref count is 0;
//! - `tokens_stored` is the sum of `filled` over blocks with ref count > 0;
//! - `cached_free` counts blocks in the free queue that still hold a prefix-cache entry.

use crate::block_table::ChainLink;
use crate::free_queue::FreeQueue;
use crate::ids::TokenId;
use crate::prefix::PrefixCache;

/// Copy-on-write targets remembered for the pool view (`PoolView::recent_copies`).
pub const RECENT_COPIES: usize = 32;

/// Per-block bookkeeping, 8 bytes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BlockMeta {
    pub(crate) ref_count: u32,
    /// Token slots written, `0..=block_size`.
    pub(crate) filled: u16,
    /// Handed out at least once before (for the block reuse rate).
    pub(crate) reused: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Pool {
    /// Free queue whose records carry every block's `BlockMeta`.
    pub(crate) free: FreeQueue<BlockMeta>,
    pub(crate) cache: Option<PrefixCache>,
    pub(crate) cached_free: usize,
    pub(crate) tokens_stored: usize,
    pub(crate) peak_used: usize,
    pub(crate) allocations: u64,
    pub(crate) reused_allocations: u64,
    pub(crate) frees: u64,
    pub(crate) cow_copies: u64,
    /// The latest copy-on-write targets: copy `k` (from 1) went to `recent_copies[(k - 1)
    /// % RECENT_COPIES]`.
    pub(crate) recent_copies: Box<[u32; RECENT_COPIES]>,
}

impl Pool {
    pub(crate) fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        Self {
            free: FreeQueue::full(num_blocks),
            cache: prefix_caching.then(|| PrefixCache::new(num_blocks, block_size)),
            cached_free: 0,
            tokens_stored: 0,
            peak_used: 0,
            allocations: 0,
            reused_allocations: 0,
            frees: 0,
            cow_copies: 0,
            recent_copies: Box::new([0; RECENT_COPIES]),
        }
    }

    #[inline]
    pub(crate) fn num_blocks(&self) -> usize {
        self.free.num_blocks()
    }

    #[inline]
    pub(crate) fn used(&self) -> usize {
        self.num_blocks() - self.free.len()
    }

    /// State of block `b`.
    #[inline]
    pub(crate) fn meta(&self, b: u32) -> &BlockMeta {
        self.free.payload(b)
    }

    #[inline]
    fn note_used(&mut self) {
        self.peak_used = self.peak_used.max(self.used());
    }

    /// Takes the least recently freed block, evicting its cache entry if it has one.
    /// The caller has checked that the queue is not empty.
    #[inline]
    pub(crate) fn take(&mut self) -> u32 {
        let b = self.free.pop_front().expect("caller checked free blocks");
        if let Some(c) = &mut self.cache {
            if c.is_cached(b) {
                c.evict(b);
                self.cached_free -= 1;
            }
        }
        let m = self.free.payload_mut(b);
        self.allocations += 1;
        if m.reused {
            self.reused_allocations += 1;
        }
        *m = BlockMeta {
            ref_count: 1,
            filled: 0,
            reused: true,
        };
        self.note_used();
        b
    }

    /// Adds a holder to `b`; revives it from the free queue if it was a cached free block.
    #[inline]
    pub(crate) fn share(&mut self, b: u32) {
        let m = self.free.payload_mut(b);
        m.ref_count += 1;
        if m.ref_count == 1 {
            self.tokens_stored += usize::from(m.filled);
            self.free.remove(b);
            if self.cache.as_ref().is_some_and(|c| c.is_cached(b)) {
                self.cached_free -= 1;
            }
            self.note_used();
        }
    }

    /// Drops one holder of `b`; at zero the block returns to the free queue: to the back
    /// (evicted last) if it holds a cache entry, else to the front (reused first, since
    /// its contents are worth nothing).
    #[inline]
    pub(crate) fn release(&mut self, b: u32) {
        let m = self.free.payload_mut(b);
        debug_assert!(m.ref_count > 0);
        m.ref_count -= 1;
        if m.ref_count == 0 {
            self.tokens_stored -= usize::from(m.filled);
            self.frees += 1;
            if self.cache.as_ref().is_some_and(|c| c.is_cached(b)) {
                self.cached_free += 1;
                self.free.push_back(b);
            } else {
                self.free.push_front(b);
            }
        }
    }

    /// Drops one holder of `b` whose contents cannot be trusted (the step that was to write
    /// them failed); at zero its prefix-cache entry is dropped too and the block goes to
    /// the front of the free queue, so no later prompt can hit it.
    pub(crate) fn release_discarded(&mut self, b: u32) {
        if self.meta(b).ref_count == 1 {
            if let Some(c) = &mut self.cache {
                if c.is_cached(b) {
                    c.evict(b);
                }
            }
        }
        self.release(b);
    }

    /// Writes token `t` into slot `slot` of `b` (which holds exactly `slot` tokens).
    #[inline]
    pub(crate) fn write(&mut self, b: u32, slot: usize, t: TokenId) {
        let m = self.free.payload_mut(b);
        debug_assert_eq!(usize::from(m.filled), slot);
        m.filled += 1;
        self.tokens_stored += 1;
        if let Some(c) = &mut self.cache {
            c.set_token(b, slot, t);
        }
    }

    /// Gives `dst` (just taken) the contents of `src`.
    pub(crate) fn copy(&mut self, src: u32, dst: u32) {
        let filled = self.meta(src).filled;
        self.free.payload_mut(dst).filled = filled;
        self.tokens_stored += usize::from(filled);
        if let Some(c) = &mut self.cache {
            c.copy_tokens(src, dst);
        }
        self.recent_copies[(self.cow_copies % RECENT_COPIES as u64) as usize] = dst;
        self.cow_copies += 1;
    }

    /// Registers full block `b` after `parent` in the prefix cache (if on).
    pub(crate) fn register(&mut self, b: u32, parent: ChainLink) -> Option<ChainLink> {
        let c = self.cache.as_mut()?;
        let (link, displaced) = c.register(b, parent);
        if let Some(d) = displaced {
            if self.meta(d).ref_count == 0 {
                self.cached_free -= 1;
            }
        }
        Some(link)
    }

    #[inline]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.free.heap_bytes() + self.cache.as_ref().map_or(0, PrefixCache::heap_bytes)
    }
}
