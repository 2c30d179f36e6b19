//! What a KV cache looks like: pool size, block size, and the model shape used to turn
//! blocks into bytes for the memory accounting.

use crate::error::{KvError, Result};
use serde::{Deserialize, Serialize};

/// Tokens per block unless configured otherwise (vLLM's default too).
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// Configuration of a [`BlockManager`](crate::BlockManager).
///
/// `num_layers`, `num_kv_heads`, `head_dim` and `elem_bytes` do not change how blocks are
/// managed; they say how many bytes one token's K and V take, so stats can report KV bytes
/// and the metadata overhead relative to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvConfig {
    /// Blocks in the pool.
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Transformer layers (each stores its own K and V per token).
    pub num_layers: usize,
    /// Key/value heads per layer.
    pub num_kv_heads: usize,
    /// Elements per head vector.
    pub head_dim: usize,
    /// Bytes per stored element (4 for f32, 2 for f16/bf16).
    pub elem_bytes: usize,
    /// Keep full blocks addressable by their token prefix for reuse by later prompts.
    pub enable_prefix_caching: bool,
}

impl KvConfig {
    /// A pool of `num_blocks` blocks of [`DEFAULT_BLOCK_SIZE`] tokens for the seed's model
    /// shape (32 layers, 32 KV heads, head_dim 128, f32), prefix caching off.
    pub fn new(num_blocks: usize) -> Self {
        Self {
            num_blocks,
            block_size: DEFAULT_BLOCK_SIZE,
            num_layers: 32,
            num_kv_heads: 32,
            head_dim: 128,
            elem_bytes: 4,
            enable_prefix_caching: false,
        }
    }

    /// Sets the block size.
    #[must_use]
    pub fn with_block_size(mut self, block_size: usize) -> Self {
        self.block_size = block_size;
        self
    }

    /// Sets the model shape used for byte accounting.
    #[must_use]
    pub fn with_shape(
        mut self,
        num_layers: usize,
        num_kv_heads: usize,
        head_dim: usize,
        elem_bytes: usize,
    ) -> Self {
        self.num_layers = num_layers;
        self.num_kv_heads = num_kv_heads;
        self.head_dim = head_dim;
        self.elem_bytes = elem_bytes;
        self
    }

    /// Turns prefix caching on or off.
    #[must_use]
    pub fn with_prefix_caching(mut self, on: bool) -> Self {
        self.enable_prefix_caching = on;
        self
    }

    /// Bytes of K and V one token occupies across all layers.
    pub fn kv_bytes_per_token(&self) -> u64 {
        2 * self.num_layers as u64
            * self.num_kv_heads as u64
            * self.head_dim as u64
            * self.elem_bytes as u64
    }

    /// Bytes of K and V the whole pool holds.
    pub fn kv_bytes(&self) -> u64 {
        self.kv_bytes_per_token() * self.num_blocks as u64 * self.block_size as u64
    }

    /// Checks that the configuration describes a cache this crate can manage.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(KvError::InvalidConfig(m.to_string()));
        if self.num_blocks == 0 {
            return bad("num_blocks must be at least 1");
        }
        // u32::MAX is the free queue's "not linked" marker and the sentinel takes one more.
        if self.num_blocks >= (u32::MAX - 1) as usize {
            return bad("num_blocks must be below 2^32 - 2");
        }
        if self.block_size == 0 {
            return bad("block_size must be at least 1");
        }
        if self.block_size > u16::MAX as usize {
            return bad("block_size must be at most 65535");
        }
        if self.num_layers == 0 || self.num_kv_heads == 0 || self.head_dim == 0 {
            return bad("num_layers, num_kv_heads and head_dim must be at least 1");
        }
        if ![1, 2, 4, 8].contains(&self.elem_bytes) {
            return bad("elem_bytes must be 1, 2, 4 or 8");
        }
        let total = [
            2,
            self.num_layers,
            self.num_kv_heads,
            self.head_dim,
            self.elem_bytes,
            self.num_blocks,
            self.block_size,
        ]
        .iter()
        .try_fold(1u64, |acc, &x| acc.checked_mul(x as u64));
        if total.is_none() {
            return bad("total KV bytes overflow 64 bits");
        }
        if self.num_blocks.checked_mul(self.block_size).is_none() {
            return bad("num_blocks x block_size overflows");
        }
        Ok(())
    }
}
