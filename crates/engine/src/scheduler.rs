//! The scheduling policy: which sequences compute how many tokens this step.
//!
//! Each step, under a token budget (`max_num_batched_tokens`) and a sequence limit
//! (`max_num_seqs`):
//! 1. **Running sequences first**, oldest first: one token each when decoding, the next
//!    chunk of the prompt when still prefilling. When the KV pool runs dry, preempt by
//!    recompute: the victim is the running sequence *not yet scheduled this step* whose
//!    K/V are cheapest to recompute (fewest computed tokens); if there is none, the
//!    sequence itself. A victim's blocks are freed (with prefix caching its full blocks
//!    stay cached, so re-admission hits them) and it goes to the front of the queue.
//! 2. **Then waiting sequences**, in arrival order (no overtaking, so none starves), while
//!    memory allows. Paged admission keeps headroom: after admitting, the free blocks must
//!    still cover the rest of every running prompt plus a decode-growth headroom per
//!    running sequence. Admitting whenever the prompt fits (vLLM's rule) fills the pool to
//!    the brim, and the next decode steps preempt what was just admitted — a preemption
//!    storm, costly on a CPU where recomputing a prompt is expensive. The headroom follows
//!    the workload: `headroom_percent` of the estimated mean output length, estimated from
//!    what has been generated so far (see [`Scheduler::headroom`]); `headroom_blocks`
//!    until the first sequence finishes. A fixed headroom is wrong both ways: too small for
//!    long outputs (preemptions), too large for short ones (the reserve holds memory no
//!    sequence will use, and batches shrink).
//!    Contiguous policies admit when their whole reservation fits, and never preempt.
//!    No admissions in a step that preempted: memory is short.
//!
//! # Invariants (kept by every method here; recounted by [`Scheduler::check_invariants`])
//! - Every live sequence is in exactly one queue: `running` (state `Running`, holds KV
//!   memory) or `waiting` (state `Waiting`, holds none). Finished sequences are gone.
//! - `seqs`, `final_len` and `lost` are keyed by live sequences only: an entry is added
//!   with the sequence ([`Scheduler::add`], [`Scheduler::fork`]) and removed with it
//!   ([`Scheduler::retire`]).
//! - The KV space holds memory for exactly the running sequences.
//! - A running sequence's K/V hold exactly its first `num_computed` tokens.
//! - Only this module changes the queues, the KV space, or a live sequence — its state, its
//!   computed and generated tokens, its metrics: it owns the sequences and lends them out
//!   read-only. [`Scheduler::schedule`] decides a step; [`Scheduler::update`] (vLLM's
//!   `update_from_output`) applies its result: advances computed tokens, samples and
//!   appends the next ones, makes the forks of parallel sampling, and retires what
//!   finished.

use crate::error::{EngineError, Result};
use crate::finish::FinishReason;
use crate::ids::{RequestId, SeqId, TokenId};
use crate::kv_space::{Grow, KvSpace};
use crate::output::RequestOutput;
use crate::request::SamplingParams;
use crate::sequence::{SeqState, Sequence, StopRules};
use pagedattn_kernels::{Batch, LogitsFor, SeqSpec};
use pagedattn_kv::BlockCopy;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Decode growth reserved per running sequence at admission.
#[derive(Clone, Copy, Debug)]
enum Headroom {
    /// Before any sequence has finished: a fixed number of blocks.
    PriorBlocks(usize),
    /// Afterwards: a share of the estimated mean output length, and at least what would
    /// bring a sequence to the shortest output seen so far (every sequence has generated at
    /// least that much; with equal output lengths, a share of the mean would not cover
    /// sequences that all grow to it).
    Learned {
        share_of_mean: usize,
        min_output: usize,
    },
}

impl Headroom {
    /// Blocks reserved for a sequence that has generated `generated` tokens.
    fn blocks(self, kv: &KvSpace, generated: usize) -> usize {
        match self {
            Self::PriorBlocks(b) => b,
            Self::Learned {
                share_of_mean,
                min_output,
            } => kv.blocks_for(share_of_mean.max(min_output.saturating_sub(generated))),
        }
    }
}

/// Scheduling limits.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchedulerConfig {
    /// Sequences running at once, at most.
    pub max_num_seqs: usize,
    /// Tokens computed per step, at most (decode tokens + prefill chunk tokens).
    pub max_num_batched_tokens: usize,
    /// Free blocks kept per running sequence when admitting (paged policies), until the
    /// first sequence finishes and the output lengths can be estimated.
    pub headroom_blocks: usize,
    /// Afterwards, the headroom per running sequence as a percentage of the estimated
    /// mean output length (paged policies).
    pub headroom_percent: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 512,
            headroom_blocks: 12,
            headroom_percent: 20,
        }
    }
}

