//! Identifier newtypes. A block id and a sequence id are different things; the type system
//! keeps them apart so a sequence id can never be passed where a block id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Index of a physical KV block in the pool (`0..num_blocks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[repr(transparent)]
pub struct BlockId(pub u32);

impl BlockId {
    /// The id as an index into per-block arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "block {}", self.0)
    }
}

/// Identifier of one sequence (one generation stream; a request with `n > 1` has several).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeqId(pub u64);

impl fmt::Display for SeqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sequence {}", self.0)
    }
}

/// A token id as the tokenizer produces it.
pub type TokenId = u32;

/// A copy the data layer must perform before a write (copy-on-write): the KV contents of
/// block `src` go to block `dst`, for every layer, K and V.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCopy {
    /// Block holding the shared data.
    pub src: BlockId,
    /// Freshly allocated block that receives a private copy.
    pub dst: BlockId,
}
