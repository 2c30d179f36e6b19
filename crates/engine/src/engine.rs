//! The engine: requests in, tokens out, one scheduling step at a time.
//!
//! [`Engine::step`] is schedule -> execute -> update -> outputs: the scheduler decides the
//! step and describes it as a [`pagedattn_kernels::Batch`]; the executor computes it; the
//! scheduler applies the result to its sequences (the one writer of their progress); the
//! request bookkeeping turns that into outputs.
//!
//! # Invariants
//! - The scheduler owns the sequences, the queues and the KV space (see `scheduler.rs`);
//!   the request bookkeeping owns which requests are live (see `requests.rs`). The engine
//!   only calls them; [`Engine::check_invariants`] recounts both and their agreement.
//! - A step either completes (every scheduled chunk's tokens are computed, and sampled
//!   where the chunk ends its sequence) or fails, and then every request it touched ends
//!   with [`FinishReason::Error`] and its memory is freed: no table is left ahead of what
//!   was computed.
//! - With `keep_history` off, nothing grows with the number of requests or steps served:
//!   finished sequences hand their metrics to the caller in their last [`RequestOutput`].

use crate::error::{EngineError, Result};
use crate::executor::{Executor, ExecutorError, ModelSpec, StepOutput};
use crate::finish::FinishReason;
use crate::ids::{RequestId, SeqId, TokenId};
use crate::kv_space::{KvPolicy, KvSpace};
use crate::metrics::{EngineTotals, StepMetrics};
use crate::output::RequestOutput;
use crate::request::{validate, Request, SamplingParams};
use crate::requests::Requests;
use crate::scheduled::Scheduled;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::sequence::StopRules;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
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
    /// Keep every finished sequence's metrics and every step's record (benchmarks). Off,
    /// a long-running engine keeps nothing per finished request or past step.
    #[serde(default)]
    pub keep_history: bool,
}

impl EngineConfig {
    /// `policy` with `kv_budget_bytes` of KV, block size 16, default limits, no history.
    pub fn new(policy: KvPolicy, kv_budget_bytes: u64) -> Self {
        Self {
            policy,
            kv_budget_bytes,
            block_size: pagedattn_kv::DEFAULT_BLOCK_SIZE,
            max_model_len: None,
            scheduler: SchedulerConfig::default(),
            keep_history: false,
        }
    }

    /// The same, keeping every finished sequence's metrics and every step's record.
    #[must_use]
    pub fn with_history(mut self) -> Self {
        self.keep_history = true;
        self
    }
}

/// A continuous-batching engine over an [`Executor`].
pub struct Engine<E: Executor> {
    pub(crate) executor: E,
    pub(crate) spec: ModelSpec,
    pub(crate) config: EngineConfig,
    pub(crate) max_len: usize,
    pub(crate) sched: Scheduler,
    pub(crate) requests: Requests,
    /// Every step's record (with history only).
    pub(crate) steps: Vec<StepMetrics>,
    pub(crate) last_step: Option<StepMetrics>,
    pub(crate) num_steps: u64,
    pub(crate) start: Instant,
    pub(crate) virtual_now: Option<f64>,
}

