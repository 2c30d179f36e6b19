//! The seed's kernel vocabulary: an [`AttentionPhase`] and one kernel type per layout
//! behind the [`AttentionKernel`] trait. They are thin wrappers over the flattened-batch
//! functions (`paged_attention` and friends), which is what a model's forward pass calls.

use crate::attention::spec::{AttentionConfig, SeqSpec};
use crate::attention::{contiguous_attention, padded_attention, paged_attention};
use crate::error::{KernelError, Result};
use crate::store::cache::KvCache;
use crate::store::contiguous::{ContiguousKv, ContiguousRun};
use pagedattn_kv::BlockId;

/// Which phase a call serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionPhase {
    /// One new token per sequence; checked.
    Decode,
    /// Any number of new tokens per sequence (causal), over a cached prefix if any; decode
    /// sequences may be mixed in.
    Prefill,
}

/// An attention kernel over one kind of KV store.
pub trait AttentionKernel {
    /// The K/V store it reads.
    type Store;
    /// Where one sequence's K/V are in the store.
    type Location<'a>;

    /// A short name for reports.
    fn name(&self) -> &'static str;

    /// Computes attention for a flattened batch; see [`paged_attention`](crate::paged_attention)
    /// for the shapes.
    fn compute(
        &self,
        phase: AttentionPhase,
        store: &Self::Store,
        layer: usize,
        q: &[f32],
        seqs: &[SeqSpec<Self::Location<'_>>],
        out: &mut [f32],
    ) -> Result<()>;
}

fn check_phase<K>(phase: AttentionPhase, seqs: &[SeqSpec<K>]) -> Result<()> {
    if phase == AttentionPhase::Decode {
        if let Some(i) = seqs.iter().position(|s| s.query_len != 1) {
            return Err(KernelError::InvalidSequence {
                seq: i,
                reason: "decode needs exactly one query token per sequence".into(),
            });
        }
    }
    Ok(())
}

macro_rules! kernel {
    ($(#[$doc:meta])* $name:ident, $store:ty, $loc:ty, $label:literal, $f:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name {
            /// Heads, scale, ISA and split policy.
            pub config: AttentionConfig,
        }

        impl $name {
            /// A kernel with the given configuration.
            pub fn new(config: AttentionConfig) -> Self {
                Self { config }
            }
        }

        impl AttentionKernel for $name {
            type Store = $store;
            type Location<'a> = $loc;

            fn name(&self) -> &'static str {
                $label
            }

            fn compute(
                &self,
                phase: AttentionPhase,
                store: &$store,
                layer: usize,
                q: &[f32],
                seqs: &[SeqSpec<Self::Location<'_>>],
                out: &mut [f32],
            ) -> Result<()> {
                check_phase(phase, seqs)?;
                $f(&self.config, store, layer, q, seqs, out)
            }
        }
    };
}

kernel!(
    /// The paged kernel (the seed's `StandardPagedAttentionKernel`): K/V through block tables.
    PagedAttention, KvCache, &'a [BlockId], "paged", paged_attention
);
kernel!(
    /// The contiguous baseline: the same tile loop over per-sequence runs.
    ContiguousAttention, ContiguousKv, ContiguousRun, "contiguous", contiguous_attention
);
kernel!(
    /// The static-batching baseline: every sequence padded to the batch's longest.
    PaddedAttention, ContiguousKv, ContiguousRun, "padded", padded_attention
);
