//! A sequence: one stream of tokens being generated, with an explicit state machine.
//!
//! ```text
//!            admit              finish
//! Waiting ---------> Running ---------> Finished
//!    ^                  |
//!    |   re-queue       | preempt (KV freed; recomputed on re-admission)
//!    +--- Preempted <---+
//! ```
//!
//! Its fields are private. Everything that changes a live sequence's progress is a method
//! here, and only the scheduler holds live sequences mutably (it owns them; see
//! `scheduler.rs`): it is the one writer of computed tokens, generated tokens, states and
//! metrics.

use crate::error::{EngineError, Result};
use crate::finish::FinishReason;
use crate::ids::{RequestId, SeqId, TokenId};
use crate::metrics::SeqMetrics;
use crate::output::RequestOutput;
use crate::request::SamplingParams;
use crate::sampler::{Sampler, TokenLogprob};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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

/// When a sequence stops besides its request's own limits: the engine's maximum length and
/// the model's end tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StopRules {
    /// Longest sequence accepted (prompt and output).
    pub max_len: usize,
    /// End-of-sequence and the model's end-of-turn ids (unless a request ignores them).
    pub end_ids: Vec<TokenId>,
}

/// One sequence of a request.
#[derive(Debug)]
pub struct Sequence {
    id: SeqId,
    request: RequestId,
    /// Index among the request's `n` sequences.
    index: usize,
    /// Prompt followed by the generated tokens.
    tokens: Vec<TokenId>,
    prompt_len: usize,
    /// Tokens whose K/V are in the cache.
    num_computed: usize,
    /// Generated tokens already returned to the caller.
    num_emitted: usize,
    state: SeqState,
    /// The request's parameters (shared by its sequences).
    params: Arc<SamplingParams>,
    /// Picks its tokens, with its own seeded random stream.
    sampler: Sampler,
    /// Siblings still to fork from this sequence when its prompt is done (paged parallel
    /// sampling: the request's first sequence carries the other `n - 1`).
    pending_forks: usize,
    /// Its timings, filled in as it runs.
    metrics: SeqMetrics,
}

impl Sequence {
    /// A new waiting sequence of `request` (sequence `index`), sampling with the stream of
    /// the request's seed plus `index`.
    pub(crate) fn new(
        id: SeqId,
        request: RequestId,
        index: usize,
        prompt: &[TokenId],
        params: Arc<SamplingParams>,
        arrival: f64,
        pending_forks: usize,
    ) -> Self {
        let sampler = Sampler::new(
            &params,
            request_seed(&params, request).wrapping_add(index as u64),
        );
        Self {
            id,
            request,
            index,
            tokens: prompt.to_vec(),
            prompt_len: prompt.len(),
            num_computed: 0,
            num_emitted: 0,
            state: SeqState::Waiting,
            params,
            sampler,
            pending_forks,
            metrics: SeqMetrics {
                request,
                index,
                prompt_len: prompt.len(),
                arrival,
                ..SeqMetrics::default()
            },
        }
    }

    /// Sibling `index` of this sequence (paged parallel sampling): the same tokens and
    /// progress, its own sampler; still `Waiting` until the scheduler runs it.
    pub(crate) fn fork(&self, id: SeqId, index: usize) -> Self {
        let seed = request_seed(&self.params, self.request).wrapping_add(index as u64);
        Self {
            id,
            index,
            tokens: self.tokens.clone(),
            num_emitted: 0,
            state: SeqState::Waiting,
            params: self.params.clone(),
            sampler: Sampler::new(&self.params, seed),
            pending_forks: 0,
            metrics: SeqMetrics {
                index,
                ..self.metrics.clone()
            },
            ..*self
        }
    }

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

    /// Prompt tokens.
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
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

    /// Siblings this sequence will fork when its prompt is done.
    pub(crate) fn pending_forks(&self) -> usize {
        self.pending_forks
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

    /// Notes that a step including it starts at `now` (the first such is its first
    /// scheduling).
    pub(crate) fn scheduled(&mut self, now: f64) {
        self.metrics.first_scheduled.get_or_insert(now);
    }

    /// Admitted with its first `cached` tokens found in the prefix cache.
    pub(crate) fn admit(&mut self, cached: usize) -> Result<()> {
        self.set_state(SeqState::Running)?;
        self.num_computed = cached;
        self.metrics.cached_tokens = cached;
        Ok(())
    }

    /// Preempted: its K/V were freed, so nothing is computed any more; back to waiting.
    /// Returns the tokens whose K/V were lost.
    pub(crate) fn preempt(&mut self) -> Result<usize> {
        self.set_state(SeqState::Preempted)?;
        self.set_state(SeqState::Waiting)?;
        self.metrics.preemptions += 1;
        Ok(std::mem::take(&mut self.num_computed))
    }

    /// A step computed its next `len` tokens.
    pub(crate) fn advance(&mut self, len: usize) {
        self.num_computed += len;
    }

    /// Takes the forks still to make (they are made now, or never).
    pub(crate) fn take_forks(&mut self) -> usize {
        std::mem::take(&mut self.pending_forks)
    }

    /// Samples its next token from `logits` (a placeholder when the executor computes no
    /// logits), appends it at `now`, and returns everything generated since the last
    /// output, with why it finished if it did. A finished sequence must then be retired.
    pub(crate) fn sample(
        &mut self,
        logits: Option<&[f32]>,
        now: f64,
        rules: &StopRules,
    ) -> RequestOutput {
        let (token, logprob) = match logits {
            Some(l) => self.sampler.sample(l),
            None => (0, None), // simulated execution: contents do not matter, lengths are forced
        };
        self.tokens.push(token);
        self.metrics.token_times.push(now);
        let p = &self.params;
        let out_len = self.tokens.len() - self.prompt_len;
        let stop =
            (!p.ignore_eos && rules.end_ids.contains(&token)) || p.stop_token_ids.contains(&token);
        let finished = if stop {
            Some(FinishReason::Stop)
        } else if out_len >= p.max_tokens || self.tokens.len() >= rules.max_len {
            Some(FinishReason::Length)
        } else {
            None
        };
        let new_tokens = self.tokens[self.prompt_len + self.num_emitted..].to_vec();
        self.num_emitted = out_len;
        RequestOutput {
            request: self.request,
            index: self.index,
            new_tokens,
            logprobs: logprob.into_iter().collect::<Vec<TokenLogprob>>(),
            finished,
            metrics: None,
        }
    }

    /// Ends the sequence with `reason` at `now` and returns its metrics.
    pub(crate) fn finish(&mut self, reason: FinishReason, now: f64) -> Result<SeqMetrics> {
        self.set_state(SeqState::Finished(reason))?;
        self.metrics.finished = Some(now);
        self.metrics.finish_reason = Some(reason);
        Ok(self.metrics.clone())
    }
}

/// The seed of a request's random stream: its own, or one derived from its id.
fn request_seed(p: &SamplingParams, id: RequestId) -> u64 {
    p.seed.unwrap_or(id.0)
}
