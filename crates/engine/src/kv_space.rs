//! KV policies as a value: the paged block manager (with or without prefix caching) or
//! the contiguous allocator (max / pow2 / oracle sizing), behind one small interface, so
//! one scheduler serves both sides of every comparison.
//!
//! Every policy gets its capacity from the same number of token slots, derived from one
//! KV budget in bytes.

use crate::error::{EngineError, Result};
use crate::ids::{SeqId, TokenId};
use pagedattn_kernels::{Batch, KvLayout, KvLocation};
use pagedattn_kv::{
    BlockCopy, BlockManager, ContiguousAllocator, ContiguousSizing, KvConfig, KvError,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How KV memory is managed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvPolicy {
    /// Paged blocks, allocated as tokens arrive.
    Paged,
    /// Paged blocks with prefix caching.
    PagedPrefixCache,
    /// One contiguous run per sequence, reserved at admission (never grows).
    Contiguous(ContiguousSizing),
}

impl KvPolicy {
    /// All policies, in report order.
    pub const ALL: [Self; 5] = [
        Self::Paged,
        Self::PagedPrefixCache,
        Self::Contiguous(ContiguousSizing::Max),
        Self::Contiguous(ContiguousSizing::Pow2),
        Self::Contiguous(ContiguousSizing::Oracle),
    ];

    /// The policy's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Paged => "paged",
            Self::PagedPrefixCache => "paged-prefix",
            Self::Contiguous(ContiguousSizing::Max) => "contiguous-max",
            Self::Contiguous(ContiguousSizing::Pow2) => "contiguous-pow2",
            Self::Contiguous(ContiguousSizing::Oracle) => "contiguous-oracle",
        }
    }

    /// Whether K/V live in blocks.
    pub fn is_paged(self) -> bool {
        matches!(self, Self::Paged | Self::PagedPrefixCache)
    }
}

impl fmt::Display for KvPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KvPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "unknown KV policy '{s}' (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// KV memory use at one moment, comparable across policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KvUsage {
    /// Token slots in all.
    pub capacity_slots: usize,
    /// Slots held by sequences (used blocks x block size, or reserved runs).
    pub held_slots: usize,
    /// Slots holding a token's K/V.
    pub tokens_stored: usize,
    /// Held but empty slots (internal fragmentation).
    pub internal_fragmentation_slots: usize,
    /// Free slots outside the largest free run (contiguous only; 0 for paged).
    pub external_fragmentation_slots: usize,
    /// Share of allocations served by previously freed blocks (paged only).
    pub block_reuse: f64,
    /// Prefix-cache hit rate over prompt tokens (prefix caching only).
    pub prefix_hit_rate: f64,
    /// Bookkeeping bytes / KV bytes.
    pub metadata_overhead: f64,
}

impl KvUsage {
    /// `held_slots / capacity_slots`, 0 to 1 (vLLM's `kv_cache_usage_perc`).
    pub fn held_fraction(&self) -> f64 {
        self.held_slots as f64 / self.capacity_slots.max(1) as f64
    }

    /// `tokens_stored / held_slots` (1.0 when nothing is held).
    pub fn utilization(&self) -> f64 {
        if self.held_slots == 0 {
            1.0
        } else {
            self.tokens_stored as f64 / self.held_slots as f64
        }
    }
}

/// Outcome of [`KvSpace::grow`].
pub(crate) enum Grow {
    /// Room made; a copy-on-write the executor must perform before the step, if any.
    Done(Option<BlockCopy>),
    /// Not enough free blocks; nothing changed.
    OutOfBlocks,
}

pub(crate) enum KvSpace {
    Paged(BlockManager),
    Contiguous(ContiguousAllocator),
}

