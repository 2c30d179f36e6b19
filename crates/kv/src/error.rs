//! The one error type of this crate. Every failed operation leaves all state exactly as it
//! was before the call.

use crate::ids::{BlockId, SeqId};
use thiserror::Error;

/// Errors from the block manager, block tables and the contiguous allocator.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KvError {
    /// Not enough free blocks; nothing was allocated.
    #[error("out of KV blocks: requested {requested}, {free} free")]
    OutOfBlocks {
        /// Blocks the operation needed.
        requested: usize,
        /// Blocks that were free.
        free: usize,
    },
    /// Not enough contiguous free slots in the arena; nothing was reserved.
    #[error(
        "out of contiguous KV space: requested {requested} slots, largest free run {largest_free_run} ({free} free in all)"
    )]
    OutOfSlots {
        /// Slots the reservation needed.
        requested: usize,
        /// Longest run of free slots.
        largest_free_run: usize,
        /// All free slots, in any run.
        free: usize,
    },
    /// The block id is not in `0..num_blocks`.
    #[error("unknown {0} (pool has {1} blocks)")]
    UnknownBlock(BlockId, usize),
    /// The block is already free.
    #[error("double free of {0}")]
    DoubleFree(BlockId),
    /// The sequence does not hold this block.
    #[error("{block} is not held by {seq}")]
    BlockNotOwned {
        /// The block named in the call.
        block: BlockId,
        /// The sequence named in the call.
        seq: SeqId,
    },
    /// Only a sequence's last block can be freed on its own (earlier blocks hold tokens
    /// that later positions depend on).
    #[error("{block} is not the last block of {seq}; free the sequence instead")]
    NotLastBlock {
        /// The block named in the call.
        block: BlockId,
        /// The sequence named in the call.
        seq: SeqId,
    },
    /// No such sequence.
    #[error("unknown {0}")]
    UnknownSequence(SeqId),
    /// The sequence id is already in use.
    #[error("{0} already exists")]
    SequenceExists(SeqId),
    /// A token index past the end of the sequence.
    #[error("token {index} is out of range for {seq} of {len} tokens")]
    TokenOutOfRange {
        /// The sequence.
        seq: SeqId,
        /// The index asked for.
        index: usize,
        /// The sequence length in tokens.
        len: usize,
    },
    /// A write past the slots a contiguous reservation holds.
    #[error("{seq} reserved {reserved} slots; {requested} would not fit")]
    ReservationExceeded {
        /// The sequence.
        seq: SeqId,
        /// Slots reserved at admission.
        reserved: usize,
        /// Tokens the sequence would hold after the write.
        requested: usize,
    },
    /// A configuration that cannot describe a cache.
    #[error("invalid KV configuration: {0}")]
    InvalidConfig(String),
}

/// Result alias for this crate.
pub type Result<T, E = KvError> = std::result::Result<T, E>;
