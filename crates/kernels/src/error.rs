//! The crate's one error type. Every entry point validates shapes, slots and block tables
//! before touching memory, so a bad argument becomes one of these instead of a panic or an
//! out-of-bounds read.

use thiserror::Error;

/// Everything a kernel or a KV store can reject.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KernelError {
    /// A shape parameter is zero or otherwise unusable.
    #[error("invalid shape: {0}")]
    InvalidShape(String),
    /// `num_heads` is not a positive multiple of `num_kv_heads`.
    #[error(
        "num_heads ({num_heads}) must be a positive multiple of num_kv_heads ({num_kv_heads})"
    )]
    HeadMismatch {
        num_heads: usize,
        num_kv_heads: usize,
    },
    /// A buffer's length does not match the shape it should have.
    #[error("{what}: expected {expected} elements, got {actual}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    /// The head dimension of the call differs from the store's.
    #[error("head_dim mismatch: store has {store}, call implies {call}")]
    HeadDimMismatch { store: usize, call: usize },
    /// A layer index beyond the store's layers.
    #[error("layer {layer} out of range (store has {num_layers} layers)")]
    LayerOutOfRange { layer: usize, num_layers: usize },
    /// A slot beyond the store's capacity.
    #[error("slot {slot} out of range (capacity {capacity} slots)")]
    SlotOutOfRange { slot: usize, capacity: usize },
    /// A block id beyond the store's blocks.
    #[error("block {block} out of range ({num_blocks} blocks)")]
    BlockOutOfRange { block: u32, num_blocks: usize },
    /// A sequence's context needs more blocks than its table lists.
    #[error(
        "sequence {seq}: context of {context_len} tokens needs {needed} blocks, table has {have}"
    )]
    TableTooShort {
        seq: usize,
        context_len: usize,
        needed: usize,
        have: usize,
    },
    /// A sequence's query rows or context are inconsistent.
    #[error("sequence {seq}: {reason}")]
    InvalidSequence { seq: usize, reason: String },
    /// A contiguous run reaches past the end of its buffer.
    #[error("sequence {seq}: contiguous run needs {needed} elements, buffer has {have}")]
    RunOutOfRange {
        seq: usize,
        needed: usize,
        have: usize,
    },
    /// The requested instruction set is not available on this machine.
    #[error("instruction set {0} is not available on this CPU")]
    IsaUnavailable(&'static str),
}

/// Result with [`KernelError`].
pub type Result<T, E = KernelError> = std::result::Result<T, E>;
