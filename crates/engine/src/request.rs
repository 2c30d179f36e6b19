//! Requests and their sampling parameters.

use crate::error::{EngineError, Result};
use crate::ids::{RequestId, TokenId};
use serde::{Deserialize, Serialize};

/// How to pick tokens and when to stop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Output tokens to generate at most.
    pub max_tokens: usize,
    /// Softmax temperature; 0 is greedy.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
    pub top_p: f32,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Seed of the request's random stream (sequence `i` of the request uses `seed + i`);
    /// `None` derives one from the request id. The same seed, prompt and parameters give
    /// the same completion whatever else the engine is running.
    pub seed: Option<u64>,
    /// Sequences to sample from the one prompt (parallel sampling).
    pub n: usize,
    /// Tokens that end a sequence (besides end-of-sequence, unless `ignore_eos`).
    pub stop_token_ids: Vec<TokenId>,
    /// Keep generating past end-of-sequence (benchmarks: every policy does the same work).
    pub ignore_eos: bool,
    /// Return each sampled token's log-probability and those of this many most likely
    /// tokens (`Some(0)`: the sampled token's only); `None`: no log-probabilities.
    pub logprobs: Option<usize>,
}

/// Most sequences one request may sample (OpenAI's limit on `n`).
pub const MAX_N: usize = 128;
/// Most alternatives per token a request may ask log-probabilities of (OpenAI's limit).
pub const MAX_LOGPROBS: usize = 20;

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_tokens: 16,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            n: 1,
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            logprobs: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of up to `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self, id: RequestId) -> Result<()> {
        let bad = |what: &str| {
            Err(EngineError::InvalidSampling {
                id,
                what: what.to_string(),
            })
        };
        if self.n == 0 || self.n > MAX_N {
            return bad(&format!("n must be in 1..={MAX_N}, got {}", self.n));
        }
        if self.max_tokens == 0 {
            return bad("max_tokens must be at least 1");
        }
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad("temperature must be a finite number >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if self.logprobs.is_some_and(|n| n > MAX_LOGPROBS) {
            return bad(&format!("logprobs must be at most {MAX_LOGPROBS}"));
        }
        Ok(())
    }
}

/// A generation request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Caller-chosen id, unique among unfinished requests.
    pub id: RequestId,
    /// Prompt token ids.
    pub prompt: Vec<TokenId>,
    /// Sampling and stopping.
    pub params: SamplingParams,
    /// Arrival time in seconds on the engine's clock (latencies count from here).
    pub arrival: f64,
}

impl Request {
    /// A request arriving at time 0.
    pub fn new(id: u64, prompt: Vec<TokenId>, params: SamplingParams) -> Self {
        Self {
            id: RequestId(id),
            prompt,
            params,
            arrival: 0.0,
        }
    }
}

/// Checks a request against the engine's limits before anything is queued: a prompt of
/// 1 or more in-vocabulary tokens, sampling parameters in range, and prompt + max_tokens
/// within `max_len` (checked, never wrapping).
pub fn validate(req: &Request, max_len: usize, vocab_size: usize) -> Result<()> {
    let id = req.id;
    if req.prompt.is_empty() {
        return Err(EngineError::EmptyPrompt(id));
    }
    req.params.validate(id)?;
    let total = req.prompt.len().checked_add(req.params.max_tokens);
    if !matches!(total, Some(t) if t <= max_len) {
        return Err(EngineError::TooLong {
            id,
            prompt: req.prompt.len(),
            max_tokens: req.params.max_tokens,
            max_len,
        });
    }
    if let Some(&token) = req.prompt.iter().find(|&&t| t as usize >= vocab_size) {
        return Err(EngineError::TokenOutOfVocab {
            id,
            token,
            vocab: vocab_size,
        });
    }
    if !req.arrival.is_finite() {
        return Err(EngineError::InvalidSampling {
            id,
            what: format!("arrival time must be finite, got {}", req.arrival),
        });
    }
    Ok(())
}
