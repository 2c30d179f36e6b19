//! The engine's error type.

use crate::executor::ExecutorError;
use crate::ids::RequestId;
use pagedattn_kv::KvError;
use thiserror::Error;

/// Errors from the engine. Validation errors leave the engine exactly as before the call.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The prompt has no tokens.
    #[error("request {0}: empty prompt")]
    EmptyPrompt(RequestId),
    /// Prompt plus output could exceed the model's context.
    #[error("request {id}: prompt of {prompt} tokens + max_tokens {max_tokens} exceeds the maximum length {max_len}")]
    TooLong {
        /// The request.
        id: RequestId,
        /// Prompt tokens.
        prompt: usize,
        /// Requested output tokens.
        max_tokens: usize,
        /// The engine's maximum sequence length.
        max_len: usize,
    },
    /// A sampling parameter out of its range.
    #[error("request {id}: invalid sampling parameter: {what}")]
    InvalidSampling {
        /// The request.
        id: RequestId,
        /// What is wrong.
        what: String,
    },
    /// A token id outside the vocabulary.
    #[error("request {id}: token {token} is outside the vocabulary of {vocab}")]
    TokenOutOfVocab {
        /// The request.
        id: RequestId,
        /// The token.
        token: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// The request id is in use.
    #[error("request {0} already exists")]
    DuplicateRequest(RequestId),
    /// The KV budget cannot hold one sequence of the maximum length, so some request could
    /// never run: refused at construction instead of hanging later.
    #[error(
        "KV budget of {budget_bytes} bytes holds {capacity_tokens} tokens; one sequence of the maximum length {max_len} needs {needed_tokens}"
    )]
    KvCapacityTooSmall {
        /// Budget given.
        budget_bytes: u64,
        /// Tokens it holds under the chosen policy.
        capacity_tokens: usize,
        /// The maximum sequence length.
        max_len: usize,
        /// Tokens one maximum-length sequence needs under the policy.
        needed_tokens: usize,
    },
    /// An invalid engine configuration.
    #[error("invalid engine configuration: {0}")]
    InvalidConfig(String),
    /// The KV memory manager refused an operation the scheduler believed valid.
    #[error("KV cache: {0}")]
    Kv(#[from] KvError),
    /// The executor (model) failed outside a step (at set-up).
    #[error("executor: {0}")]
    Executor(#[source] ExecutorError),
    /// A step failed in the executor. The requests it computed were ended with
    /// [`crate::FinishReason::Error`] and their memory freed; the engine goes on.
    #[error("step failed for {} request(s): {source}", requests.len())]
    StepFailed {
        /// The requests ended by the failure.
        requests: Vec<RequestId>,
        /// What the executor said.
        #[source]
        source: ExecutorError,
    },
    /// A bug: the engine found its own state inconsistent.
    #[error("internal error: {0}")]
    Internal(String),
    /// The engine thread is gone (it stopped, or a step panicked).
    #[error("the engine has stopped")]
    Stopped,
}

/// Result alias for this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
