//! The engine: requests in, tokens out, one scheduling step at a time.
//!
//! # Invariants
//! - `requests` is keyed by the requests with at least one live sequence (or forks still to
//!   make); a request leaves it when its last sequence finishes, is aborted or fails.
//! - Every sequence of a live request is live in the scheduler, or finished; the scheduler
//!   owns the queues and the KV space (see `scheduler.rs`), the engine only asks it.
//! - A step either completes (every scheduled chunk's tokens are computed, and sampled
//!   where the chunk ends its sequence) or fails, and then every request it touched ends
//!   with [`FinishReason::Error`] and its memory is freed: no table is left ahead of what
//!   was computed.
//! - With `keep_history` off, nothing grows with the number of requests or steps served:
//!   finished sequences hand their metrics to the caller in their last [`RequestOutput`].

use crate::completion::request_seed;
use crate::error::{EngineError, Result};
use crate::executor::{Executor, ModelSpec};
use crate::kv_space::{KvPolicy, KvSpace};
use crate::metrics::{EngineTotals, SeqMetrics, StepMetrics};
use crate::request::{validate, Request, RequestId, SamplingParams};
use crate::sampler::{Sampler, TokenLogprob};
use crate::scheduler::{Scheduled, Scheduler, SchedulerConfig};
use crate::sequence::{FinishReason, SeqState, Sequence};
use pagedattn_kv::{SeqId, TokenId};
use pagedattn_model::{Batch, LogitsFor, SeqInput};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
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

/// New output of one sequence since the previous step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestOutput {
    /// The request.
    pub request: RequestId,
    /// Which of its sequences.
    pub index: usize,
    /// Tokens generated since the last output for this sequence.
    pub new_tokens: Vec<TokenId>,
    /// Their log-probabilities, when the request asked for them (one per new token).
    pub logprobs: Vec<TokenLogprob>,
    /// Why the sequence finished, if it did.
    pub finished: Option<FinishReason>,
    /// The finished sequence's metrics (in its last output only).
    pub metrics: Option<Box<SeqMetrics>>,
}

pub(crate) struct RequestState {
    pub(crate) params: SamplingParams,
    /// Its sequences that are live in the scheduler.
    pub(crate) live: Vec<SeqId>,
    /// Forks still to make when the first sequence's prompt is done (paged `n > 1`).
    pub(crate) pending_forks: usize,
}

