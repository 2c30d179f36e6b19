//! Where a tile's K and V come from. This is the only thing that differs between the paged,
//! contiguous and padded kernels: they all hand the same tile loop slices of `n` tokens of
//! one KV head (`n x head_dim`, row-major), cut at the same positions.

use crate::attention::spec::{ContiguousSeq, PagedSeq};
use crate::store::dtype::KvElem;

/// A tile provider. Bounds were validated at the API edge; slicing still checks them.
pub(crate) trait KvSource<T>: Sync {
    /// K and V of tokens `tile * tile_size ..` (`n` of them) of sequence `seq`, head
    /// `kv_head`: `n * head_dim` elements each.
    fn tile(&self, seq: usize, kv_head: usize, tile: usize, n: usize) -> (&[T], &[T]);
}

/// Tiles are whole blocks: tile `t` of a sequence is (one head of) block `table[t]`.
#[derive(Debug)]
pub(crate) struct PagedSource<'a, T> {
    pub k: &'a [T],
    pub v: &'a [T],
    pub seqs: &'a [PagedSeq<'a>],
    pub num_kv_heads: usize,
    pub block_size: usize,
    pub head_dim: usize,
}

impl<T: KvElem> KvSource<T> for PagedSource<'_, T> {
    #[inline(always)]
    fn tile(&self, seq: usize, kv_head: usize, tile: usize, n: usize) -> (&[T], &[T]) {
        let block = self.seqs[seq].kv[tile].index();
        let at = (block * self.num_kv_heads + kv_head) * self.block_size * self.head_dim;
        let len = n * self.head_dim;
        (&self.k[at..at + len], &self.v[at..at + len])
    }
}

/// Tiles are consecutive `tile_size`-token pieces of a sequence's run.
#[derive(Debug)]
pub(crate) struct ContiguousSource<'a, T> {
    pub k: &'a [T],
    pub v: &'a [T],
    pub seqs: &'a [ContiguousSeq],
    pub tile_size: usize,
    pub head_dim: usize,
}

impl<T: KvElem> KvSource<T> for ContiguousSource<'_, T> {
    #[inline(always)]
    fn tile(&self, seq: usize, kv_head: usize, tile: usize, n: usize) -> (&[T], &[T]) {
        let run = self.seqs[seq].kv;
        let at = run.offset + kv_head * run.head_stride + tile * self.tile_size * self.head_dim;
        let len = n * self.head_dim;
        (&self.k[at..at + len], &self.v[at..at + len])
    }
}
