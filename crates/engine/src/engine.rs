//! The engine: requests in, tokens out, one scheduling step at a time.

use crate::error::{EngineError, Result};
use crate::executor::{Executor, ModelSpec, SeqChunk, StepBatch};
use crate::kv_space::{KvPolicy, KvSpace, KvUsage};
use crate::metrics::{EngineTotals, SeqMetrics, StepMetrics};
use crate::request::{Request, RequestId, SamplingParams};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::sequence::{FinishReason, SeqState, Sequence};
use pagedattn_kv::{SeqId, TokenId};
use pagedattn_model::Sampler;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;

/// How the engine is set up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// How KV memory is managed.
    pub policy: KvPolicy,
    /// Bytes of KV memory, converted to token slots with the model's KV bytes per token;
    /// the same number for every policy makes comparisons fair.
    pub kv_budget_bytes: u64,
    /// Tokens per block (paged policies).
    pub block_size: usize,
    /// Longest sequence accepted (default: the model's maximum).
    pub max_model_len: Option<usize>,
    /// Scheduling limits.
    pub scheduler: SchedulerConfig,
}

impl EngineConfig {
    /// `policy` with `kv_budget_bytes` of KV, block size 16, default limits.
    pub fn new(policy: KvPolicy, kv_budget_bytes: u64) -> Self {
        Self {
            policy,
            kv_budget_bytes,
            block_size: pagedattn_kv::DEFAULT_BLOCK_SIZE,
            max_model_len: None,
            scheduler: SchedulerConfig::default(),
        }
    }
}

/// New output of one sequence since the previous step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestOutput {
    /// The request.
    pub request: RequestId,
    /// Which of its sequences.
    pub index: usize,
    /// Tokens generated since the last output for this sequence.
    pub new_tokens: Vec<TokenId>,
    /// Why the sequence finished, if it did.
    pub finished: Option<FinishReason>,
}

struct RequestState {
    params: SamplingParams,
    seqs: Vec<SeqId>,
    unfinished: usize,
}

/// A continuous-batching engine over an [`Executor`].
pub struct Engine<E: Executor> {
    executor: E,
    spec: ModelSpec,
    config: EngineConfig,
    max_len: usize,
    sched: Scheduler,
    requests: HashMap<RequestId, RequestState>,
    metrics: HashMap<SeqId, SeqMetrics>,
    finished: Vec<SeqMetrics>,
    steps: Vec<StepMetrics>,
    totals: EngineTotals,
    next_seq: u64,
    start: Instant,
    virtual_now: Option<f64>,
}

impl<E: Executor> std::fmt::Debug for Engine<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("running", &self.sched.running.len())
            .field("waiting", &self.sched.waiting.len())
            .finish_non_exhaustive()
    }
}

impl<E: Executor> Engine<E> {
    /// An engine for `executor`; fails fast if the KV budget cannot hold one sequence of
    /// the maximum length (such a request would wait forever).
    pub fn new(mut executor: E, config: EngineConfig) -> Result<Self> {
        let spec = executor.spec();
        let max_len = config.max_model_len.unwrap_or(spec.max_model_len);
        if max_len == 0 || max_len > spec.max_model_len {
            return Err(EngineError::InvalidConfig(format!(
                "max_model_len must be in 1..={}",
                spec.max_model_len
            )));
        }
        let s = &config.scheduler;
        if s.max_num_seqs == 0 || s.max_num_batched_tokens == 0 {
            return Err(EngineError::InvalidConfig(
                "max_num_seqs and max_num_batched_tokens must be at least 1".into(),
            ));
        }
        let (kv, layout) = KvSpace::new(
            config.policy,
            config.kv_budget_bytes,
            spec.kv_bytes_per_token,
            config.block_size,
            max_len,
        )?;
        executor.init_kv(layout).map_err(EngineError::Executor)?;
        Ok(Self {
            executor,
            virtual_now: spec.simulated.then_some(0.0),
            spec,
            max_len,
            sched: Scheduler::new(config.scheduler.clone(), kv),
            config,
            requests: HashMap::new(),
            metrics: HashMap::new(),
            finished: Vec::new(),
            steps: Vec::new(),
            totals: EngineTotals::default(),
            next_seq: 0,
            start: Instant::now(),
        })
    }

    /// Seconds since the engine started (modeled seconds for a simulated executor).
    pub fn now(&self) -> f64 {
        self.virtual_now
            .unwrap_or_else(|| self.start.elapsed().as_secs_f64())
    }

    /// Moves a simulated clock forward to `t` (idle time until the next arrival). No-op
    /// for the wall clock.
    pub fn advance_clock_to(&mut self, t: f64) {
        if let Some(now) = &mut self.virtual_now {
            *now = now.max(t);
        }
    }

    /// The longest sequence accepted.
    pub fn max_model_len(&self) -> usize {
        self.max_len
    }

    /// The executor.
    pub fn executor(&self) -> &E {
        &self.executor
    }

