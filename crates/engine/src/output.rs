//! What a step hands back per sequence.

use crate::finish::FinishReason;
use crate::ids::{RequestId, TokenId};
use crate::metrics::SeqMetrics;
use crate::sampler::TokenLogprob;
use serde::{Deserialize, Serialize};

/// New output of one sequence since the previous step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestOutput {
    /// The request.
    pub request: RequestId,
    /// Which of its sequences.
    pub index: usize,
    /// Tokens generated since the last output for this sequence.
    pub new_tokens: Vec<TokenId>,
    /// Their log-probabilities, when the request asked for them (one per new token).
    pub logprobs: Vec<TokenLogprob>,
    /// Why the sequence finished, if it did.
    pub finished: Option<FinishReason>,
    /// The finished sequence's metrics (in its last output only).
    pub metrics: Option<Box<SeqMetrics>>,
}
