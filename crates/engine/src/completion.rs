//! After a step: sample each finished chunk's next token, fork the siblings of a paged
//! parallel-sampling request, detect stops, and retire finished sequences.

use crate::engine::{Engine, RequestOutput};
use crate::error::{EngineError, Result};
use crate::executor::Executor;
use crate::metrics::SeqMetrics;
use crate::request::{RequestId, SamplingParams};
use crate::sequence::{FinishReason, SeqState, Sequence};
use pagedattn_kv::SeqId;
use pagedattn_model::Sampler;

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
        let p = &self.sched.seqs[&parent];
        let forks = p.pending_forks;
        if forks == 0 {
            return Ok(());
        }
        let (request, tokens, computed, prompt_len) =
            (p.request, p.tokens.clone(), p.num_computed, p.prompt_len);
        let seed = self.requests[&request].params.seed.unwrap_or(request.0);
        let arrival = self.metrics[&parent].arrival;
        self.sched
            .seqs
            .get_mut(&parent)
            .expect("parent")
            .pending_forks = 0;
        let pos = self
            .sched
            .running
            .iter()
            .position(|&s| s == parent)
            .expect("running");
        for index in 1..=forks {
            let sid = self.new_seq_id();
            self.sched.kv.fork(parent, sid)?;
            let mut seq = Sequence {
                id: sid,
                request,
                index,
                tokens: tokens.clone(),
                prompt_len,
                num_computed: computed,
                num_emitted: 0,
                state: SeqState::Waiting,
                sampler: sampler(&self.requests[&request].params, seed, index, request)?,
                pending_forks: 0,
            };
            seq.set_state(SeqState::Running);
            let mut m = new_metrics(&seq, arrival);
            m.first_scheduled = self.metrics[&parent].first_scheduled;
            self.metrics.insert(sid, m);
            self.sched
                .final_len
                .insert(sid, prompt_len + self.requests[&request].params.max_tokens);
            self.sched.seqs.insert(sid, seq);
            self.sched.running.insert(pos + index, sid);
            self.requests
                .get_mut(&request)
                .expect("request")
                .seqs
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
        let seq = self.sched.seqs.get_mut(&sid).expect("live sequence");
        let params = &self.requests[&seq.request].params;
        let token = match logits {
            Some(l) => seq.sampler.sample(l),
            None => 0, // simulated execution: contents do not matter, lengths are forced
        };
        seq.tokens.push(token);
        let out_len = seq.tokens.len() - seq.prompt_len;
        let stop = (!params.ignore_eos && Some(token) == self.spec.eos_token_id)
            || params.stop_token_ids.contains(&token);
        let reason = if stop {
            Some(FinishReason::Stop)
        } else if out_len >= params.max_tokens || seq.tokens.len() >= self.max_len {
            Some(FinishReason::Length)
        } else {
            None
        };
        let new_tokens = seq.tokens[seq.prompt_len + seq.num_emitted..].to_vec();
        seq.num_emitted = out_len;
        let (request, index) = (seq.request, seq.index);
        self.metrics
            .get_mut(&sid)
            .expect("metrics")
            .token_times
            .push(now);
        self.totals.output_tokens += 1;
        outputs.push(RequestOutput {
            request,
            index,
            new_tokens,
            finished: reason,
        });
        if let Some(r) = reason {
            self.finish_seq(sid, r)?;
            let req = self.requests.get_mut(&request).expect("request");
            req.unfinished -= 1;
            if req.unfinished == 0 && req.params.n == req.seqs.len() {
                self.requests.remove(&request);
            }
        }
        Ok(())
    }

    pub(crate) fn finish_seq(&mut self, sid: SeqId, reason: FinishReason) -> Result<()> {
        self.sched.retire(sid, reason == FinishReason::Aborted)?;
        let mut seq = self.sched.seqs.remove(&sid).expect("live sequence");
        let state = seq.state;
        if state == SeqState::Preempted {
            seq.state = SeqState::Waiting;
        }
        seq.set_state(SeqState::Finished(reason));
        let mut m = self.metrics.remove(&sid).expect("metrics");
        m.finished = Some(self.now());
        m.finish_reason = Some(reason);
        self.finished.push(m);
        Ok(())
    }
}

/// The sampler of sequence `index` of a request: its own stream, seeded `seed + index`.
pub(crate) fn sampler(
    p: &SamplingParams,
    seed: u64,
    index: usize,
    id: RequestId,
) -> Result<Sampler> {
    Sampler::new(pagedattn_model::SamplingParams {
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        seed: seed.wrapping_add(index as u64),
    })
    .map_err(|e| EngineError::InvalidSampling {
        id,
        what: e.to_string(),
    })
}

pub(crate) fn new_metrics(seq: &Sequence, arrival: f64) -> SeqMetrics {
    SeqMetrics {
        request: seq.request,
        index: seq.index,
        prompt_len: seq.prompt_len,
        arrival,
        ..SeqMetrics::default()
    }
}