    /// Validates and queues a request. On error nothing is queued.
    pub fn add_request(&mut self, req: Request) -> Result<()> {
        let id = req.id;
        if self.requests.contains_key(&id) {
            return Err(EngineError::DuplicateRequest(id));
        }
        if req.prompt.is_empty() {
            return Err(EngineError::EmptyPrompt(id));
        }
        req.params.validate(id)?;
        if req.prompt.len() + req.params.max_tokens > self.max_len {
            return Err(EngineError::TooLong {
                id,
                prompt: req.prompt.len(),
                max_tokens: req.params.max_tokens,
                max_len: self.max_len,
            });
        }
        if let Some(&token) = req
            .prompt
            .iter()
            .find(|&&t| t as usize >= self.spec.vocab_size)
        {
            return Err(EngineError::TokenOutOfVocab {
                id,
                token,
                vocab: self.spec.vocab_size,
            });
        }
        let n = req.params.n;
        // Paged sequences fork after the prompt (sharing its blocks); contiguous ones
        // cannot share, so each of the n sequences computes the prompt itself.
        let (created, forks) = if self.config.policy.is_paged() {
            (1, n - 1)
        } else {
            (n, 0)
        };
        let final_len = req.prompt.len() + req.params.max_tokens;
        let seed = req.params.seed.unwrap_or(id.0);
        let mut seqs = Vec::with_capacity(n);
        for index in 0..created {
            let sid = self.new_seq_id();
            let seq = Sequence {
                id: sid,
                request: id,
                index,
                tokens: req.prompt.clone(),
                prompt_len: req.prompt.len(),
                num_computed: 0,
                num_emitted: 0,
                state: SeqState::Waiting,
                sampler: sampler(&req.params, seed, index, id)?,
                pending_forks: if index == 0 { forks } else { 0 },
            };
            self.metrics.insert(sid, new_metrics(&seq, req.arrival));
            self.sched.seqs.insert(sid, seq);
            self.sched.final_len.insert(sid, final_len);
            self.sched.waiting.push_back(sid);
            seqs.push(sid);
        }
        self.requests.insert(
            id,
            RequestState {
                params: req.params,
                seqs,
                unfinished: n,
            },
        );
        Ok(())
    }

    fn new_seq_id(&mut self) -> SeqId {
        self.next_seq += 1;
        SeqId(self.next_seq)
    }

    /// Whether any request is waiting or running.
    pub fn has_unfinished(&self) -> bool {
        !self.requests.is_empty()
    }

    /// Aborts a request: frees everything its sequences hold.
    pub fn abort(&mut self, id: RequestId) -> Result<()> {
        let req = self
            .requests
            .remove(&id)
            .ok_or(EngineError::UnknownRequest(id))?;
        for sid in req.seqs {
            if self.sched.seqs.contains_key(&sid) {
                self.finish_seq(sid, FinishReason::Aborted)?;
            }
        }
        Ok(())
    }

    /// Runs one step: schedules, executes, samples, and returns new tokens.
    pub fn step(&mut self) -> Result<Vec<RequestOutput>> {
        let scheduled = self.sched.schedule()?;
        if scheduled.chunks.is_empty() {
            return Ok(Vec::new());
        }
        let t0 = self.now();
        for c in &scheduled.chunks {
            let m = self
                .metrics
                .get_mut(&c.seq)
                .expect("metrics of a live sequence");
            m.first_scheduled.get_or_insert(t0);
        }
        self.executor
            .copy_blocks(&scheduled.copies)
            .map_err(EngineError::Executor)?;
        let output = {
            let mut batch = StepBatch::default();
            for c in &scheduled.chunks {
                batch.chunks.push(SeqChunk {
                    seq: c.seq,
                    tokens: &self.sched.seqs[&c.seq].tokens[c.start..c.start + c.len],
                    start_pos: c.start,
                    addressing: self.sched.kv.addressing(c.seq)?,
                    want_logits: c.sample,
                });
            }
            self.executor
                .execute(&batch)
                .map_err(EngineError::Executor)?
        };
        let now = match (self.virtual_now.as_mut(), output.modeled_seconds) {
            (Some(v), Some(dt)) => {
                *v += dt;
                *v
            }
            _ => self.now(),
        };
        let vocab = self.spec.vocab_size;
        if let Some(l) = &output.logits {
            let rows = scheduled.chunks.iter().filter(|c| c.sample).count();
            if l.len() != rows * vocab {
                return Err(EngineError::Executor(format!(
                    "returned {} logits for {rows} rows of {vocab}",
                    l.len()
                )));
            }
        }
        let mut outputs = Vec::new();
        let mut row = 0;
        for c in &scheduled.chunks {
            self.totals.computed_tokens += c.len as u64;
            self.sched
                .seqs
                .get_mut(&c.seq)
                .expect("scheduled")
                .num_computed += c.len;
            if !c.sample {
                continue;
            }
            let logits = output
                .logits
                .as_ref()
                .map(|l| &l[row * vocab..(row + 1) * vocab]);
            row += 1;
            self.fork_children(c.seq, logits, now, &mut outputs)?;
            self.emit_token(c.seq, logits, now, &mut outputs)?;
        }
        self.totals.steps += 1;
        self.totals.preemptions = self.sched.preemptions;
        self.totals.recomputed_tokens = self.sched.recomputed_tokens;
        let usage = self.sched.kv.usage();
        self.steps.push(StepMetrics {
            time: now,
            duration: now - t0,
            batch_size: scheduled.chunks.len(),
            decode_seqs: scheduled
                .chunks
                .iter()
                .filter(|c| c.len == 1 && c.sample)
                .count(),
            tokens_scheduled: scheduled.chunks.iter().map(|c| c.len).sum(),
            running: self.sched.running.len(),
            waiting: self.sched.waiting.len(),
            kv_held_slots: usage.held_slots,
            kv_tokens: usage.tokens_stored,
            utilization: usage.utilization(),
            internal_fragmentation_slots: usage.internal_fragmentation_slots,
            external_fragmentation_slots: usage.external_fragmentation_slots,
            preemptions: scheduled.preempted,
        });
        Ok(outputs)
    }