/// A step as the scheduler decided it. Each chunk is a sequence's share of the step in the
/// one spelling every layer uses ([`SeqSpec`]): its rows of the batch (`query_start`,
/// `query_len` new tokens) and its context after them; `kv` names the sequence, whose K/V
/// location the batch resolves. A chunk samples when its context reaches the sequence's
/// last token.
#[derive(Debug, Default)]
pub(crate) struct Scheduled {
    pub(crate) chunks: Vec<SeqSpec<SeqId>>,
    /// Copy-on-write copies to perform before the step.
    pub(crate) copies: Vec<BlockCopy>,
    /// Preemptions made to fit the step.
    pub(crate) preempted: usize,
    /// Chunks that decode one token.
    pub(crate) decode_seqs: usize,
}

impl Scheduled {
    /// Appends `len` new tokens of `seq` from position `start`, as the next rows.
    fn push(&mut self, seq: SeqId, start: usize, len: usize) {
        let query_start = self
            .chunks
            .last()
            .map_or(0, |c| c.query_start + c.query_len);
        self.chunks.push(SeqSpec {
            query_start,
            query_len: len,
            context_len: start + len,
            kv: seq,
        });
    }

    /// Tokens computed in the step.
    pub(crate) fn num_tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.query_len).sum()
    }
}

/// What [`Scheduler::update`] did, for the request bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct StepUpdate {
    /// Each sequence's new output, in batch order (forks right before their parent); those
    /// with `finished` set are retired and carry their metrics.
    pub(crate) outputs: Vec<(SeqId, RequestOutput)>,
    /// Forks made this step, with their request.
    pub(crate) born: Vec<(RequestId, SeqId)>,
}

/// A sequence retired by [`Scheduler::retire`].
#[derive(Debug)]
pub(crate) struct Retired {
    /// Its last output: `finished` and `metrics` set, no new tokens.
    pub(crate) output: RequestOutput,
    /// Forks it was still to make (they never will be).
    pub(crate) unborn_forks: usize,
}

/// Progress counters over the scheduler's life.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Progress {
    pub(crate) computed_tokens: u64,
    pub(crate) recomputed_tokens: u64,
    pub(crate) preemptions: u64,
    pub(crate) output_tokens: u64,
}

pub(crate) struct Scheduler {
    cfg: SchedulerConfig,
    rules: StopRules,
    kv: KvSpace,
    seqs: HashMap<SeqId, Sequence>,
    /// Sequence ids handed out.
    next_seq: u64,
    waiting: VecDeque<SeqId>,
    /// In admission order.
    running: Vec<SeqId>,
    /// Final length each sequence reserves under contiguous policies.
    final_len: HashMap<SeqId, usize>,
    progress: Progress,
    /// K/V discarded by preemption, per sequence, not yet recomputed.
    lost: HashMap<SeqId, usize>,
    /// Sequences that finished on their own (not aborted), and the tokens they generated:
    /// the output-length estimate of [`Self::headroom`].
    finished: u64,
    finished_output: u64,
    /// The shortest output of a finished sequence.
    min_output: usize,
}

impl Scheduler {
    pub(crate) fn new(cfg: SchedulerConfig, rules: StopRules, kv: KvSpace) -> Self {
        Self {
            cfg,
            rules,
            kv,
            seqs: HashMap::new(),
            next_seq: 0,
            waiting: VecDeque::new(),
            running: Vec::new(),
            final_len: HashMap::new(),
            progress: Progress::default(),
            lost: HashMap::new(),
            finished: 0,
            finished_output: 0,
            min_output: usize::MAX,
        }
    }

    /// The KV space (read-only: only the scheduler allocates and frees).
    pub(crate) fn kv(&self) -> &KvSpace {
        &self.kv
    }

    /// A live sequence.
    pub(crate) fn seq(&self, id: SeqId) -> Result<&Sequence> {
        self.seqs
            .get(&id)
            .ok_or_else(|| EngineError::Internal(format!("{id} is not a live sequence")))
    }

    fn seq_mut(&mut self, id: SeqId) -> Result<&mut Sequence> {
        self.seqs
            .get_mut(&id)
            .ok_or_else(|| EngineError::Internal(format!("{id} is not a live sequence")))
    }

