//! A K/V store as a forward pass uses it, whatever its layout: [`KvStore`] writes new
//! tokens' K/V to their slots and attends over sequences addressed by [`KvLocation`]; it is
//! implemented by the paged [`KvCache`], the contiguous [`ContiguousKv`], and
//! [`KvStorage`] — whichever of the two a [`KvLayout`] asks for — so one model serves both
//! sides of every comparison.

use crate::attention::spec::{AttentionConfig, SeqSpec};
use crate::attention::{contiguous_attention, paged_attention};
use crate::error::{KernelError, Result};
use crate::step::KvLocation;
use crate::store::cache::KvCache;
use crate::store::contiguous::ContiguousKv;
use crate::store::shape::{KvLayout, KvShape};
use pagedattn_kv::BlockCopy;

/// A KV store the forward pass can write new K/V into and attend over.
pub trait KvStore {
    /// Writes row `i` of `k` and `v` (`[n, num_kv_heads, head_dim]`) to `slots[i]` of `layer`.
    fn write_kv(&mut self, layer: usize, slots: &[usize], k: &[f32], v: &[f32]) -> Result<()>;

    /// Causal attention for `q` (`[tokens, num_heads, head_dim]`) into `out` (same shape),
    /// for sequences whose K/V are wherever their [`KvLocation`] says.
    fn attend(
        &self,
        cfg: &AttentionConfig,
        layer: usize,
        q: &[f32],
        seqs: &[SeqSpec<KvLocation<'_>>],
        out: &mut [f32],
    ) -> Result<()>;
}

/// `seqs` with each location resolved by `address` into a store's own addressing; a
/// location of the other kind is an error naming the `kind` the store needs.
fn resolve<'a, K>(
    seqs: &[SeqSpec<KvLocation<'a>>],
    kind: &str,
    address: impl Fn(KvLocation<'a>) -> Option<K>,
) -> Result<Vec<SeqSpec<K>>> {
    seqs.iter()
        .enumerate()
        .map(|(i, s)| {
            address(s.kv)
                .map(|kv| s.with_kv(kv))
                .ok_or_else(|| KernelError::InvalidSequence {
                    seq: i,
                    reason: format!("this KV store needs a {kind} location"),
                })
        })
        .collect()
}

impl KvStore for KvCache {
    fn write_kv(&mut self, layer: usize, slots: &[usize], k: &[f32], v: &[f32]) -> Result<()> {
        KvCache::write_kv(self, layer, slots, k, v)
    }

    fn attend(
        &self,
        cfg: &AttentionConfig,
        layer: usize,
        q: &[f32],
        seqs: &[SeqSpec<KvLocation<'_>>],
        out: &mut [f32],
    ) -> Result<()> {
        let paged = resolve(seqs, "paged", |kv| match kv {
            KvLocation::Paged(table) => Some(table),
            KvLocation::Contiguous { .. } => None,
        })?;
        paged_attention(cfg, self, layer, q, &paged, out)
    }
}

impl KvStore for ContiguousKv {
    fn write_kv(&mut self, layer: usize, slots: &[usize], k: &[f32], v: &[f32]) -> Result<()> {
        ContiguousKv::write_kv(self, layer, slots, k, v)
    }

    fn attend(
        &self,
        cfg: &AttentionConfig,
        layer: usize,
        q: &[f32],
        seqs: &[SeqSpec<KvLocation<'_>>],
        out: &mut [f32],
    ) -> Result<()> {
        let runs = resolve(seqs, "contiguous", |kv| match kv {
            KvLocation::Contiguous { start_slot } => Some(self.run(start_slot)),
            KvLocation::Paged(_) => None,
        })?;
        contiguous_attention(cfg, self, layer, q, &runs, out)
    }
}

/// The store a [`KvLayout`] asks for.
#[derive(Clone, Debug)]
pub enum KvStorage {
    /// Blocks, read through block tables.
    Paged(KvCache),
    /// One arena, each sequence a run of it.
    Contiguous(ContiguousKv),
}

impl KvStorage {
    /// Allocates zeroed storage for `layout` tokens of `shape`.
    pub fn new(shape: KvShape, layout: KvLayout) -> Result<Self> {
        Ok(match layout {
            KvLayout::Paged {
                num_blocks,
                block_size,
            } => Self::Paged(KvCache::new(shape, num_blocks, block_size)?),
            KvLayout::Contiguous { slots } => Self::Contiguous(ContiguousKv::new(shape, slots)?),
        })
    }

    /// Copies whole blocks (copy-on-write); an error for a contiguous arena, which has
    /// none unless there is nothing to copy.
    pub fn copy_blocks(&mut self, copies: &[BlockCopy]) -> Result<()> {
        match self {
            Self::Paged(c) => c.copy_blocks(copies),
            Self::Contiguous(_) if copies.is_empty() => Ok(()),
            Self::Contiguous(_) => Err(KernelError::InvalidShape(
                "block copies need a paged KV cache".into(),
            )),
        }
    }
}

impl KvStore for KvStorage {
    fn write_kv(&mut self, layer: usize, slots: &[usize], k: &[f32], v: &[f32]) -> Result<()> {
        match self {
            Self::Paged(c) => c.write_kv(layer, slots, k, v),
            Self::Contiguous(c) => c.write_kv(layer, slots, k, v),
        }
    }

    fn attend(
        &self,
        cfg: &AttentionConfig,
        layer: usize,
        q: &[f32],
        seqs: &[SeqSpec<KvLocation<'_>>],
        out: &mut [f32],
    ) -> Result<()> {
        match self {
            Self::Paged(c) => c.attend(cfg, layer, q, seqs, out),
            Self::Contiguous(c) => c.attend(cfg, layer, q, seqs, out),
        }
    }
}
