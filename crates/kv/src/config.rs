//! What a KV cache looks like: pool size, block size, and the bytes one token's K/V take
//! (for the memory accounting).

use crate::error::{KvError, Result};
use serde::{Deserialize, Serialize};

/// Tokens per block unless configured otherwise (vLLM's default too).
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// Bytes of K and V per token of the seed benchmark's model (32 layers, 32 KV heads of 128,
/// f32; 1 MiB), what [`KvConfig::new`] assumes until told otherwise.
pub const SEED_KV_BYTES_PER_TOKEN: u64 = 1 << 20;

/// Configuration of a [`BlockManager`](crate::BlockManager).
///
/// `bytes_per_token` does not change how blocks are managed; it says how many bytes one
/// token's K and V take (a store's `KvShape::bytes_per_token` in the kernels crate), so
/// stats can report KV bytes and the metadata overhead relative to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvConfig {
    /// Blocks in the pool.
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Bytes of K and V one token occupies across all layers.
    pub bytes_per_token: u64,
    /// Keep full blocks addressable by their token prefix for reuse by later prompts.
    pub enable_prefix_caching: bool,
}

impl KvConfig {
    /// A pool of `num_blocks` blocks of [`DEFAULT_BLOCK_SIZE`] tokens of
    /// [`SEED_KV_BYTES_PER_TOKEN`] bytes, prefix caching off.
    pub fn new(num_blocks: usize) -> Self {
        Self {
            num_blocks,
            block_size: DEFAULT_BLOCK_SIZE,
            bytes_per_token: SEED_KV_BYTES_PER_TOKEN,
            enable_prefix_caching: false,
        }
    }

    /// Sets the block size.
    #[must_use]
    pub fn with_block_size(mut self, block_size: usize) -> Self {
        self.block_size = block_size;
        self
    }

    /// Sets the bytes of K and V per token, for the byte accounting.
    #[must_use]
    pub fn with_bytes_per_token(mut self, bytes_per_token: u64) -> Self {
        self.bytes_per_token = bytes_per_token;
        self
    }

    /// Turns prefix caching on or off.
    #[must_use]
    pub fn with_prefix_caching(mut self, on: bool) -> Self {
        self.enable_prefix_caching = on;
        self
    }

    /// Bytes of K and V the whole pool holds (saturating).
    pub fn kv_bytes(&self) -> u64 {
        self.bytes_per_token
            .saturating_mul(self.num_blocks as u64)
            .saturating_mul(self.block_size as u64)
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
        if self.bytes_per_token == 0 {
            return bad("bytes_per_token must be at least 1");
        }
        let total = self
            .bytes_per_token
            .checked_mul(self.num_blocks as u64)
            .and_then(|b| b.checked_mul(self.block_size as u64));
        if total.is_none() {
            return bad("total KV bytes overflow 64 bits");
        }
        if self.num_blocks.checked_mul(self.block_size).is_none() {
            return bad("num_blocks x block_size overflows");
        }
        Ok(())
    }
}
