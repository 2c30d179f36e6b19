//! Stats of the block manager, O(1) to read and serializable.

use serde::{Deserialize, Serialize};

/// A snapshot of the block manager's counters (seed: `BlockManagerStats`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockManagerStats {
    /// Tokens per block.
    pub block_size: usize,
    /// Blocks in the pool.
    pub total_blocks: usize,
    /// Blocks in the free queue (including cached ones that can be evicted).
    pub free_blocks: usize,
    /// Blocks held by at least one sequence.
    pub used_blocks: usize,
    /// Free blocks that still hold a prefix-cache entry.
    pub cached_free_blocks: usize,
    /// Sequences with a block table.
    pub num_sequences: usize,
    /// Token slots written in used blocks (a block shared by several sequences counts once).
    pub tokens_stored: usize,
    /// `tokens_stored / (used_blocks x block_size)`; 1.0 when nothing is used.
    pub utilization: f64,
    /// Highest `used_blocks` seen.
    pub peak_used_blocks: usize,
    /// Blocks handed out by the free queue (including copy-on-write copies).
    pub allocations: u64,
    /// Blocks returned to the free queue.
    pub frees: u64,
    /// Allocations served by a block that had been handed out and freed before.
    pub reused_allocations: u64,
    /// `reused_allocations / allocations` (0.0 before the first allocation).
    pub block_reuse_rate: f64,
    /// Copy-on-write copies performed.
    pub cow_copies: u64,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_queries: u64,
    /// Prompt tokens found in the prefix cache.
    pub prefix_hits: u64,
    /// `prefix_hits / prefix_queries` (0.0 before the first query).
    pub prefix_hit_rate: f64,
    /// Cached blocks whose entry was dropped because the block was reused.
    pub prefix_evictions: u64,
    /// Bytes of K and V the pool stands for (from the configured model shape).
    pub kv_bytes: u64,
    /// Bytes of bookkeeping: per-block state, free queue, prefix cache, block tables.
    pub metadata_bytes: u64,
    /// `metadata_bytes / kv_bytes`.
    pub metadata_overhead: f64,
}

/// `num / den`, or `empty` when `den` is zero.
#[inline]
pub(crate) fn ratio(num: f64, den: f64, empty: f64) -> f64 {
    if den == 0.0 {
        empty
    } else {
        num / den
    }
}