    /// Running sequences in admission order, then waiting ones in queue order.
    pub(crate) fn live(&self) -> impl Iterator<Item = &Sequence> + '_ {
        self.running
            .iter()
            .chain(self.waiting.iter())
            .filter_map(|id| self.seqs.get(id))
    }

    pub(crate) fn num_running(&self) -> usize {
        self.running.len()
    }

    pub(crate) fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub(crate) fn progress(&self) -> Progress {
        self.progress
    }

    /// Sequence ids handed out so far.
    pub(crate) fn seqs_created(&self) -> u64 {
        self.next_seq
    }

    fn new_seq_id(&mut self) -> SeqId {
        self.next_seq += 1;
        SeqId(self.next_seq)
    }

    /// Queues the `created` sequences of a new request (state `Waiting`), each reserving
    /// `prompt + max_tokens` slots under contiguous policies; the first carries `forks`
    /// siblings to fork when its prompt is done. Returns their ids.
    pub(crate) fn add_request(
        &mut self,
        request: RequestId,
        prompt: &[TokenId],
        params: &Arc<SamplingParams>,
        arrival: f64,
        (created, forks): (usize, usize),
    ) -> Vec<SeqId> {
        let final_len = prompt.len() + params.max_tokens; // validated: no overflow
        (0..created)
            .map(|index| {
                let id = self.new_seq_id();
                let forks = if index == 0 { forks } else { 0 };
                let seq = Sequence::new(id, request, index, prompt, params.clone(), arrival, forks);
                self.seqs.insert(id, seq);
                self.final_len.insert(id, final_len);
                self.waiting.push_back(id);
                id
            })
            .collect()
    }

    /// Makes the pending forks of running `parent` (whose prompt is done): each a running
    /// sequence sharing the parent's blocks, right after the parent and its earlier forks.
    fn fork_all(&mut self, parent: SeqId) -> Result<Vec<SeqId>> {
        let forks = self.seq_mut(parent)?.take_forks();
        let pos = self
            .running
            .iter()
            .position(|&s| s == parent)
            .ok_or_else(|| EngineError::Internal(format!("fork of {parent}, not running")))?;
        let final_len = self.final_len.get(&parent).copied().unwrap_or(0);
        let mut born = Vec::with_capacity(forks);
        for index in 1..=forks {
            let id = self.new_seq_id();
            let mut child = self.seq(parent)?.fork(id, index);
            self.kv.fork(parent, id)?;
            child.set_state(SeqState::Running)?;
            self.running
                .insert((pos + index).min(self.running.len()), id);
            self.seqs.insert(id, child);
            self.final_len.insert(id, final_len);
            born.push(id);
        }
        Ok(born)
    }

    /// Decides the next step (see the module docs); `now` is when it starts.
    pub(crate) fn schedule(&mut self, now: f64) -> Result<Scheduled> {
        let mut out = Scheduled::default();
        let mut budget = self.cfg.max_num_batched_tokens;
        let mut i = 0;
        'running: while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let seq = self.seq(id)?;
            let (start, len) = (seq.num_computed(), seq.num_uncomputed().min(budget));
            loop {
                let new = &self.seqs[&id].tokens()[start..start + len];
                if let Grow::Done(copy) = self.kv.grow(id, new)? {
                    out.copies.extend(copy);
                    break;
                }
                let victim = (i + 1..self.running.len())
                    .min_by_key(|&j| self.seqs[&self.running[j]].num_computed());
                out.preempted += 1;
                if let Some(j) = victim {
                    self.preempt(j)?;
                } else {
                    self.preempt(i)?;
                    continue 'running;
                }
            }
            out.push(id, start, len);
            budget -= len;
            i += 1;
        }
        if out.preempted == 0 {
            self.admit(&mut out, budget)?;
        }
        for c in &out.chunks {
            self.seq_mut(c.kv)?.scheduled(now);
        }
        out.decode_seqs = out
            .chunks
            .iter()
            .filter(|c| c.query_len == 1 && self.samples(c))
            .count();
        Ok(out)
    }

    /// Whether `chunk` reaches its sequence's last token (its logits pick the next one).
    fn samples(&self, chunk: &SeqSpec<SeqId>) -> bool {
        self.seqs
            .get(&chunk.kv)
            .is_some_and(|s| chunk.context_len == s.tokens().len())
    }

    /// The step description of `scheduled`: each chunk's new tokens, where its K/V are,
    /// whether its logits are needed.
    pub(crate) fn batch(&self, scheduled: &Scheduled) -> Result<Batch<'_>> {
        let mut batch = self.kv.new_batch();
        for c in &scheduled.chunks {
            let start = c.context_len - c.query_len;
            let tokens = &self.seq(c.kv)?.tokens()[start..c.context_len];
            let logits = if self.samples(c) {
                LogitsFor::Last
            } else {
                LogitsFor::None
            };
            batch
                .push(tokens, start, self.kv.location(c.kv)?, logits)
                .map_err(|e| EngineError::Internal(format!("{}: {e}", c.kv)))?;
        }
        Ok(batch)
    }

    /// Applies a computed step (vLLM's `update_from_output`): every chunk's tokens are now
    /// computed; where a chunk reaches its sequence's end, the paged forks of parallel
    /// sampling are made and each sequence samples its next token from its `logits` row
    /// (one row of `vocab` per sampling chunk, in order; `None` when the executor computes
    /// none); sequences that finish are retired. Returns what each sequence produced.
    pub(crate) fn update(
        &mut self,
        scheduled: &Scheduled,
        logits: Option<&[f32]>,
        vocab: usize,
        now: f64,
    ) -> Result<StepUpdate> {
        let mut update = StepUpdate::default();
        let mut row = 0;
        for c in &scheduled.chunks {
            let sample = self.samples(c);
            let seq = self.seq_mut(c.kv)?;
            seq.advance(c.query_len);
            let request = seq.request();
            self.progress.computed_tokens += c.query_len as u64;
            if !sample {
                continue;
            }
            let logits = logits.map(|l| &l[row * vocab..(row + 1) * vocab]);
            row += 1;
            let forks = if self.seq(c.kv)?.pending_forks() > 0 {
                self.fork_all(c.kv)?
            } else {
                Vec::new()
            };
            for &id in forks.iter().chain([&c.kv]) {
                let out = self.sample(id, logits, now)?;
                update.outputs.push((id, out));
            }
            update
                .born
                .extend(forks.into_iter().map(|id| (request, id)));
        }
        Ok(update)
    }

    /// Sequence `id` samples its next token; if that finishes it, it is retired.
    fn sample(&mut self, id: SeqId, logits: Option<&[f32]>, now: f64) -> Result<RequestOutput> {
        let rules = &self.rules;
        let seq = self
            .seqs
            .get_mut(&id)
            .ok_or_else(|| EngineError::Internal(format!("{id} is not a live sequence")))?;
        let mut out = seq.sample(logits, now, rules);
        self.progress.output_tokens += 1;
        if let Some(reason) = out.finished {
            let retired = self.retire(id, reason, now)?;
            out.metrics = retired.and_then(|r| r.output.metrics);
        }
        Ok(out)
    }

    /// Blocks the running sequences still need for the rest of their prompts, plus the
    /// decode headroom of each, for the sequences running after one more admission.
    fn reserve_blocks(&self, h: Headroom) -> usize {
        let running: usize = self
            .running
            .iter()
            .map(|id| {
                let s = &self.seqs[id];
                self.kv.blocks_for(s.num_uncomputed()) + h.blocks(&self.kv, s.output().len())
            })
            .sum();
        running + h.blocks(&self.kv, 0)
    }

    /// The decode headroom, from what the finished sequences generated (see [`Headroom`]).
    /// The mean output length is estimated as if lengths were exponentially distributed,
    /// counting the sequences still generating as censored observations: (tokens generated
    /// by finished and live sequences) / (finished sequences), the maximum-likelihood
    /// estimate under censoring. Counting only finished sequences would underestimate badly
    /// early in a burst, when only the short ones have finished.
    fn headroom(&self) -> Headroom {
        if self.finished == 0 {
            return Headroom::PriorBlocks(self.cfg.headroom_blocks);
        }
        let live: usize = self.seqs.values().map(|s| s.output().len()).sum();
        let mean = (self.finished_output + live as u64).div_ceil(self.finished) as usize;
        Headroom::Learned {
            share_of_mean: mean.saturating_mul(self.cfg.headroom_percent) / 100,
            min_output: self.min_output,
        }
    }

    fn admit(&mut self, out: &mut Scheduled, mut budget: usize) -> Result<()> {
        let headroom = self.headroom();
        while budget > 0 && self.running.len() < self.cfg.max_num_seqs {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let final_len = self.final_len[&id];
            // The first sequence is always admitted when it fits at all, so the queue moves.
            let reserve = if self.running.is_empty() {
                0
            } else {
                self.reserve_blocks(headroom)
            };
            let tokens = self.seqs[&id].tokens();
            if !self.kv.can_admit(tokens, final_len, reserve) {
                break;
            }
            let cached = self.kv.admit(id, tokens, final_len)?;
            let len = (tokens.len() - cached).min(budget);
            let Grow::Done(copy) = self.kv.grow(id, &tokens[cached..cached + len])? else {
                // can_admit said it fits; stay safe if not: undo and wait.
                self.kv.free(id)?;
                break;
            };
            if let Some(lost) = self.lost.remove(&id) {
                self.progress.recomputed_tokens += lost.saturating_sub(cached) as u64;
            }
            self.seq_mut(id)?.admit(cached)?;
            out.copies.extend(copy);
            self.waiting.pop_front();
            self.running.push(id);
            out.push(id, cached, len);
            budget -= len;
        }
        Ok(())
    }

    /// Preempts `running[j]`: frees its K/V and re-queues it at the front.
    fn preempt(&mut self, j: usize) -> Result<()> {
        let id = self.running.remove(j);
        self.kv.free(id)?;
        let lost = self.seq_mut(id)?.preempt()?;
        *self.lost.entry(id).or_default() += lost;
        self.waiting.push_front(id);
        self.progress.preemptions += 1;
        Ok(())
    }

    /// Removes a live sequence from the queues, frees its K/V and finishes it with
    /// `reason` at `now`. With [`FinishReason::Error`] its K/V were never computed: they
    /// are discarded, prefix-cache entries included. `None` if it is not live.
    pub(crate) fn retire(
        &mut self,
        id: SeqId,
        reason: FinishReason,
        now: f64,
    ) -> Result<Option<Retired>> {
        let Some(mut seq) = self.seqs.remove(&id) else {
            return Ok(None);
        };
        if reason.is_natural() {
            let output = seq.output().len();
            self.finished += 1;
            self.finished_output += output as u64;
            self.min_output = self.min_output.min(output);
        }
        if let Some(j) = self.running.iter().position(|&s| s == id) {
            self.running.remove(j);
            if reason == FinishReason::Error {
                self.kv.discard(id)?;
            } else {
                self.kv.free(id)?;
            }
        } else if let Some(j) = self.waiting.iter().position(|&s| s == id) {
            self.waiting.remove(j);
        }
        self.final_len.remove(&id);
        self.lost.remove(&id);
        let metrics = seq.finish(reason, now)?;
        Ok(Some(Retired {
            output: RequestOutput {
                request: seq.request(),
                index: seq.index(),
                new_tokens: Vec::new(),
                logprobs: Vec::new(),
                finished: Some(reason),
                metrics: Some(Box::new(metrics)),
            },
            unborn_forks: seq.take_forks(),
        }))
    }

    /// Recounts the invariants written at the top of this module.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        self.kv.check_invariants()?;
        let mut seen = std::collections::HashSet::new();
        for (queue, ids, state) in [
            (
                "running",
                self.running.iter().collect::<Vec<_>>(),
                SeqState::Running,
            ),
            ("waiting", self.waiting.iter().collect(), SeqState::Waiting),
        ] {
            for id in ids {
                let s = self
                    .seqs
                    .get(id)
                    .ok_or(format!("{id} is {queue} but not live"))?;
                if s.state() != state {
                    return Err(format!("{id} is {queue} in state {:?}", s.state()));
                }
                if !seen.insert(*id) {
                    return Err(format!("{id} is queued twice"));
                }
            }
        }
        if seen.len() != self.seqs.len() {
            return Err(format!(
                "{} sequences queued but {} live",
                seen.len(),
                self.seqs.len()
            ));
        }
        for (map, keys) in [
            ("final_len", self.final_len.keys().collect::<Vec<_>>()),
            ("lost", self.lost.keys().collect()),
        ] {
            if let Some(k) = keys.into_iter().find(|k| !self.seqs.contains_key(k)) {
                return Err(format!("{map} keeps {k}, which is not live"));
            }
        }
        if self.final_len.len() != self.seqs.len() {
            return Err("a live sequence has no final length".into());
        }
        for id in &self.running {
            let (held, computed) = (self.kv.tokens_held(*id), self.seqs[id].num_computed());
            if held.as_ref().ok() != Some(&computed) {
                return Err(format!(
                    "{id} has {computed} computed tokens, its K/V {held:?}"
                ));
            }
        }
        let holding = self.kv.num_sequences();
        if holding != self.running.len() {
            return Err(format!(
                "KV space holds {holding} sequences, {} are running",
                self.running.len()
            ));
        }
        if self.running.is_empty() && self.kv.usage().held_slots != 0 {
            return Err("KV slots held with nothing running".into());
        }
        Ok(())
    }
}
