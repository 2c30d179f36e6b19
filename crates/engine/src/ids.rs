//! The engine's identifiers, in one leaf module: a request is what a caller submits, a
//! sequence one of its `n` samples (the kv crate's [`SeqId`], the key of its K/V).

use serde::{Deserialize, Serialize};
use std::fmt;

pub use pagedattn_kv::{SeqId, TokenId};

/// Identifier of a request, chosen by the caller.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
