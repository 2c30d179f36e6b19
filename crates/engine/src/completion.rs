//! After a step: sample each finished chunk's next token, fork the siblings of a paged
//! parallel-sampling request, detect stops, and retire finished sequences.

use crate::engine::{Engine, RequestOutput};
use crate::error::{EngineError, Result};
use crate::executor::Executor;
use crate::request::{RequestId, SamplingParams};
use crate::sampler::{Sampler, TokenLogprob};
use crate::sequence::{FinishReason, SeqState, Sequence};
use pagedattn_kv::{SeqId, TokenId};

impl<E: Executor> Engine<E> {
    /// Paged parallel sampling: when the first sequence of an `n > 1` request finishes its
    /// prompt, its siblings fork its blocks and each samples its own first token.
    pub(crate) fn fork_children(
        &mut self,
        parent: SeqId,
        logits: Option<&[f32]>,
        now: f64,
        outputs: &mut Vec<RequestOutput>,
    ) -> Result<()> {
        let p = self.sched.seq(parent)?;
        let request = p.request;
        let Some(req) = self.requests.get_mut(&request) else {
            return Ok(());
        };
        let forks = std::mem::take(&mut req.pending_forks);
        if forks == 0 {
            return Ok(());
        }
        let seed = request_seed(&req.params, request);
        let p = self.sched.seq(parent)?;
        let (tokens, computed, prompt_len) = (p.tokens.clone(), p.num_computed, p.prompt_len);
        let mut metrics = p.metrics.clone();
        for index in 1..=forks {
            let sid = self.new_seq_id();
            metrics.index = index;
            let seq = Sequence {
                id: sid,
                request,
                index,
                tokens: tokens.clone(),
                prompt_len,
                num_computed: computed,
                num_emitted: 0,
                state: SeqState::Waiting,
                sampler: Sampler::new(
                    &self.requests[&request].params,
                    seed.wrapping_add(index as u64),
                ),
                metrics: metrics.clone(),
            };
            self.sched.fork(parent, seq, index)?;
            self.requests
                .get_mut(&request)
                .ok_or_else(|| EngineError::Internal(format!("request {request} vanished")))?
                .live
                .push(sid);
            self.emit_token(sid, logits, now, outputs)?;
        }
        Ok(())
    }

    /// Samples the next token of `sid`, records it, and finishes the sequence if it stops.
    pub(crate) fn emit_token(
        &mut self,
        sid: SeqId,
        logits: Option<&[f32]>,
        now: f64,
        outputs: &mut Vec<RequestOutput>,
    ) -> Result<()> {
        let eos = self.spec.eos_token_id;
        let max_len = self.max_len;
        let seq = self.sched.seq_mut(sid)?;
        let params = &self
            .requests
            .get(&seq.request)
            .ok_or_else(|| EngineError::Internal(format!("{sid} has no request")))?
            .params;
        let (token, logprob) = match logits {
            Some(l) => seq.sampler.sample(l),
            None => (0, None), // simulated execution: contents do not matter, lengths are forced
        };
        seq.tokens.push(token);
        seq.metrics.token_times.push(now);
        let out_len = seq.tokens.len() - seq.prompt_len;
        let stop =
            (!params.ignore_eos && Some(token) == eos) || params.stop_token_ids.contains(&token);
        let reason = if stop {
            Some(FinishReason::Stop)
        } else if out_len >= params.max_tokens || seq.tokens.len() >= max_len {
            Some(FinishReason::Length)
        } else {
            None
        };
        let new_tokens = seq.tokens[seq.prompt_len + seq.num_emitted..].to_vec();
        seq.num_emitted = out_len;
        let (request, index) = (seq.request, seq.index);
        self.totals.output_tokens += 1;
        let logprobs: Vec<TokenLogprob> = logprob.into_iter().collect();
        match reason {
            Some(r) => outputs.push(self.finish_seq(sid, r, new_tokens, logprobs)?),
            None => outputs.push(RequestOutput {
                request,
                index,
                new_tokens,
                logprobs,
                finished: None,
                metrics: None,
            }),
        }
        Ok(())
    }

    /// Retires live sequence `sid` with `reason` and returns its last output (carrying
    /// `new_tokens`, their log-probabilities and the sequence's metrics); the request ends
    /// with its last sequence.
    pub(crate) fn finish_seq(
        &mut self,
        sid: SeqId,
        reason: FinishReason,
        new_tokens: Vec<TokenId>,
        logprobs: Vec<TokenLogprob>,
    ) -> Result<RequestOutput> {
        let seq = self
            .sched
            .retire(sid, reason)?
            .ok_or_else(|| EngineError::Internal(format!("{sid} finished twice")))?;
        let mut m = seq.metrics;
        m.finished = Some(self.now());
        m.finish_reason = Some(reason);
        if let Some(req) = self.requests.get_mut(&seq.request) {
            req.live.retain(|&s| s != sid);
            if req.live.is_empty() && req.pending_forks == 0 {
                self.requests.remove(&seq.request);
                self.totals.finished_requests += 1;
            }
        }
        if self.config.keep_history {
            self.finished.push(m.clone());
        }
        Ok(RequestOutput {
            request: seq.request,
            index: seq.index,
            new_tokens,
            logprobs,
            finished: Some(reason),
            metrics: Some(Box::new(m)),
        })
    }
}

/// The seed of a request's random stream: its own, or one derived from its id.
pub(crate) fn request_seed(p: &SamplingParams, id: RequestId) -> u64 {
    p.seed.unwrap_or(id.0)
}
