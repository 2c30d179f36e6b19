//! The one tile loop every kernel runs: online softmax over tiles of `tile_size` tokens of
//! one KV head, for a block of query rows (all query heads of that KV head, so K/V are read
//! once for the whole group).
//!
//! Two inner-loop shapes, chosen by the number of query rows only (never by addressing):
//! - **dot** (decode with few query heads per KV head): vectors run along `head_dim`; a
//!   score is a dot product, and `p * V` is an axpy. Nothing is wasted when a KV head has
//!   one query row, which is what memory-bound decode needs.
//! - **rows** (prefill, or decode with many heads per KV head): vectors run across `W`
//!   query rows. `Q` is transposed once per group, so a score tile `S^T[j]` is `head_dim`
//!   FMAs of a broadcast key element against a `Q^T` vector, `J` tokens at a time in
//!   registers; softmax is vectorised across rows; `P V` is broadcast-FMA into `acc^T`.
//!   Every FMA needs about one load, which keeps this loop compute-bound.
//!
//! A unit writes, per row, `[m, l, acc[0..head_dim]]` (running max, sum of exponentials,
//! unnormalised output); `schedule::finalize` merges splits and normalises.

use crate::attention::schedule::{SeqWork, Unit};
use crate::attention::source::KvSource;
use crate::cpu::lanes::Lanes;
use crate::store::dtype::{DType, KvElem};

/// Call-wide parameters shared by all units.
#[derive(Debug)]
pub(crate) struct RunCtx<'a> {
    pub q: &'a [f32],
    pub num_heads: usize,
    /// Query heads per KV head.
    pub group: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub tile_size: usize,
    pub seqs: &'a [SeqWork],
}

impl RunCtx<'_> {
    /// Index in `q` of row `r`'s query vector (see [`RunCtx::query_row`]).
    #[inline(always)]
    pub(crate) fn query_row_start(&self, seq: &SeqWork, kv_head: usize, r: usize) -> Option<usize> {
        let t = r / self.group;
        if t >= seq.query_len {
            return None;
        }
        let head = kv_head * self.group + r % self.group;
        Some(((seq.query_start + t) * self.num_heads + head) * self.head_dim)
    }

    /// Query vector of row `r` (token `r / group`, head `kv_head * group + r % group`), or
    /// `None` for a padding row.
    #[inline(always)]
    pub(crate) fn query_row(&self, seq: &SeqWork, kv_head: usize, r: usize) -> Option<&[f32]> {
        let at = self.query_row_start(seq, kv_head, r)?;
        Some(&self.q[at..at + self.head_dim])
    }

    /// Number of positions row `r` may attend to (causal: a new token sees the cached
    /// prefix and the new tokens up to itself).
    #[inline(always)]
    pub(crate) fn limit(&self, seq: &SeqWork, r: usize) -> usize {
        let t = r / self.group;
        (seq.context_len + t + 1)
            .saturating_sub(seq.query_len)
            .min(seq.context_len)
    }
}

/// Per-thread buffers, reused across units.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub q: Vec<f32>,
    pub acc: Vec<f32>,
    pub s: Vec<f32>,
    /// Widened K and V tiles (f16/bf16 storage only).
    pub kv: (Vec<f32>, Vec<f32>),
    pub m: Vec<f32>,
    pub l: Vec<f32>,
    pub lim: Vec<usize>,
    /// Per group of rows (rows shape): the smallest causal limit among its rows; tiles
    /// that end there or before need no mask.
    pub min_lim: Vec<usize>,
    /// Per-row softmax rescale factors of the current tile (dot shape).
    pub corr: Vec<f32>,
}

pub(crate) fn reset(buf: &mut Vec<f32>, len: usize, value: f32) {
    buf.clear();
    buf.resize(len, value);
}

/// The tile as f32: in place for f32 storage, widened into `buf` otherwise.
#[inline(always)]
pub(crate) fn as_f32<'b, L: Lanes, T: KvElem>(
    isa: L,
    x: &'b [T],
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    if let Some(f) = T::as_f32(x) {
        return f;
    }
    if buf.len() < x.len() {
        buf.resize(x.len(), 0.0);
    }
    let dst = &mut buf[..x.len()];
    if let Some(bits) = T::as_bits(x) {
        if T::DTYPE == DType::Bf16 {
            isa.widen_bf16(bits, dst);
        } else {
            isa.widen_f16(bits, dst);
        }
    }
    dst
}

/// Last tile (exclusive) a set of rows needs: all tiles of the unit for the padded
/// baseline (it does the padded work), else only those holding visible positions.
#[inline(always)]
pub(crate) fn tiles_needed(
    seq: &SeqWork,
    unit: &Unit,
    tile_size: usize,
    max_limit: usize,
) -> usize {
    if seq.pad_work {
        unit.tile_end
    } else {
        unit.tile_end.min(max_limit.div_ceil(tile_size))
    }
}

/// Fetches tile `tile` (converted to f32) and prefetches the next one.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn fetch<'b, L: Lanes, T: KvElem, S: KvSource<T>>(
    isa: L,
    src: &'b S,
    seq: &SeqWork,
    unit: &Unit,
    tile: usize,
    end: usize,
    tile_size: usize,
    bufs: &'b mut (Vec<f32>, Vec<f32>),
) -> (&'b [f32], &'b [f32], usize) {
    let pos0 = tile * tile_size;
    let n = tile_size.min(seq.read_len - pos0);
    if tile + 1 < end {
        let n2 = tile_size.min(seq.read_len - pos0 - n);
        let (k2, v2) = src.tile(unit.seq, unit.kv_head, tile + 1, n2);
        isa.prefetch(k2);
        isa.prefetch(v2);
    }
    let (k, v) = src.tile(unit.seq, unit.kv_head, tile, n);
    let (kb, vb) = bufs;
    (as_f32(isa, k, kb), as_f32(isa, v, vb), n)
}
