//! What the engine asks of a model: run one step over a flattened batch of sequence
//! chunks, reading and writing K/V where the engine's KV policy says.
//!
//! The engine owns *where* K/V live (block tables or contiguous runs); the executor owns
//! the K/V data and the compute. The real executor runs a model on the CPU; a simulated
//! one replaces compute with a cost model and reports the time a step would take.

use pagedattn_kv::{BlockCopy, BlockId, SeqId, TokenId};

/// How the executor must lay out its KV storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvLayout {
    /// `num_blocks` blocks of `block_size` tokens.
    Paged {
        /// Blocks in the pool.
        num_blocks: usize,
        /// Tokens per block.
        block_size: usize,
    },
    /// One arena of `slots` token slots; each sequence owns a contiguous run.
    Contiguous {
        /// Slots in the arena.
        slots: usize,
    },
}

/// Where one sequence's K/V live.
#[derive(Clone, Copy, Debug)]
pub enum Addressing<'a> {
    /// Through a block table.
    Paged {
        /// Physical block of each logical block.
        block_table: &'a [BlockId],
        /// Tokens per block.
        block_size: usize,
    },
    /// A contiguous run starting at arena slot `base`.
    Contiguous {
        /// First slot of the run.
        base: usize,
    },
}

impl Addressing<'_> {
    /// The storage slot of token position `pos`.
    #[inline]
    pub fn slot(&self, pos: usize) -> usize {
        match *self {
            Self::Paged {
                block_table,
                block_size,
            } => block_table[pos / block_size].index() * block_size + pos % block_size,
            Self::Contiguous { base } => base + pos,
        }
    }
}

/// One sequence's share of a step: compute K/V for `tokens` at positions
/// `start_pos .. start_pos + tokens.len()`, attending to everything before them.
#[derive(Clone, Debug)]
pub struct SeqChunk<'a> {
    /// The sequence.
    pub seq: SeqId,
    /// New tokens (one for a decode step, several for a prefill chunk).
    pub tokens: &'a [TokenId],
    /// Position of the first new token.
    pub start_pos: usize,
    /// Where the sequence's K/V live (positions `0 .. start_pos + tokens.len()`).
    pub addressing: Addressing<'a>,
    /// Whether the logits of the last new token are needed (to sample the next token).
    pub want_logits: bool,
}

impl SeqChunk<'_> {
    /// Tokens in context after this chunk.
    pub fn context_len(&self) -> usize {
        self.start_pos + self.tokens.len()
    }
}

/// A step's work.
#[derive(Clone, Debug, Default)]
pub struct StepBatch<'a> {
    /// Chunks in scheduling order (decodes first, then prefill chunks).
    pub chunks: Vec<SeqChunk<'a>>,
}

/// A step's result.
#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    /// Logits, one row of `vocab_size` per chunk with `want_logits`, in chunk order.
    /// `None` for executors that do not compute (simulation): the engine then emits a
    /// placeholder token.
    pub logits: Option<Vec<f32>>,
    /// Modeled duration of the step in seconds, for simulated executors; `None` means the
    /// engine measures wall-clock time.
    pub modeled_seconds: Option<f64>,
}

/// Facts about the model the engine needs.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// Bytes of K and V per token over all layers, in the KV storage's element type.
    pub kv_bytes_per_token: u64,
    /// Vocabulary size (logits row length).
    pub vocab_size: usize,
    /// Longest sequence the model supports.
    pub max_model_len: usize,
    /// End-of-sequence token, if any.
    pub eos_token_id: Option<TokenId>,
    /// Steps report modeled time instead of taking real time (the engine then runs a
    /// virtual clock).
    pub simulated: bool,
}

/// A model the engine can drive.
pub trait Executor {
    /// Facts about the model.
    fn spec(&self) -> ModelSpec;
    /// Allocates KV storage in `layout`. Called once, before the first step.
    fn init_kv(&mut self, layout: KvLayout) -> Result<(), String>;
    /// Copies whole blocks (copy-on-write), before the step that writes into them.
    fn copy_blocks(&mut self, copies: &[BlockCopy]) -> Result<(), String>;
    /// Runs one step.
    fn execute(&mut self, batch: &StepBatch<'_>) -> Result<StepOutput, String>;
}
