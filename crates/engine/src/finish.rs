//! Why a sequence stopped.

use serde::{Deserialize, Serialize};

/// Why a sequence stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// `max_tokens` output tokens were generated.
    Length,
    /// End-of-sequence or a stop token was generated.
    Stop,
    /// The request was aborted.
    Aborted,
    /// The step computing it failed; the request ended with an error.
    Error,
}

impl FinishReason {
    /// The name OpenAI's API and vLLM use (`stop`, `length`, `abort`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Length => "length",
            Self::Stop => "stop",
            Self::Aborted => "abort",
            Self::Error => "error",
        }
    }

    /// Whether the sequence ended on its own (its output length is a real observation).
    pub(crate) fn is_natural(self) -> bool {
        matches!(self, Self::Length | Self::Stop)
    }
}
