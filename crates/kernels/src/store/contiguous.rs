//! The contiguous baseline store: per layer one arena `[num_kv_heads, capacity_slots,
//! head_dim]`, in which a sequence owns the slots `start .. start + len` (what the `kv`
//! crate's `ContiguousAllocator` hands out).
//!
//! The kernels read a sequence through a [`ContiguousRun`] — the element offset of its
//! first token in head 0 and the distance between heads — so a run is read in place inside
//! the arena, and a standalone `[num_kv_heads, len, head_dim]` buffer is just a store with
//! `capacity_slots == len`.

use crate::error::{KernelError, Result};
use crate::store::buffer::{check_rows, check_write, KvBuffer, KvView};
use crate::store::dtype::DType;
use crate::store::shape::KvShape;

/// Where one sequence's K/V run lives inside a contiguous buffer, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContiguousRun {
    /// Element offset of token 0, head 0.
    pub offset: usize,
    /// Elements from one head's run to the next.
    pub head_stride: usize,
}

impl ContiguousRun {
    /// The run of a sequence starting at `start_slot` in an arena of `capacity_slots`.
    pub const fn in_arena(start_slot: usize, capacity_slots: usize, head_dim: usize) -> Self {
        Self {
            offset: start_slot * head_dim,
            head_stride: capacity_slots * head_dim,
        }
    }

    /// A standalone `[num_kv_heads, len, head_dim]` buffer.
    pub const fn standalone(len: usize, head_dim: usize) -> Self {
        Self {
            offset: 0,
            head_stride: len * head_dim,
        }
    }
}

/// Contiguous K/V arenas for all layers.
#[derive(Clone, Debug)]
pub struct ContiguousKv {
    shape: KvShape,
    capacity_slots: usize,
    layers: Vec<(KvBuffer, KvBuffer)>,
}

impl ContiguousKv {
    /// Allocates zeroed arenas of `capacity_slots` tokens of `shape`.
    pub fn new(shape: KvShape, capacity_slots: usize) -> Result<Self> {
        let elems = shape.layer_elems(capacity_slots, "capacity_slots")?;
        let layers = KvBuffer::zeroed_layers(shape.num_layers, shape.dtype, elems);
        Ok(Self {
            shape,
            capacity_slots,
            layers,
        })
    }

    /// A one-layer store holding one standalone sequence, `k` and `v` shaped
    /// `[num_kv_heads, len, head_dim]`; read it with [`ContiguousRun::standalone`].
    pub fn standalone(
        num_kv_heads: usize,
        head_dim: usize,
        dtype: DType,
        k: &[f32],
        v: &[f32],
    ) -> Result<Self> {
        let row = num_kv_heads * head_dim;
        if row == 0 || !k.len().is_multiple_of(row) || k.is_empty() {
            return Err(KernelError::InvalidShape(
                "standalone buffer must be a non-empty [num_kv_heads, len, head_dim]".into(),
            ));
        }
        let len = k.len() / row;
        check_rows(len, row, k, v)?;
        let shape = KvShape {
            num_layers: 1,
            num_kv_heads,
            head_dim,
            dtype,
        };
        let mut s = Self::new(shape, len)?;
        let (kb, vb) = &mut s.layers[0];
        kb.write(0, k);
        vb.write(0, v);
        Ok(s)
    }

    /// What one token's K/V are.
    pub fn shape(&self) -> &KvShape {
        &self.shape
    }

    /// Slots (tokens) per head in the arena.
    pub fn capacity_slots(&self) -> usize {
        self.capacity_slots
    }

    /// The run of a sequence whose slots start at `start_slot`.
    pub fn run(&self, start_slot: usize) -> ContiguousRun {
        ContiguousRun::in_arena(start_slot, self.capacity_slots, self.shape.head_dim)
    }

    /// Writes new tokens: row `i` of `k`/`v` (`[n, num_kv_heads, head_dim]`) goes to slot
    /// `slot_mapping[i]` of every head. Validates first; on error nothing is written.
    pub fn write_kv(
        &mut self,
        layer: usize,
        slot_mapping: &[usize],
        k: &[f32],
        v: &[f32],
    ) -> Result<()> {
        let (c, cap) = (self.shape, self.capacity_slots);
        check_write(slot_mapping, cap, c.row_elems(), k, v)?;
        let (kb, vb) = self
            .layers
            .get_mut(layer)
            .ok_or(KernelError::LayerOutOfRange {
                layer,
                num_layers: c.num_layers,
            })?;
        for (i, &slot) in slot_mapping.iter().enumerate() {
            for h in 0..c.num_kv_heads {
                let dst = (h * cap + slot) * c.head_dim;
                let src = (i * c.num_kv_heads + h) * c.head_dim;
                kb.write(dst, &k[src..src + c.head_dim]);
                vb.write(dst, &v[src..src + c.head_dim]);
            }
        }
        Ok(())
    }

    /// Elements per layer array (for run validation).
    pub(crate) fn layer_len(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.len())
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
