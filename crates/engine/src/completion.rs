//! How sequences end: after a step, sample each finished chunk's next token, fork the
//! siblings of a paged parallel-sampling request, detect stops and retire finished
//! sequences; and on the caller's word, abort requests or stop single sequences.

use crate::engine::{Engine, RequestOutput};
use crate::error::{EngineError, Result};
use crate::executor::Executor;
use crate::metrics::SeqMetrics;
use crate::request::{RequestId, SamplingParams};
use crate::sampler::{Sampler, TokenLogprob};
use crate::sequence::{FinishReason, SeqState, Sequence};
use pagedattn_kv::{SeqId, TokenId};

impl<E: Executor> Engine<E> {
    /// Aborts a request: frees everything its sequences hold, at once. Aborting a request
    /// that finished or never existed does nothing (a client that disconnects races its
    /// last token). Returns the last outputs of the sequences it ended.
    pub fn abort(&mut self, id: RequestId) -> Result<Vec<RequestOutput>> {
        self.end_request(id, FinishReason::Aborted)
    }

    /// Aborts every request (shutdown after the grace period).
    pub fn abort_all(&mut self) -> Result<Vec<RequestOutput>> {
        let ids: Vec<RequestId> = self.requests.keys().copied().collect();
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.abort(id)?);
        }
        Ok(out)
    }

    /// Ends sequence `index` of request `id` as stopped (a stop string seen by the caller's
    /// detokenizer) and frees its memory; returns its last output. A no-op if it has
    /// already finished.
    pub fn stop_sequence(&mut self, id: RequestId, index: usize) -> Result<Vec<RequestOutput>> {
        let Some(req) = self.requests.get(&id) else {
            return Ok(Vec::new());
        };
        let Some(&sid) = req
            .live
            .iter()
            .find(|&&s| self.sched.seq(s).is_ok_and(|q| q.index == index))
        else {
            return Ok(Vec::new());
        };
        // Forks not made yet never will be (they would start from sequence 0).
        let unborn = if index == 0 {
            self.unborn_forks(id, FinishReason::Stop)
        } else {
            Vec::new()
        };
        let mut out = vec![self.finish_seq(sid, FinishReason::Stop, Vec::new(), Vec::new())?];
        out.extend(unborn);
        Ok(out)
    }

    /// Ends every live sequence of request `id` with `reason`.
    pub(crate) fn end_request(
        &mut self,
        id: RequestId,
        reason: FinishReason,
    ) -> Result<Vec<RequestOutput>> {
        let Some(req) = self.requests.get(&id) else {
            return Ok(Vec::new());
        };
        let live = req.live.clone();
        let unborn = self.unborn_forks(id, reason);
        let mut out = Vec::with_capacity(live.len() + unborn.len());
        for sid in live {
            out.push(self.finish_seq(sid, reason, Vec::new(), Vec::new())?);
        }
        out.extend(unborn);
        Ok(out)
    }

    /// The last outputs of the forks of request `id` that were never made (paged `n > 1`,
    /// ended before its prompt was done), so that a caller hears of all `n` sequences; no
    /// fork is made after this.
    fn unborn_forks(&mut self, id: RequestId, reason: FinishReason) -> Vec<RequestOutput> {
        let Some(req) = self.requests.get_mut(&id) else {
            return Vec::new();
        };
        let forks = std::mem::take(&mut req.pending_forks);
        let base = req
            .live
            .first()
            .and_then(|&s| self.sched.seq(s).ok())
            .map(|s| s.metrics.clone())
            .unwrap_or_default();
        let now = self.now();
        (1..=forks)
            .map(|index| {
                let m = SeqMetrics {
                    index,
                    finished: Some(now),
                    finish_reason: Some(reason),
                    ..base.clone()
                };
                if self.config.keep_history {
                    self.finished.push(m.clone());
                }
                RequestOutput {
                    request: id,
                    index,
                    new_tokens: Vec::new(),
                    logprobs: Vec::new(),
                    finished: Some(reason),
                    metrics: Some(Box::new(m)),
                }
            })
            .collect()
    }

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
        let ends_turn = |t: TokenId| Some(t) == eos || self.spec.end_of_turn_ids.contains(&t);
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
            (!params.ignore_eos && ends_turn(token)) || params.stop_token_ids.contains(&token);
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
