//! What one forward pass runs on: a flattened batch of sequences, each bringing new tokens
//! (a prefill chunk, or one token to decode), where their K/V go, and where the rest of its
//! K/V already are — the metadata vLLM hands its attention backend. The KV store itself is
//! behind [`KvBackend`], implemented for the paged [`KvCache`] and the contiguous
//! [`ContiguousKv`] baseline, so one model serves both sides of every comparison.

use pagedattn_kernels::{
    contiguous_attention, paged_attention, AttentionConfig, ContiguousKv, ContiguousSeq,
    KernelError, KvCache, PagedSeq, SeqSpec,
};
use pagedattn_kv::BlockId;

/// Where a sequence's K/V live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvLocation<'a> {
    /// Paged: the sequence's block table (logical block `i` -> physical block).
    Paged(&'a [BlockId]),
    /// Contiguous: the arena slot holding the sequence's position 0.
    Contiguous {
        /// First slot of the sequence's run.
        start_slot: usize,
    },
}

impl KvLocation<'_> {
    /// The cache slot of token position `pos` (`block_size` is the paged cache's; the
    /// contiguous arena ignores it).
    #[inline]
    pub fn slot(&self, pos: usize, block_size: usize) -> usize {
        match *self {
            Self::Paged(table) => table[pos / block_size].index() * block_size + pos % block_size,
            Self::Contiguous { start_slot } => start_slot + pos,
        }
    }
}

/// Which positions of a sequence need logits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogitsFor {
    /// None (a prefill chunk that does not end the prompt).
    None,
    /// The last new token only (the usual case: its logits pick the next token).
    #[default]
    Last,
    /// Every new token (tests and scoring).
    All,
}

/// One sequence of a [`Batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqInput<'a> {
    /// New token ids (at least one).
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`: the number of tokens already in the cache for this
    /// sequence. The context length after this step is `start_pos + tokens.len()`.
    pub start_pos: usize,
    /// Cache slot for each new token's K/V (paged: `block * block_size + offset`;
    /// contiguous: the arena slot).
    pub slots: &'a [usize],
    /// Where the sequence's K/V (cached and new) are read from.
    pub kv: KvLocation<'a>,
    /// Which rows need logits.
    pub logits: LogitsFor,
}

impl SeqInput<'_> {
    /// Tokens in the cache after this step.
    pub fn context_len(&self) -> usize {
        self.start_pos + self.tokens.len()
    }
}

/// A flattened batch: sequences' new tokens laid end to end, prefill and decode mixed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch<'a> {
    /// The sequences, in the order their logits rows are returned.
    pub seqs: Vec<SeqInput<'a>>,
}

impl<'a> Batch<'a> {
    /// An empty batch.
    pub fn new() -> Self {
        Self { seqs: Vec::new() }
    }

    /// Adds a sequence.
    pub fn push(&mut self, seq: SeqInput<'a>) -> &mut Self {
        self.seqs.push(seq);
        self
    }

    /// Total new tokens.
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }
}

/// A KV store the forward pass can write new K/V into and attend over.
pub trait KvBackend {
    /// Writes row `i` of `k` and `v` (`[n, num_kv_heads, head_dim]`) to `slots[i]` of `layer`.
    fn write_kv(
        &mut self,
        layer: usize,
        slots: &[usize],
        k: &[f32],
        v: &[f32],
    ) -> Result<(), KernelError>;

    /// Causal attention for `q` (`[tokens, num_heads, head_dim]`) into `out` (same shape),
    /// for sequences as the kernels see them, with their K/V wherever [`KvLocation`] says.
    fn attend(
        &self,
        cfg: &AttentionConfig,
        layer: usize,
        q: &[f32],
        seqs: &[SeqSpec<KvLocation<'_>>],
        out: &mut [f32],
    ) -> Result<(), KernelError>;
}

fn wrong_kind(seq: usize, want: &str) -> KernelError {
    KernelError::InvalidSequence {
        seq,
        reason: format!("this KV store needs a {want} location"),
    }
}

impl KvBackend for KvCache {
    fn write_kv(
        &mut self,
        layer: usize,
        slots: &[usize],
        k: &[f32],
        v: &[f32],
    ) -> Result<(), KernelError> {
        KvCache::write_kv(self, layer, slots, k, v)
    }

    fn attend(
        &self,
        cfg: &AttentionConfig,
        layer: usize,
        q: &[f32],
        seqs: &[SeqSpec<KvLocation<'_>>],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let paged = seqs
            .iter()
            .enumerate()
            .map(|(i, s)| match s.kv {
                KvLocation::Paged(table) => Ok(PagedSeq {
                    query_start: s.query_start,
                    query_len: s.query_len,
                    context_len: s.context_len,
                    kv: table,
                }),
                KvLocation::Contiguous { .. } => Err(wrong_kind(i, "paged")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        paged_attention(cfg, self, layer, q, &paged, out)
    }
}

impl KvBackend for ContiguousKv {
    fn write_kv(
        &mut self,
        layer: usize,
        slots: &[usize],
        k: &[f32],
        v: &[f32],
    ) -> Result<(), KernelError> {
        ContiguousKv::write_kv(self, layer, slots, k, v)
    }

    fn attend(
        &self,
        cfg: &AttentionConfig,
        layer: usize,
        q: &[f32],
        seqs: &[SeqSpec<KvLocation<'_>>],
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let runs = seqs
            .iter()
            .enumerate()
            .map(|(i, s)| match s.kv {
                KvLocation::Contiguous { start_slot } => Ok(ContiguousSeq {
                    query_start: s.query_start,
                    query_len: s.query_len,
                    context_len: s.context_len,
                    kv: self.run(start_slot),
                }),
                KvLocation::Paged(_) => Err(wrong_kind(i, "contiguous")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        contiguous_attention(cfg, self, layer, q, &runs, out)
    }
}
