//! What the engine asks of a model: run one step described by a [`Batch`], reading and
//! writing K/V where the engine's KV policy says.
//!
//! The engine owns *where* K/V live (block tables or contiguous runs); the executor owns
//! the K/V data and the compute. A step is the kernels crate's plain-data [`Batch`]: per
//! scheduled sequence its new tokens, their positions and cache slots, where the rest of
//! its K/V are, and whether its logits are needed. The real executor (the `pagedattn-runner`
//! crate) runs a model on the CPU; a simulated one replaces compute with a cost model and
//! reports the time a step would take.

use pagedattn_kernels::{Batch, KernelError, KvLayout};
use pagedattn_kv::{BlockCopy, TokenId};
use thiserror::Error;

/// A step's result.
#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    /// Logits, one row of `vocab_size` per sequence whose logits were asked for, in batch
    /// order.
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
    /// Other tokens that end a sequence as end-of-sequence does, unless a request ignores
    /// it (a chat model's end-of-turn ids).
    pub end_of_turn_ids: Vec<TokenId>,
    /// Steps report modeled time instead of taking real time (the engine then runs a
    /// virtual clock).
    pub simulated: bool,
}

/// Why an executor could not set up or run a step.
#[derive(Debug, Error)]
pub enum ExecutorError {
    /// A step or a copy came before [`Executor::init_kv`].
    #[error("KV storage was not initialized")]
    NotInitialized,
    /// The kernels refused the step or the storage (a slot, block or shape out of range).
    #[error("kernels: {0}")]
    Kernel(#[from] KernelError),
    /// The logits returned do not match the rows the batch asked for.
    #[error("returned {got} logits for {rows} rows of {vocab}")]
    LogitsShape {
        /// Values returned.
        got: usize,
        /// Rows the batch asked for.
        rows: usize,
        /// Row length (vocabulary size).
        vocab: usize,
    },
    /// The executor's own failure (the model's error, or a test's injected one).
    #[error("{0}")]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl ExecutorError {
    /// Wraps an executor's own error.
    pub fn failed(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Failed(e.into())
    }
}

/// A model the engine can drive.
pub trait Executor {
    /// Facts about the model.
    fn spec(&self) -> ModelSpec;
    /// Allocates KV storage in `layout`. Called once, before the first step.
    fn init_kv(&mut self, layout: KvLayout) -> Result<(), ExecutorError>;
    /// Copies whole blocks (copy-on-write), before the step that writes into them.
    fn copy_blocks(&mut self, copies: &[BlockCopy]) -> Result<(), ExecutorError>;
    /// Runs one step: writes the new tokens' K/V to their slots and returns the logits
    /// asked for.
    fn execute(&mut self, batch: &Batch<'_>) -> Result<StepOutput, ExecutorError>;
}