impl KvSpace {
    /// The space for `policy` with `capacity_tokens` slots; errors if one sequence of
    /// `max_len` tokens could not fit.
    pub(crate) fn new(
        policy: KvPolicy,
        budget_bytes: u64,
        kv_bytes_per_token: u64,
        block_size: usize,
        max_len: usize,
    ) -> Result<(Self, KvLayout)> {
        if block_size == 0 || kv_bytes_per_token == 0 {
            return Err(EngineError::InvalidConfig(
                "block size and KV bytes per token must be at least 1".into(),
            ));
        }
        let slots = usize::try_from(budget_bytes / kv_bytes_per_token).unwrap_or(usize::MAX);
        let num_blocks = slots / block_size;
        let capacity = num_blocks * block_size;
        let needed = match policy {
            KvPolicy::Paged | KvPolicy::PagedPrefixCache => {
                max_len.div_ceil(block_size) * block_size
            }
            KvPolicy::Contiguous(s) => s.slots_for(max_len, max_len),
        };
        if capacity < needed || capacity == 0 {
            return Err(EngineError::KvCapacityTooSmall {
                budget_bytes,
                capacity_tokens: capacity,
                max_len,
                needed_tokens: needed,
            });
        }
        let cfg = KvConfig::new(num_blocks)
            .with_block_size(block_size)
            .with_bytes_per_token(kv_bytes_per_token)
            .with_prefix_caching(policy == KvPolicy::PagedPrefixCache);
        Ok(match policy {
            KvPolicy::Paged | KvPolicy::PagedPrefixCache => (
                Self::Paged(BlockManager::new(cfg)?),
                KvLayout::Paged {
                    num_blocks,
                    block_size,
                },
            ),
            KvPolicy::Contiguous(s) => (
                Self::Contiguous(ContiguousAllocator::new(
                    capacity,
                    s,
                    max_len,
                    kv_bytes_per_token,
                )?),
                KvLayout::Contiguous { slots: capacity },
            ),
        })
    }

    /// Whether a sequence with `tokens` (to be computed, minus cached prefix) and final
    /// length `final_len` can be admitted now. Paged admission keeps `reserve_blocks` free
    /// for the growth of what is already running.
    pub(crate) fn can_admit(
        &self,
        tokens: &[TokenId],
        final_len: usize,
        reserve_blocks: usize,
    ) -> bool {
        match self {
            Self::Paged(m) => {
                let hit = m.cached_prefix(tokens);
                let new_blocks =
                    tokens.len().div_ceil(m.block_size()) - hit.tokens / m.block_size();
                new_blocks + hit.revived_blocks + reserve_blocks <= m.num_free_blocks()
            }
            Self::Contiguous(a) => a.can_reserve(final_len),
        }
    }

    /// Admits `seq`; returns how many leading tokens are already cached.
    pub(crate) fn admit(
        &mut self,
        seq: SeqId,
        tokens: &[TokenId],
        final_len: usize,
    ) -> Result<usize> {
        match self {
            Self::Paged(m) => Ok(m.add_sequence_with_prefix(seq, tokens)?),
            Self::Contiguous(a) => {
                a.reserve(seq, final_len)?;
                Ok(0)
            }
        }
    }

    /// Makes room for `new` tokens of `seq`.
    pub(crate) fn grow(&mut self, seq: SeqId, new: &[TokenId]) -> Result<Grow> {
        match self {
            Self::Paged(m) => match m.append_tokens(seq, new) {
                Ok(out) => Ok(Grow::Done(out.copy)),
                Err(KvError::OutOfBlocks { .. }) => Ok(Grow::OutOfBlocks),
                Err(e) => Err(e.into()),
            },
            Self::Contiguous(a) => {
                a.append(seq, new.len())?;
                Ok(Grow::Done(None))
            }
        }
    }

    /// Blocks a sequence that still has `tokens` to compute will take (paged), for the
    /// admission reserve.
    pub(crate) fn blocks_for(&self, tokens: usize) -> usize {
        match self {
            Self::Paged(m) => tokens.div_ceil(m.block_size()),
            Self::Contiguous(_) => 0,
        }
    }