/// A continuous-batching engine over an [`Executor`].
pub struct Engine<E: Executor> {
    pub(crate) executor: E,
    pub(crate) spec: ModelSpec,
    pub(crate) config: EngineConfig,
    pub(crate) max_len: usize,
    pub(crate) sched: Scheduler,
    pub(crate) requests: HashMap<RequestId, RequestState>,
    pub(crate) finished: Vec<SeqMetrics>,
    pub(crate) steps: Vec<StepMetrics>,
    pub(crate) last_step: Option<StepMetrics>,
    pub(crate) totals: EngineTotals,
    pub(crate) next_seq: u64,
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
        Ok(Self {
            executor,
            virtual_now: spec.simulated.then_some(0.0),
            spec,
            max_len,
            sched: Scheduler::new(config.scheduler.clone(), kv),
            config,
            requests: HashMap::new(),
            finished: Vec::new(),
            steps: Vec::new(),
            last_step: None,
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
        if self.requests.contains_key(&id) {
            return Err(EngineError::DuplicateRequest(id));
        }
        validate(&req, self.max_len, self.spec.vocab_size)?;
        let n = req.params.n;
        // Paged sequences fork after the prompt (sharing its blocks); contiguous ones
        // cannot share, so each of the n sequences computes the prompt itself.
        let (created, forks) = if self.config.policy.is_paged() {
            (1, n - 1)
        } else {
            (n, 0)
        };
        let final_len = req.prompt.len() + req.params.max_tokens; // validated: no overflow
        let seed = request_seed(&req.params, id);
        let mut live = Vec::with_capacity(created);
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
                sampler: Sampler::new(&req.params, seed.wrapping_add(index as u64)),
                metrics: SeqMetrics {
                    request: id,
                    index,
                    prompt_len: req.prompt.len(),
                    arrival: req.arrival,
                    ..SeqMetrics::default()
                },
            };
            self.sched.add(seq, final_len)?;
            live.push(sid);
        }
        self.totals.prompt_tokens += req.prompt.len() as u64;
        self.requests.insert(
            id,
            RequestState {
                params: req.params,
                live,
                pending_forks: forks,
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

    /// Whether `id` is waiting or running.
    pub fn contains(&self, id: RequestId) -> bool {
        self.requests.contains_key(&id)
    }

    /// Runs one step: schedules, executes, samples, and returns new tokens. If the
    /// executor fails, the requests of this step end with [`FinishReason::Error`], their
    /// memory is freed, and the error names them; the engine stays usable.
    pub fn step(&mut self) -> Result<Vec<RequestOutput>> {
        let scheduled = self.sched.schedule()?;
        if scheduled.chunks.is_empty() {
            return Ok(Vec::new());
        }
        let t0 = self.now();
        for c in &scheduled.chunks {
            let m = &mut self.sched.seq_mut(c.seq)?.metrics;
            m.first_scheduled.get_or_insert(t0);
        }
        let output = match self.execute(&scheduled) {
            Ok(o) => o,
            Err(message) => return Err(self.fail_step(&scheduled, message)),
        };
        let now = match (self.virtual_now.as_mut(), output.modeled_seconds) {
            (Some(v), Some(dt)) => {
                *v += dt;
                *v
            }
            _ => self.now(),
        };
        let vocab = self.spec.vocab_size;
        let mut outputs = Vec::new();
        let mut row = 0;
        for c in &scheduled.chunks {
            self.totals.computed_tokens += c.len as u64;
            self.sched.seq_mut(c.seq)?.num_computed += c.len;
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
        self.totals.preemptions = self.sched.preemptions();
        self.totals.recomputed_tokens = self.sched.recomputed_tokens();
        let usage = self.sched.kv().usage();
        let record = StepMetrics {
            time: now,
            duration: now - t0,
            batch_size: scheduled.chunks.len(),
            decode_seqs: scheduled
                .chunks
                .iter()
                .filter(|c| c.len == 1 && c.sample)
                .count(),
            tokens_scheduled: scheduled.chunks.iter().map(|c| c.len).sum(),
            running: self.sched.num_running(),
            waiting: self.sched.num_waiting(),
            kv_held_slots: usage.held_slots,
            kv_tokens: usage.tokens_stored,
            utilization: usage.utilization(),
            internal_fragmentation_slots: usage.internal_fragmentation_slots,
            external_fragmentation_slots: usage.external_fragmentation_slots,
            preemptions: scheduled.preempted,
        };
        if self.config.keep_history {
            self.steps.push(record);
        }
        self.last_step = Some(record);
        Ok(outputs)
    }

    /// Copies blocks and runs the executor on the step's [`Batch`]; checks the shape of
    /// what it returns.
    fn execute(&mut self, scheduled: &Scheduled) -> Result<crate::StepOutput, String> {
        self.executor.copy_blocks(&scheduled.copies)?;
        let kv = self.sched.kv();
        let mut places = Vec::with_capacity(scheduled.chunks.len());
        for c in &scheduled.chunks {
            let (loc, block_size) = kv.location(c.seq).map_err(|e| e.to_string())?;
            let slots: Vec<usize> = (c.start..c.start + c.len)
                .map(|p| loc.slot(p, block_size))
                .collect();
            places.push((loc, slots));
        }
        let mut batch = Batch::new();
        for (c, (loc, slots)) in scheduled.chunks.iter().zip(&places) {
            batch.push(SeqInput {
                tokens: &self.sched.seq(c.seq).map_err(|e| e.to_string())?.tokens
                    [c.start..c.start + c.len],
                start_pos: c.start,
                slots,
                kv: *loc,
                logits: if c.sample {
                    LogitsFor::Last
                } else {
                    LogitsFor::None
                },
            });
        }
        let output = self.executor.execute(&batch)?;
        if let Some(l) = &output.logits {
            let rows = scheduled.chunks.iter().filter(|c| c.sample).count();
            let vocab = self.spec.vocab_size;
            if Some(l.len()) != rows.checked_mul(vocab) {
                return Err(format!(
                    "returned {} logits for {rows} rows of {vocab}",
                    l.len()
                ));
            }
        }
        Ok(output)
    }

    /// Ends every request with a sequence in the failed step, discarding K/V that were
    /// never computed, and returns the error that names them.
    fn fail_step(&mut self, scheduled: &Scheduled, message: String) -> EngineError {
        let mut requests = Vec::new();
        let mut seen = HashSet::new();
        for c in &scheduled.chunks {
            if let Ok(s) = self.sched.seq(c.seq) {
                if seen.insert(s.request) {
                    requests.push(s.request);
                }
            }
        }
        for &id in &requests {
            if let Err(e) = self.end_request(id, FinishReason::Error) {
                return e;
            }
        }
        EngineError::StepFailed { requests, message }
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
