//! Block tables: for every sequence, the physical blocks that hold its tokens, in order.
//!
//! Logical block `i` of a sequence holds its tokens `i * block_size .. (i + 1) * block_size`;
//! token `t` lives in block `blocks[t / block_size]` at offset `t % block_size`, an O(1)
//! lookup. The tables are read through this type and changed only through the
//! [`BlockManager`](crate::BlockManager), which keeps every block's ref count equal to the
//! number of tables that hold it.

use crate::error::{KvError, Result};
use crate::ids::{BlockId, SeqId};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Where a sequence's last full block sits in the prefix cache: its chained hash and the
/// generation of the cache entry it matched (see `prefix.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChainLink {
    pub(crate) hash: u64,
    pub(crate) generation: u64,
}

/// One sequence's entry: its blocks and how many tokens they hold.
#[derive(Clone, Debug)]
pub struct SeqBlocks {
    pub(crate) blocks: Vec<BlockId>,
    pub(crate) num_tokens: usize,
    /// Prefix-cache chain up to the last full block; `None` when caching is off or the chain
    /// was broken (then later blocks of this sequence are not cached).
    pub(crate) chain: Option<ChainLink>,
}

impl SeqBlocks {
    /// The physical blocks, logical order.
    #[inline]
    pub fn blocks(&self) -> &[BlockId] {
        &self.blocks
    }

    /// Tokens stored.
    #[inline]
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }
}

/// Counters describing all block tables; O(1) to read.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockTableStats {
    /// Sequences with a table.
    pub num_sequences: usize,
    /// Block entries over all tables (a block shared by two sequences counts twice).
    pub total_entries: usize,
    /// Tokens over all sequences (shared tokens count once per sequence).
    pub total_tokens: usize,
    /// Token slots the entries cover (`total_entries x block_size`).
    pub total_slots: usize,
    /// `total_tokens / total_slots` (1.0 for no entries).
    pub utilization: f64,
    /// Heap and inline bytes of the tables.
    pub metadata_bytes: usize,
}

/// The block tables of all sequences.
#[derive(Clone, Debug)]
pub struct BlockTable {
    block_size: usize,
    /// `log2(block_size)` when it is a power of two: lookup is then a shift and a mask.
    shift: Option<u32>,
    seqs: FxHashMap<SeqId, SeqBlocks>,
    total_entries: usize,
    total_tokens: usize,
}

impl BlockTable {
    pub(crate) fn new(block_size: usize) -> Self {
        Self {
            block_size,
            shift: block_size
                .is_power_of_two()
                .then(|| block_size.trailing_zeros()),
            seqs: FxHashMap::default(),
            total_entries: 0,
            total_tokens: 0,
        }
    }

    /// Tokens per block.
    #[inline]
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Number of sequences with a table.
    #[inline]
    pub fn num_sequences(&self) -> usize {
        self.seqs.len()
    }

    /// Whether `seq` has a table.
    #[inline]
    pub fn contains(&self, seq: SeqId) -> bool {
        self.seqs.contains_key(&seq)
    }

    /// The entry of `seq`.
    #[inline]
    pub fn get(&self, seq: SeqId) -> Result<&SeqBlocks> {
        self.seqs.get(&seq).ok_or(KvError::UnknownSequence(seq))
    }

    /// The physical blocks of `seq`, in logical order (seed: `GetSequenceBlocks`).
    #[inline]
    pub fn blocks(&self, seq: SeqId) -> Result<&[BlockId]> {
        self.get(seq).map(SeqBlocks::blocks)
    }

    /// Length of `seq` in tokens (seed: `GetSequenceLength`).
    #[inline]
    pub fn len(&self, seq: SeqId) -> Result<usize> {
        self.get(seq).map(|s| s.num_tokens)
    }

    /// Whether there are no tables at all.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// The block holding token `index` of `seq` and the offset inside it (seed: `GetBlock`).
    #[inline]
    pub fn lookup(&self, seq: SeqId, index: usize) -> Result<(BlockId, usize)> {
        let s = self.get(seq)?;
        if index >= s.num_tokens {
            return Err(KvError::TokenOutOfRange {
                seq,
                index,
                len: s.num_tokens,
            });
        }
        let (logical, offset) = match self.shift {
            Some(sh) => (index >> sh, index & (self.block_size - 1)),
            None => (index / self.block_size, index % self.block_size),
        };
        Ok((s.blocks[logical], offset))
    }

    /// How many new blocks appending `num_new_tokens` to `seq` needs, not counting a
    /// copy-on-write of a shared last block (the manager's `blocks_needed` adds that).
    pub fn new_blocks_for(&self, seq: SeqId, num_new_tokens: usize) -> Result<usize> {
        let s = self.get(seq)?;
        Ok(self
            .blocks_for_tokens(s.num_tokens + num_new_tokens)
            .saturating_sub(s.blocks.len()))
    }

    /// Blocks needed to hold `tokens` tokens.
    #[inline]
    pub fn blocks_for_tokens(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// All sequences and their entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (SeqId, &SeqBlocks)> + '_ {
        self.seqs.iter().map(|(k, v)| (*k, v))
    }

    /// Counters over all tables (seed: `BlockTable.GetStats`). O(1).
    pub fn stats(&self) -> BlockTableStats {
        let total_slots = self.total_entries * self.block_size;
        BlockTableStats {
            num_sequences: self.seqs.len(),
            total_entries: self.total_entries,
            total_tokens: self.total_tokens,
            total_slots,
            utilization: if total_slots == 0 {
                1.0
            } else {
                self.total_tokens as f64 / total_slots as f64
            },
            metadata_bytes: self.metadata_bytes(),
        }
    }

    /// Bytes the tables occupy: the map's buckets plus the block ids of every entry.
    /// Computed from counters (O(1)); vectors' spare capacity is not counted.
    #[inline]
    pub fn metadata_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<(SeqId, SeqBlocks)>() + 1;
        self.seqs.capacity() * bucket + self.total_entries * std::mem::size_of::<BlockId>()
    }

    // ----- mutation, for the manager only -----

    pub(crate) fn insert(&mut self, seq: SeqId, entry: SeqBlocks) -> Result<()> {
        if self.seqs.contains_key(&seq) {
            return Err(KvError::SequenceExists(seq));
        }
        self.total_entries += entry.blocks.len();
        self.total_tokens += entry.num_tokens;
        self.seqs.insert(seq, entry);
        Ok(())
    }

    pub(crate) fn remove(&mut self, seq: SeqId) -> Result<SeqBlocks> {
        let e = self
            .seqs
            .remove(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        self.total_entries -= e.blocks.len();
        self.total_tokens -= e.num_tokens;
        Ok(e)
    }

    pub(crate) fn get_mut(&mut self, seq: SeqId) -> Result<&mut SeqBlocks> {
        self.seqs.get_mut(&seq).ok_or(KvError::UnknownSequence(seq))
    }

    /// Records a change of `entries` block entries and `tokens` tokens made through
    /// `get_mut`, so the O(1) totals stay exact.
    pub(crate) fn account(&mut self, entries: isize, tokens: isize) {
        self.total_entries = self.total_entries.wrapping_add_signed(entries);
        self.total_tokens = self.total_tokens.wrapping_add_signed(tokens);
    }
}
