//! What an attention call is asked to do: its parameters ([`AttentionConfig`]) and, per
//! sequence of the flattened batch, a [`SeqSpec`] — the one description of a sequence's
//! share of a step that the engine, the model and every kernel use.

use crate::cpu::Cpu;
use crate::store::contiguous::ContiguousRun;
use pagedattn_kv::BlockId;

/// One sequence of a flattened batch; `kv` says where its K/V live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSpec<K> {
    /// Index of its first query token in `q`.
    pub query_start: usize,
    /// Query tokens (1 for decode).
    pub query_len: usize,
    /// Tokens in the cache including the new ones (`>= query_len`).
    pub context_len: usize,
    /// Block table (paged) or run (contiguous).
    pub kv: K,
}

impl<K> SeqSpec<K> {
    /// The same rows and context with the K/V found at `kv` instead.
    pub fn with_kv<L>(&self, kv: L) -> SeqSpec<L> {
        SeqSpec {
            query_start: self.query_start,
            query_len: self.query_len,
            context_len: self.context_len,
            kv,
        }
    }
}

/// A sequence whose K/V are in a [`KvCache`](crate::KvCache), found through its block table.
pub type PagedSeq<'a> = SeqSpec<&'a [BlockId]>;
/// A sequence whose K/V are a run of a [`ContiguousKv`](crate::ContiguousKv).
pub type ContiguousSeq = SeqSpec<ContiguousRun>;

/// Parameters of an attention call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionConfig {
    /// Query heads (a multiple of the store's KV heads).
    pub num_heads: usize,
    /// Elements per head; must equal the store's.
    pub head_dim: usize,
    /// Softmax scale applied to `q . k`.
    pub scale: f32,
    /// The code path the kernels run on.
    pub cpu: Cpu,
    /// Split-K policy.
    pub split: SplitPolicy,
    /// Tile length in tokens for the contiguous and padded kernels (the paged kernel's
    /// tile is the cache's block size). Equal tiles make paged and contiguous outputs
    /// bitwise identical.
    pub tile_size: usize,
}

impl AttentionConfig {
    /// Defaults: scale `1 / sqrt(head_dim)`, the process's [`Cpu::selected`] path, automatic
    /// split, tiles of 16.
    pub fn new(num_heads: usize, head_dim: usize) -> Self {
        Self {
            num_heads,
            head_dim,
            scale: 1.0 / (head_dim.max(1) as f32).sqrt(),
            cpu: Cpu::selected(),
            split: SplitPolicy::Auto,
            tile_size: 16,
        }
    }

    /// Runs on `cpu`'s path.
    #[must_use]
    pub fn with_cpu(mut self, cpu: Cpu) -> Self {
        self.cpu = cpu;
        self
    }

    /// Sets the split-K policy.
    #[must_use]
    pub fn with_split(mut self, split: SplitPolicy) -> Self {
        self.split = split;
        self
    }

    /// Sets the contiguous/padded tile length.
    #[must_use]
    pub fn with_tile_size(mut self, tile_size: usize) -> Self {
        self.tile_size = tile_size;
        self
    }

    /// Sets the softmax scale.
    #[must_use]
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = scale;
        self
    }
}

/// How to split long contexts across threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SplitPolicy {
    /// Split only when there are too few units to keep every thread busy (the default);
    /// the choice depends on the metadata and `rayon::current_num_threads()` only.
    #[default]
    Auto,
    /// Never split.
    Off,
    /// Split every sequence into this many tile ranges (capped at its tile count).
    Fixed(usize),
}
