//! What the K/V of one token are ([`KvShape`]) and how a store arranges tokens
//! ([`KvLayout`]): the two halves of every K/V store's description. The engine needs only
//! [`KvShape::bytes_per_token`] to turn a memory budget into token slots.

use crate::error::{KernelError, Result};
use crate::store::dtype::DType;

/// The K/V of one token: per layer, `num_kv_heads` key and value vectors of `head_dim`
/// elements, stored as `dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KvShape {
    /// Transformer layers (each has its own K and V).
    pub num_layers: usize,
    /// Key/value heads per layer.
    pub num_kv_heads: usize,
    /// Elements per head vector.
    pub head_dim: usize,
    /// Storage element type.
    pub dtype: DType,
}

impl KvShape {
    /// Elements of one token's K (or V) in one layer: `num_kv_heads * head_dim`.
    pub fn row_elems(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Bytes of K and V one token occupies over all layers.
    pub fn bytes_per_token(&self) -> u64 {
        2 * self.num_layers as u64 * self.row_elems() as u64 * self.dtype.size() as u64
    }

    /// Checks that no dimension is zero and that `slots` tokens of one layer's K (or V)
    /// fit in memory; returns that many elements.
    pub(crate) fn layer_elems(&self, slots: usize, what: &str) -> Result<usize> {
        for (name, v) in [
            ("num_layers", self.num_layers),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            (what, slots),
        ] {
            if v == 0 {
                return Err(KernelError::InvalidShape(format!("{name} must be > 0")));
            }
        }
        slots
            .checked_mul(self.row_elems())
            .filter(|n| n.checked_mul(self.dtype.size()).is_some())
            .filter(|n| n.checked_mul(2 * self.num_layers).is_some())
            .ok_or_else(|| KernelError::InvalidShape(format!("{what} x shape overflows usize")))
    }
}

/// How a store arranges tokens: what an engine's KV policy asks its executor for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvLayout {
    /// `num_blocks` blocks of `block_size` tokens (a [`KvCache`](crate::KvCache)).
    Paged {
        /// Blocks in the pool.
        num_blocks: usize,
        /// Tokens per block.
        block_size: usize,
    },
    /// One arena of `slots` token slots in which each sequence owns a run (a
    /// [`ContiguousKv`](crate::ContiguousKv)).
    Contiguous {
        /// Slots in the arena.
        slots: usize,
    },
}

impl KvLayout {
    /// Token slots the layout holds.
    pub fn slots(&self) -> usize {
        match *self {
            Self::Paged {
                num_blocks,
                block_size,
            } => num_blocks.saturating_mul(block_size),
            Self::Contiguous { slots } => slots,
        }
    }
}