    /// Paged parallel sampling: when the first sequence of an `n > 1` request finishes its
    /// prompt, its siblings fork its blocks and each samples its own first token.
    fn fork_children(
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
    fn emit_token(
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

    fn finish_seq(&mut self, sid: SeqId, reason: FinishReason) -> Result<()> {
        self.sched.retire(sid)?;
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

    /// Runs prompts to completion and returns, per prompt, the tokens of each of its
    /// sequences.
    pub fn generate(
        &mut self,
        prompts: &[Vec<TokenId>],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Vec<TokenId>>>> {
        let base = self.next_seq + 1_000_000_000;
        let ids: Vec<RequestId> = (0..prompts.len() as u64)
            .map(|i| RequestId(base + i))
            .collect();
        for (i, p) in prompts.iter().enumerate() {
            let req = Request {
                id: ids[i],
                prompt: p.clone(),
                params: params.clone(),
                arrival: self.now(),
            };
            if let Err(e) = self.add_request(req) {
                for id in &ids[..i] {
                    self.abort(*id)?;
                }
                return Err(e);
            }
        }
        let mut out: HashMap<RequestId, Vec<Vec<TokenId>>> = ids
            .iter()
            .map(|&id| (id, vec![Vec::new(); params.n]))
            .collect();
        while ids.iter().any(|id| self.requests.contains_key(id)) {
            for o in self.step()? {
                if let Some(v) = out.get_mut(&o.request) {
                    v[o.index].extend(o.new_tokens);
                }
            }
        }
        Ok(ids
            .iter()
            .map(|id| out.remove(id).unwrap_or_default())
            .collect())
    }

    /// The unfinished sequences, running ones first (in admission order), then waiting.
    pub fn sequences(&self) -> impl Iterator<Item = &Sequence> + '_ {
        self.sched
            .running
            .iter()
            .chain(self.sched.waiting.iter())
            .map(|id| &self.sched.seqs[id])
    }

    /// Metrics of finished sequences, in finishing order.
    pub fn finished_metrics(&self) -> &[SeqMetrics] {
        &self.finished
    }

    /// Metrics of every step.
    pub fn step_metrics(&self) -> &[StepMetrics] {
        &self.steps
    }

    /// Totals.
    pub fn totals(&self) -> &EngineTotals {
        &self.totals
    }

    /// KV memory use now.
    pub fn kv_usage(&self) -> KvUsage {
        self.sched.kv.usage()
    }

    /// The paged block manager's stats (paged policies).
    pub fn block_manager_stats(&self) -> Option<pagedattn_kv::BlockManagerStats> {
        self.sched
            .kv
            .block_manager()
            .map(pagedattn_kv::BlockManager::stats)
    }

    /// Checks the KV manager's invariants and that only live sequences hold memory.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.sched.kv.check_invariants()?;
        for id in &self.sched.running {
            let s = self
                .sched
                .seqs
                .get(id)
                .ok_or(format!("running {id} unknown"))?;
            if s.state != SeqState::Running {
                return Err(format!("{id} is in the running list as {:?}", s.state));
            }
        }
        let live = self.sched.running.len() + self.sched.waiting.len();
        if live != self.sched.seqs.len() {
            return Err(format!(
                "{live} queued but {} sequences",
                self.sched.seqs.len()
            ));
        }
        if self.requests.is_empty() && self.sched.kv.usage().held_slots != 0 {
            return Err("KV slots held with no request left".into());
        }
        Ok(())
    }
}

/// The sampler of sequence `index` of a request: its own stream, seeded `seed + index`.
fn sampler(p: &SamplingParams, seed: u64, index: usize, id: RequestId) -> Result<Sampler> {
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

fn new_metrics(seq: &Sequence, arrival: f64) -> SeqMetrics {
    SeqMetrics {
        request: seq.request,
        index: seq.index,
        prompt_len: seq.prompt_len,
        arrival,
        ..SeqMetrics::default()
    }
}
