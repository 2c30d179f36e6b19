//! The paged KV cache: per layer, K and V arrays shaped
//! `[num_blocks, num_kv_heads, block_size, head_dim]`.
//!
//! Head-major inside a block means one head of one block is a contiguous
//! `block_size x head_dim` run — exactly one kernel tile — so a tile is read as one stream
//! wherever its block lives. Token `t` of a sequence is in block `table[t / block_size]` at
//! offset `t % block_size`; its slot is `block * block_size + offset`.

use crate::error::{KernelError, Result};
use crate::store::buffer::{check_write, KvBuffer, KvView};
use crate::store::shape::KvShape;
use pagedattn_kv::BlockCopy;

/// Block-paged K/V storage for all layers.
#[derive(Clone, Debug)]
pub struct KvCache {
    shape: KvShape,
    num_blocks: usize,
    block_size: usize,
    /// `(k, v)` per layer.
    layers: Vec<(KvBuffer, KvBuffer)>,
}

impl KvCache {
    /// Allocates a zeroed cache of `num_blocks` blocks of `block_size` tokens of `shape`.
    pub fn new(shape: KvShape, num_blocks: usize, block_size: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(KernelError::InvalidShape("block_size must be > 0".into()));
        }
        if num_blocks > u32::MAX as usize {
            return Err(KernelError::InvalidShape(
                "num_blocks exceeds u32 block ids".into(),
            ));
        }
        let slots = num_blocks
            .checked_mul(block_size)
            .ok_or_else(|| KernelError::InvalidShape("cache size overflows usize".into()))?;
        let elems = shape.layer_elems(slots, "num_blocks")?;
        let layers = KvBuffer::zeroed_layers(shape.num_layers, shape.dtype, elems);
        Ok(Self {
            shape,
            num_blocks,
            block_size,
            layers,
        })
    }

    /// What one token's K/V are.
    pub fn shape(&self) -> &KvShape {
        &self.shape
    }

    /// Physical blocks per layer.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Slots per layer (`num_blocks * block_size`).
    pub fn num_slots(&self) -> usize {
        self.num_blocks * self.block_size
    }

    /// Bytes of K and V for all layers.
    pub fn bytes(&self) -> u64 {
        self.shape.bytes_per_token() * self.num_slots() as u64
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
        let (c, bs) = (self.shape, self.block_size);
        check_write(slot_mapping, self.num_slots(), c.row_elems(), k, v)?;
        let (kb, vb) = self.layer_mut(layer)?;
        for (i, &slot) in slot_mapping.iter().enumerate() {
            let (block, offset) = (slot / bs, slot % bs);
            for h in 0..c.num_kv_heads {
                let dst = ((block * c.num_kv_heads + h) * bs + offset) * c.head_dim;
                let src = (i * c.num_kv_heads + h) * c.head_dim;
                kb.write(dst, &k[src..src + c.head_dim]);
                vb.write(dst, &v[src..src + c.head_dim]);
            }
        }
        Ok(())
    }

    /// Copy-on-write support: copies whole blocks `src -> dst` in every layer, K and V.
    /// All ids are checked before any copy.
    pub fn copy_blocks(&mut self, copies: &[BlockCopy]) -> Result<()> {
        let num_blocks = self.num_blocks;
        for c in copies {
            for b in [c.src, c.dst] {
                if b.index() >= num_blocks {
                    return Err(KernelError::BlockOutOfRange {
                        block: b.0,
                        num_blocks,
                    });
                }
            }
        }
        let block_elems = self.shape.row_elems() * self.block_size;
        for (kb, vb) in &mut self.layers {
            for &BlockCopy { src: s, dst: d } in copies {
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
        let (c, bs) = (self.shape, self.block_size);
        if slot >= self.num_slots() {
            return Err(KernelError::SlotOutOfRange {
                slot,
                capacity: self.num_slots(),
            });
        }
        let (kb, vb) = self.layers.get(layer).ok_or(KernelError::LayerOutOfRange {
            layer,
            num_layers: c.num_layers,
        })?;
        let (block, offset) = (slot / bs, slot % bs);
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for h in 0..c.num_kv_heads {
            let at = ((block * c.num_kv_heads + h) * bs + offset) * c.head_dim;
            k.extend(kb.read(at, c.head_dim));
            v.extend(vb.read(at, c.head_dim));
        }
        Ok((k, v))
    }

    fn layer_mut(&mut self, layer: usize) -> Result<(&mut KvBuffer, &mut KvBuffer)> {
        let num_layers = self.shape.num_layers;
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
                num_layers: self.shape.num_layers,
            })
    }
}
