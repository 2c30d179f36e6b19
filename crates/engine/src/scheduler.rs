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
//!   with the sequence ([`Scheduler::add_request`], `fork_all`) and removed with it
//!   ([`Scheduler::retire`]).
//! - The KV space holds memory for exactly the running sequences.
//! - A running sequence's K/V hold exactly its first `num_computed` tokens.
//! - Only this module changes the queues, the KV space, or a live sequence — its state, its
//!   computed and generated tokens, its metrics: it owns the sequences and lends them out
//!   read-only. [`Scheduler::schedule`] decides a step; [`Scheduler::update`] (vLLM's
//!   `update_from_output`) applies its result: advances computed tokens, samples and
//!   appends the next ones, makes the forks of parallel sampling, and retires what
//!   finished.

mod invariants;
mod update;

use crate::error::{EngineError, Result};
use crate::finish::FinishReason;
use crate::headroom::{Headroom, OutputLengths};
use crate::ids::{RequestId, SeqId, TokenId};
use crate::kv_space::{Grow, KvSpace};
use crate::output::RequestOutput;
use crate::request::SamplingParams;
use crate::scheduled::{Progress, Retired, Scheduled};
use crate::sequence::{SeqState, Sequence, StopRules};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

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
    /// What the sequences that finished on their own generated: the admission headroom.
    outputs: OutputLengths,
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
            outputs: OutputLengths::default(),
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

    /// The decode headroom, from what the finished and the live sequences generated.
    fn headroom(&self) -> Headroom {
        let live: usize = self.seqs.values().map(|s| s.output().len()).sum();
        self.outputs
            .headroom(self.cfg.headroom_blocks, self.cfg.headroom_percent, live)
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
            self.outputs.record(seq.output().len());
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
}
