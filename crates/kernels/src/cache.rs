//! The paged KV cache: per layer, K and V arrays shaped
//! `[num_blocks, num_kv_heads, block_size, head_dim]`.
//!
//! Head-major inside a block means one head of one block is a contiguous
//! `block_size x head_dim` run — exactly one kernel tile — so a tile is read as one stream
//! wherever its block lives. Token `t` of a sequence is in block `table[t / block_size]` at
//! offset `t % block_size`; its slot is `block * block_size + offset`.

use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::storage::{check_write, KvBuffer, KvView};
use pagedattn_kv::BlockId;

/// Shape and element type of a [`KvCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheConfig {
    /// Transformer layers (each has its own K and V arrays).
    pub num_layers: usize,
    /// Physical blocks per layer.
    pub num_blocks: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Elements per head vector.
    pub head_dim: usize,
    /// Storage element type.
    pub dtype: DType,
}

impl KvCacheConfig {
    /// Elements of one K (or V) array of one layer.
    pub fn layer_elems(&self) -> Option<usize> {
        self.num_blocks
            .checked_mul(self.num_kv_heads)?
            .checked_mul(self.block_size)?
            .checked_mul(self.head_dim)
    }

    /// Slots per layer (`num_blocks * block_size`).
    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Bytes of K and V for all layers.
    pub fn bytes(&self) -> usize {
        self.layer_elems().unwrap_or(0) * 2 * self.num_layers * self.dtype.size()
    }

    fn validate(&self) -> Result<usize> {
        for (name, v) in [
            ("num_layers", self.num_layers),
            ("num_blocks", self.num_blocks),
            ("num_kv_heads", self.num_kv_heads),
            ("block_size", self.block_size),
            ("head_dim", self.head_dim),
        ] {
            if v == 0 {
                return Err(KernelError::InvalidShape(format!("{name} must be > 0")));
            }
        }
        if self.num_blocks > u32::MAX as usize {
            return Err(KernelError::InvalidShape(
                "num_blocks exceeds u32 block ids".into(),
            ));
        }
        self.layer_elems()
            .filter(|n| n.checked_mul(self.dtype.size()).is_some())
            .ok_or_else(|| KernelError::InvalidShape("cache size overflows usize".into()))
    }
}

/// Block-paged K/V storage for all layers.
#[derive(Clone, Debug)]
pub struct KvCache {
    config: KvCacheConfig,
    /// `(k, v)` per layer.
    layers: Vec<(KvBuffer, KvBuffer)>,
}

impl KvCache {
    /// Allocates a zeroed cache.
    pub fn new(config: KvCacheConfig) -> Result<Self> {
        let elems = config.validate()?;
        let layers = KvBuffer::zeroed_layers(config.num_layers, config.dtype, elems);
        Ok(Self { config, layers })
    }

    /// The cache's shape.
    pub fn config(&self) -> &KvCacheConfig {
        &self.config
    }

    /// Scatters new tokens into their slots: row `i` of `k` and `v` (each
    /// `[n, num_kv_heads, head_dim]`) goes to slot `slot_mapping[i]` of `layer`.
    /// Validates everything first, so on error nothing is written.
    pub fn write_kv(
        &mut self,
        layer: usize,
        slot_mapping: &[usize],
        k: &[f32],
        v: &[f32],
    ) -> Result<()> {
        let c = self.config;
        check_write(
            slot_mapping,
            c.num_slots(),
            c.num_kv_heads * c.head_dim,
            k,
            v,
        )?;
        let (kb, vb) = self.layer_mut(layer)?;
        for (i, &slot) in slot_mapping.iter().enumerate() {
            let (block, offset) = (slot / c.block_size, slot % c.block_size);
            for h in 0..c.num_kv_heads {
                let dst = ((block * c.num_kv_heads + h) * c.block_size + offset) * c.head_dim;
                let src = (i * c.num_kv_heads + h) * c.head_dim;
                kb.write(dst, &k[src..src + c.head_dim]);
                vb.write(dst, &v[src..src + c.head_dim]);
            }
        }
        Ok(())
    }

    /// Copy-on-write support: copies whole blocks `src -> dst` in every layer, K and V.
    /// All ids are checked before any copy.
    pub fn copy_blocks(&mut self, pairs: &[(BlockId, BlockId)]) -> Result<()> {
        let num_blocks = self.config.num_blocks;
        for &(s, d) in pairs {
            for b in [s, d] {
                if b.index() >= num_blocks {
                    return Err(KernelError::BlockOutOfRange {
                        block: b.0,
                        num_blocks,
                    });
                }
            }
        }
        let block_elems = self.config.num_kv_heads * self.config.block_size * self.config.head_dim;
        for (kb, vb) in &mut self.layers {
            for &(s, d) in pairs {
                if s != d {
                    kb.copy_within(
                        s.index() * block_elems,
                        d.index() * block_elems,
                        block_elems,
                    );
                    vb.copy_within(
                        s.index() * block_elems,
                        d.index() * block_elems,
                        block_elems,
                    );
                }
            }
        }
        Ok(())
    }

    /// Reads back one token's K and V (`[num_kv_heads, head_dim]` each) from a slot,
    /// widened to f32.
    pub fn read_slot(&self, layer: usize, slot: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let c = self.config;
        if slot >= c.num_slots() {
            return Err(KernelError::SlotOutOfRange {
                slot,
                capacity: c.num_slots(),
            });
        }
        let (kb, vb) = self.layers.get(layer).ok_or(KernelError::LayerOutOfRange {
            layer,
            num_layers: c.num_layers,
        })?;
        let (block, offset) = (slot / c.block_size, slot % c.block_size);
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for h in 0..c.num_kv_heads {
            let at = ((block * c.num_kv_heads + h) * c.block_size + offset) * c.head_dim;
            k.extend(kb.read(at, c.head_dim));
            v.extend(vb.read(at, c.head_dim));
        }
        Ok((k, v))
    }

    fn layer_mut(&mut self, layer: usize) -> Result<(&mut KvBuffer, &mut KvBuffer)> {
        let num_layers = self.config.num_layers;
        self.layers
            .get_mut(layer)
            .map(|(k, v)| (k, v))
            .ok_or(KernelError::LayerOutOfRange { layer, num_layers })
    }

    pub(crate) fn layer_view(&self, layer: usize) -> Result<(KvView<'_>, KvView<'_>)> {
        self.layers
            .get(layer)
            .map(|(k, v)| (k.view(), v.view()))
            .ok_or(KernelError::LayerOutOfRange {
                layer,
                num_layers: self.config.num_layers,
            })
    }
}