impl<E: Executor> std::fmt::Debug for Engine<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("running", &self.sched.num_running())
            .field("waiting", &self.sched.num_waiting())
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
        let rules = StopRules {
            max_len,
            end_ids: spec
                .eos_token_id
                .into_iter()
                .chain(spec.end_of_turn_ids.iter().copied())
                .collect(),
        };
        Ok(Self {
            executor,
            virtual_now: spec.simulated.then_some(0.0),
            spec,
            max_len,
            sched: Scheduler::new(config.scheduler.clone(), rules, kv),
            requests: Requests::new(config.keep_history),
            config,
            steps: Vec::new(),
            last_step: None,
            num_steps: 0,
            start: Instant::now(),
        })
    }

    /// Seconds since the engine started (modeled seconds for a simulated executor).
    pub fn now(&self) -> f64 {
        self.virtual_now
            .unwrap_or_else(|| self.start.elapsed().as_secs_f64())
    }

    /// The instant the wall clock of [`Self::now`] counts from.
    pub fn epoch(&self) -> Instant {
        self.start
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

    /// Facts about the model.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The executor.
    pub fn executor(&self) -> &E {
        &self.executor
    }

    /// Validates and queues a request. On error nothing is queued.
    pub fn add_request(&mut self, req: Request) -> Result<()> {
        let id = req.id;
        if self.requests.contains(id) {
            return Err(EngineError::DuplicateRequest(id));
        }
        validate(&req, self.max_len, self.spec.vocab_size)?;
        let n = req.params.n;
        // Paged sequences fork after the prompt (sharing its blocks); contiguous ones
        // cannot share, so each of the n sequences computes the prompt itself.
        let shape = if self.config.policy.is_paged() {
            (1, n - 1)
        } else {
            (n, 0)
        };
        let params = Arc::new(req.params);
        let seqs = self
            .sched
            .add_request(id, &req.prompt, &params, req.arrival, shape);
        self.requests.add(id, seqs, req.prompt.len());
        Ok(())
    }

    /// Whether any request is waiting or running.
    pub fn has_unfinished(&self) -> bool {
        !self.requests.is_empty()
    }

    /// Whether `id` is waiting or running.
    pub fn contains(&self, id: RequestId) -> bool {
        self.requests.contains(id)
    }

    /// Runs one step: schedule, execute, update, outputs. If the executor fails, the
    /// requests of this step end with [`FinishReason::Error`], their memory is freed, and
    /// the error names them; the engine stays usable.
    pub fn step(&mut self) -> Result<Vec<RequestOutput>> {
        let t0 = self.now();
        let scheduled = self.sched.schedule(t0)?;
        if scheduled.chunks.is_empty() {
            return Ok(Vec::new());
        }
        let output = match self.execute(&scheduled) {
            Ok(o) => o,
            Err(e) => return Err(self.fail_step(&scheduled, e)),
        };
        let now = match (self.virtual_now.as_mut(), output.modeled_seconds) {
            (Some(v), Some(dt)) => {
                *v += dt;
                *v
            }
            _ => self.now(),
        };
        let vocab = self.spec.vocab_size;
        let update = self
            .sched
            .update(&scheduled, output.logits.as_deref(), vocab, now)?;
        let outputs = self.requests.record(update);
        self.record_step(&scheduled, t0, now);
        Ok(outputs)
    }

    /// Copies blocks and runs the executor on the step's description; checks the shape of
    /// what it returns.
    fn execute(&mut self, scheduled: &Scheduled) -> Result<StepOutput, ExecutorError> {
        self.executor.copy_blocks(&scheduled.copies)?;
        let batch = self
            .sched
            .batch(scheduled)
            .map_err(|e| ExecutorError::failed(e.to_string()))?;
        let output = self.executor.execute(&batch)?;
        if let Some(l) = &output.logits {
            let rows = batch.num_logits_rows();
            let vocab = self.spec.vocab_size;
            if Some(l.len()) != rows.checked_mul(vocab) {
                return Err(ExecutorError::LogitsShape {
                    got: l.len(),
                    rows,
                    vocab,
                });
            }
        }
        Ok(output)
    }

    /// The record of a step that ran from `t0` to `now`.
    fn record_step(&mut self, scheduled: &Scheduled, t0: f64, now: f64) {
        let usage = self.sched.kv().usage();
        let record = StepMetrics {
            time: now,
            duration: now - t0,
            batch_size: scheduled.chunks.len(),
            decode_seqs: scheduled.decode_seqs,
            tokens_scheduled: scheduled.num_tokens(),
            running: self.sched.num_running(),
            waiting: self.sched.num_waiting(),
            kv_held_slots: usage.held_slots,
            kv_tokens: usage.tokens_stored,
            utilization: usage.utilization(),
            internal_fragmentation_slots: usage.internal_fragmentation_slots,
            external_fragmentation_slots: usage.external_fragmentation_slots,
            preemptions: scheduled.preempted,
        };
        self.num_steps += 1;
        if self.config.keep_history {
            self.steps.push(record);
        }
        self.last_step = Some(record);
    }

    /// Ends every request with a sequence in the failed step, discarding K/V that were
    /// never computed, and returns the error that names them.
    fn fail_step(&mut self, scheduled: &Scheduled, source: ExecutorError) -> EngineError {
        let mut requests = Vec::new();
        let mut seen = HashSet::new();
        for c in &scheduled.chunks {
            if let Ok(s) = self.sched.seq(c.kv) {
                if seen.insert(s.request()) {
                    requests.push(s.request());
                }
            }
        }
        for &id in &requests {
            if let Err(e) = self.end_request(id, FinishReason::Error) {
                return e;
            }
        }
        EngineError::StepFailed { requests, source }
    }

    /// Aborts a request: frees everything its sequences hold, at once. Aborting a request
    /// that finished or never existed does nothing (a client that disconnects races its
    /// last token). Returns the last outputs of the sequences it ended.
    pub fn abort(&mut self, id: RequestId) -> Result<Vec<RequestOutput>> {
        self.end_request(id, FinishReason::Aborted)
    }

    /// Aborts every request (shutdown after the grace period).
    pub fn abort_all(&mut self) -> Result<Vec<RequestOutput>> {
        let mut out = Vec::new();
        for id in self.requests.ids() {
            out.extend(self.abort(id)?);
        }
        Ok(out)
    }

    /// Ends sequence `index` of request `id` as stopped (a stop string seen by the caller's
    /// detokenizer) and frees its memory; returns its last output (and, for the first
    /// sequence of a paged parallel request whose prompt is not done, those of the forks it
    /// will never make). A no-op if it has already finished.
    pub fn stop_sequence(&mut self, id: RequestId, index: usize) -> Result<Vec<RequestOutput>> {
        let found = self
            .requests
            .seqs(id)
            .into_iter()
            .find(|&s| self.sched.seq(s).is_ok_and(|q| q.index() == index));
        match found {
            Some(sid) => self.retire(sid, FinishReason::Stop),
            None => Ok(Vec::new()),
        }
    }

    /// Ends every live sequence of request `id` with `reason`.
    fn end_request(&mut self, id: RequestId, reason: FinishReason) -> Result<Vec<RequestOutput>> {
        let mut out = Vec::new();
        for sid in self.requests.seqs(id) {
            out.extend(self.retire(sid, reason)?);
        }
        Ok(out)
    }

    /// Retires live sequence `sid` with `reason` and returns its last outputs.
    fn retire(&mut self, sid: SeqId, reason: FinishReason) -> Result<Vec<RequestOutput>> {
        let now = self.now();
        let retired = self
            .sched
            .retire(sid, reason, now)?
            .ok_or_else(|| EngineError::Internal(format!("{sid} finished twice")))?;
        Ok(self.requests.retired(sid, retired))
    }

    /// Runs prompts to completion and returns, per prompt, the tokens of each of its
    /// sequences.
    pub fn generate(
        &mut self,
        prompts: &[Vec<TokenId>],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Vec<TokenId>>>> {
        let base = self.sched.seqs_created() + 1_000_000_000;
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
        while ids.iter().any(|&id| self.requests.contains(id)) {
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

    /// Totals over the engine's life.
    pub fn totals(&self) -> EngineTotals {
        let p = self.sched.progress();
        EngineTotals {
            steps: self.num_steps,
            computed_tokens: p.computed_tokens,
            recomputed_tokens: p.recomputed_tokens,
            preemptions: p.preemptions,
            output_tokens: p.output_tokens,
            prompt_tokens: self.requests.prompt_tokens(),
            finished_requests: self.requests.finished_requests(),
        }
    }
}