    pub(crate) fn free(&mut self, seq: SeqId) -> Result<()> {
        match self {
            Self::Paged(m) => {
                m.free_sequence(seq)?;
            }
            Self::Contiguous(a) => {
                a.free(seq)?;
            }
        }
        Ok(())
    }

    /// Frees `seq` whose latest K/V were never computed (its step failed): paged blocks it
    /// alone holds also lose their prefix-cache entries.
    pub(crate) fn discard(&mut self, seq: SeqId) -> Result<()> {
        match self {
            Self::Paged(m) => {
                m.discard_sequence(seq)?;
            }
            Self::Contiguous(a) => {
                a.free(seq)?;
            }
        }
        Ok(())
    }

    /// Tokens whose K/V `seq` holds (its block table's or its run's fill).
    pub(crate) fn tokens_held(&self, seq: SeqId) -> Result<usize> {
        Ok(match self {
            Self::Paged(m) => m.tables().get(seq)?.num_tokens(),
            Self::Contiguous(a) => a.get(seq)?.used,
        })
    }

    /// Sequences holding memory.
    pub(crate) fn num_sequences(&self) -> usize {
        match self {
            Self::Paged(m) => m.tables().num_sequences(),
            Self::Contiguous(a) => a.stats().num_sequences,
        }
    }

    pub(crate) fn fork(&mut self, parent: SeqId, child: SeqId) -> Result<()> {
        match self {
            Self::Paged(m) => Ok(m.fork(parent, child)?),
            Self::Contiguous(_) => Err(EngineError::InvalidConfig(
                "contiguous KV cannot share blocks between sequences".into(),
            )),
        }
    }

    /// Where `seq`'s K/V live.
    pub(crate) fn location(&self, seq: SeqId) -> Result<KvLocation<'_>> {
        Ok(match self {
            Self::Paged(m) => KvLocation::Paged(m.tables().blocks(seq)?),
            Self::Contiguous(a) => KvLocation::Contiguous {
                start_slot: a.get(seq)?.start,
            },
        })
    }

    /// An empty step description for this space's layout.
    pub(crate) fn new_batch<'a>(&self) -> Batch<'a> {
        match self {
            Self::Paged(m) => Batch::paged(m.block_size()),
            Self::Contiguous(_) => Batch::contiguous(),
        }
    }

    pub(crate) fn usage(&self) -> KvUsage {
        match self {
            Self::Paged(m) => {
                let s = m.stats();
                let held = s.used_blocks * s.block_size;
                KvUsage {
                    capacity_slots: s.total_blocks * s.block_size,
                    held_slots: held,
                    tokens_stored: s.tokens_stored,
                    internal_fragmentation_slots: held - s.tokens_stored,
                    external_fragmentation_slots: 0,
                    block_reuse: s.block_reuse_rate,
                    prefix_hit_rate: s.prefix_hit_rate,
                    metadata_overhead: s.metadata_overhead,
                }
            }
            Self::Contiguous(a) => {
                let s = a.stats();
                KvUsage {
                    capacity_slots: s.total_slots,
                    held_slots: s.reserved_slots,
                    tokens_stored: s.tokens_stored,
                    internal_fragmentation_slots: s.internal_fragmentation_slots,
                    external_fragmentation_slots: s.external_fragmentation_slots,
                    block_reuse: 0.0,
                    prefix_hit_rate: 0.0,
                    metadata_overhead: s.metadata_overhead,
                }
            }
        }
    }

    /// The memory manager's own invariant check.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        match self {
            Self::Paged(m) => m.check_invariants(),
            Self::Contiguous(a) => a.check_invariants(),
        }
    }

    /// The block manager, for paged policies.
    pub(crate) fn block_manager(&self) -> Option<&BlockManager> {
        match self {
            Self::Paged(m) => Some(m),
            Self::Contiguous(_) => None,
        }
    }
}
