//! The engine: requests in, tokens out, one scheduling step at a time.

use crate::completion::{new_metrics, sampler};
use crate::error::{EngineError, Result};
use crate::executor::{Executor, ModelSpec, SeqChunk, StepBatch};
use crate::kv_space::{KvPolicy, KvSpace};
use crate::metrics::{EngineTotals, SeqMetrics, StepMetrics};
use crate::request::{Request, RequestId, SamplingParams};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::sequence::{FinishReason, SeqState, Sequence};
use pagedattn_kv::{SeqId, TokenId};
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

pub(crate) struct RequestState {
    pub(crate) params: SamplingParams,
    pub(crate) seqs: Vec<SeqId>,
    pub(crate) unfinished: usize,
}

/// A continuous-batching engine over an [`Executor`].
pub struct Engine<E: Executor> {
    pub(crate) executor: E,
    pub(crate) spec: ModelSpec,
    pub(crate) config: EngineConfig,
    pub(crate) max_len: usize,
    pub(crate) sched: Scheduler,
    pub(crate) requests: HashMap<RequestId, RequestState>,
    pub(crate) metrics: HashMap<SeqId, SeqMetrics>,
    pub(crate) finished: Vec<SeqMetrics>,
    pub(crate) steps: Vec<StepMetrics>,
    pub(crate) totals: EngineTotals,
    pub(crate) next_seq: u64,
    pub(crate) start: Instant,
    pub(crate) virtual_now: Option<f64>,
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

    pub(crate) fn new_seq_id(&mut self) -> SeqId {
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
}
