//! A sequence: one stream of tokens being generated, with an explicit state machine.
//!
//! ```text
//!            admit              finish
//! Waiting ---------> Running ---------> Finished
//!    ^                  |
//!    |   re-queue       | preempt (KV freed; recomputed on re-admission)
//!    +--- Preempted <---+
//! ```

use crate::error::{EngineError, Result};
use crate::metrics::SeqMetrics;
use crate::request::RequestId;
use crate::sampler::Sampler;
use pagedattn_kv::{SeqId, TokenId};
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
}

/// Where a sequence is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeqState {
    /// Queued for admission; holds no KV memory.
    Waiting,
    /// Admitted; holds KV memory and is scheduled every step.
    Running,
    /// Evicted from the running set to free memory; re-queued at the front.
    Preempted,
    /// Done.
    Finished(FinishReason),
}

/// One sequence of a request.
#[derive(Debug)]
pub struct Sequence {
    pub(crate) id: SeqId,
    pub(crate) request: RequestId,
    /// Index among the request's `n` sequences.
    pub(crate) index: usize,
    /// Prompt followed by the generated tokens.
    pub(crate) tokens: Vec<TokenId>,
    pub(crate) prompt_len: usize,
    /// Tokens whose K/V are in the cache.
    pub(crate) num_computed: usize,
    /// Generated tokens already returned to the caller.
    pub(crate) num_emitted: usize,
    pub(crate) state: SeqState,
    /// Picks its tokens, with its own seeded random stream.
    pub(crate) sampler: Sampler,
    /// Its timings, filled in as it runs.
    pub(crate) metrics: SeqMetrics,
}

impl Sequence {
    /// The sequence's id (its key in the KV manager).
    pub fn id(&self) -> SeqId {
        self.id
    }

    /// Its request.
    pub fn request(&self) -> RequestId {
        self.request
    }

    /// Index among the request's sequences.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Where it is in its life.
    pub fn state(&self) -> SeqState {
        self.state
    }

    /// Prompt followed by the generated tokens.
    pub fn tokens(&self) -> &[TokenId] {
        &self.tokens
    }

    /// Generated tokens so far.
    pub fn output(&self) -> &[TokenId] {
        &self.tokens[self.prompt_len..]
    }

    /// Tokens whose K/V are in the cache.
    pub fn num_computed(&self) -> usize {
        self.num_computed
    }

    /// Tokens whose K/V still have to be computed before the next token can be sampled.
    pub(crate) fn num_uncomputed(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    /// Its timings so far.
    pub fn metrics(&self) -> &SeqMetrics {
        &self.metrics
    }

    /// Moves to `to`, checking (in every build) that the transition exists in the state
    /// machine; an illegal one changes nothing and is an internal error.
    pub(crate) fn set_state(&mut self, to: SeqState) -> Result<()> {
        use SeqState::{Finished, Preempted, Running, Waiting};
        let legal = matches!(
            (self.state, to),
            (Waiting, Running)
                | (Running, Preempted)
                | (Preempted, Waiting)
                | (Running | Waiting | Preempted, Finished(_))
        );
        if !legal {
            return Err(EngineError::Internal(format!(
                "{}: illegal state transition {:?} -> {to:?}",
                self.id, self.state
            )));
        }
        self.state = to;
        Ok(())
    }
}
