//! A picture of the block pool for people: every block's state, aggregated into at most a
//! given number of cells so that a view of 100,000 blocks stays small, and the latest
//! copy-on-write targets. O(blocks + block-table entries) to take; nothing on the hot paths
//! but a fixed ring of recent copies.

use crate::block_manager::BlockManager;
use crate::ids::SeqId;
use crate::pool::RECENT_COPIES;
use serde::{Deserialize, Serialize};

/// The blocks of one cell of a [`PoolView`], counted by state. Every block is in exactly
/// one of `free`, `cached_free`, `used` and `shared`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolCell {
    /// Free and holding nothing.
    pub free: u32,
    /// Free, but still holding a prefix-cache entry that a new prompt can revive.
    pub cached_free: u32,
    /// Held by exactly one sequence.
    pub used: u32,
    /// Held by several sequences (forks, shared prompt prefixes).
    pub shared: u32,
    /// The largest reference count among the cell's blocks.
    pub max_refs: u32,
    /// The sequence holding the cell's first held block, for colouring.
    pub owner: Option<u64>,
}

/// The pool at one moment (see [`BlockManager::pool_view`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    /// Blocks in the pool.
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Blocks aggregated per cell (1 when the pool fits in the cells asked for); cell `i`
    /// holds blocks `i * blocks_per_cell ..`, the last one possibly fewer.
    pub blocks_per_cell: usize,
    /// The cells, in block order.
    pub cells: Vec<PoolCell>,
    /// Copies-on-write made so far.
    pub cow_copies: u64,
    /// The latest copy-on-write targets (up to [`RECENT_COPIES`]) as `(ordinal, block)`:
    /// the `ordinal`-th copy (from 1) went to `block`. Oldest first.
    pub recent_copies: Vec<(u64, u32)>,
}

impl BlockManager {
    /// The pool's blocks by state, in at most `max_cells` cells (at least 1).
    pub fn pool_view(&self, max_cells: usize) -> PoolView {
        let n = self.pool.num_blocks();
        let per = n.div_ceil(max_cells.max(1)).max(1);
        let mut cells = vec![PoolCell::default(); n.div_ceil(per)];
        let mut owner: Vec<Option<SeqId>> = vec![None; n];
        for (seq, blocks) in self.tables.iter() {
            for b in blocks.blocks() {
                owner[b.index()].get_or_insert(seq);
            }
        }
        let cache = self.pool.cache.as_ref();
        for (b, who) in owner.iter().enumerate() {
            let cell = &mut cells[b / per];
            let refs = self.pool.meta(b as u32).ref_count;
            match refs {
                0 if cache.is_some_and(|c| c.is_cached(b as u32)) => cell.cached_free += 1,
                0 => cell.free += 1,
                1 => cell.used += 1,
                _ => cell.shared += 1,
            }
            cell.max_refs = cell.max_refs.max(refs);
            if cell.owner.is_none() && refs > 0 {
                cell.owner = who.map(|s| s.0);
            }
        }
        let total = self.pool.cow_copies;
        let kept = total.min(RECENT_COPIES as u64);
        let recent_copies = (total - kept + 1..=total)
            .map(|k| {
                (
                    k,
                    self.pool.recent_copies[((k - 1) % RECENT_COPIES as u64) as usize],
                )
            })
            .collect();
        PoolView {
            num_blocks: n,
            block_size: self.config.block_size,
            blocks_per_cell: per,
            cells,
            cow_copies: total,
            recent_copies,
        }
    }
}
