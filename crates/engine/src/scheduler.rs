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
//! - Only this module changes the queues, a sequence's state, or the KV space; the engine
//!   reads them and changes sequences' tokens and samplers through [`Scheduler::seq_mut`].

use crate::error::{EngineError, Result};
use crate::kv_space::{Grow, KvSpace};
use crate::sequence::{FinishReason, SeqState, Sequence};
use pagedattn_kv::{BlockCopy, SeqId};
use std::collections::{HashMap, VecDeque};

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

/// One sequence's work in a step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunk {
    pub(crate) seq: SeqId,
    pub(crate) start: usize,
    pub(crate) len: usize,
    /// The chunk reaches the end of the sequence's tokens: sample the next one.
    pub(crate) sample: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Scheduled {
    pub(crate) chunks: Vec<Chunk>,
    pub(crate) copies: Vec<BlockCopy>,
    pub(crate) preempted: usize,
}

pub(crate) struct Scheduler {
    cfg: SchedulerConfig,
    kv: KvSpace,
    seqs: HashMap<SeqId, Sequence>,
    waiting: VecDeque<SeqId>,
    /// In admission order.
    running: Vec<SeqId>,
    /// Final length each sequence reserves under contiguous policies.
    final_len: HashMap<SeqId, usize>,
    preemptions: u64,
    recomputed_tokens: u64,
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
    pub(crate) fn new(cfg: SchedulerConfig, kv: KvSpace) -> Self {
        Self {
            cfg,
            kv,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            final_len: HashMap::new(),
            preemptions: 0,
            recomputed_tokens: 0,
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

    /// A live sequence, to append tokens or sample (its state stays the scheduler's).
    pub(crate) fn seq_mut(&mut self, id: SeqId) -> Result<&mut Sequence> {
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

    pub(crate) fn preemptions(&self) -> u64 {
        self.preemptions
    }

    pub(crate) fn recomputed_tokens(&self) -> u64 {
        self.recomputed_tokens
    }

    /// Queues a new sequence (state `Waiting`) that will reserve `final_len` slots under
    /// contiguous policies.
    pub(crate) fn add(&mut self, seq: Sequence, final_len: usize) -> Result<()> {
        let id = seq.id;
        if seq.state != SeqState::Waiting || self.seqs.contains_key(&id) {
            return Err(EngineError::Internal(format!("{id} cannot be queued")));
        }
        self.seqs.insert(id, seq);
        self.final_len.insert(id, final_len);
        self.waiting.push_back(id);
        Ok(())
    }

    /// Adds `child` (a copy of running `parent`'s tokens) as a running fork sharing the
    /// parent's blocks, right after the parent and its earlier forks.
    pub(crate) fn fork(&mut self, parent: SeqId, mut child: Sequence, after: usize) -> Result<()> {
        let id = child.id;
        let pos = self
            .running
            .iter()
            .position(|&s| s == parent)
            .ok_or_else(|| EngineError::Internal(format!("fork of {parent}, not running")))?;
        if self.seqs.contains_key(&id) {
            return Err(EngineError::Internal(format!("{id} exists")));
        }
        let final_len = self.final_len.get(&parent).copied().unwrap_or(0);
        self.kv.fork(parent, id)?;
        child.set_state(SeqState::Running)?;
        self.running
            .insert((pos + after).min(self.running.len()), id);
        self.seqs.insert(id, child);
        self.final_len.insert(id, final_len);
        Ok(())
    }

    pub(crate) fn schedule(&mut self) -> Result<Scheduled> {
        let mut out = Scheduled::default();
        let mut budget = self.cfg.max_num_batched_tokens;
        let mut i = 0;
        'running: while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let seq = self.seq(id)?;
            let (start, len) = (seq.num_computed, seq.num_uncomputed().min(budget));
            let sample = start + len == seq.tokens.len();
            loop {
                let new = &self.seqs[&id].tokens[start..start + len];
                if let Grow::Done(copy) = self.kv.grow(id, new)? {
                    out.copies.extend(copy);
                    break;
                }
                let victim = (i + 1..self.running.len())
                    .min_by_key(|&j| self.seqs[&self.running[j]].num_computed);
                out.preempted += 1;
                if let Some(j) = victim {
                    self.preempt(j)?;
                } else {
                    self.preempt(i)?;
                    continue 'running;
                }
            }
            out.chunks.push(Chunk {
                seq: id,
                start,
                len,
                sample,
            });
            budget -= len;
            i += 1;
        }
        if out.preempted == 0 {
            self.admit(&mut out, budget)?;
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
                self.kv.blocks_for(s.num_uncomputed())
                    + h.blocks(&self.kv, s.tokens.len() - s.prompt_len)
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
        let live: usize = self
            .seqs
            .values()
            .map(|s| s.tokens.len() - s.prompt_len)
            .sum();
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
            if !self
                .kv
                .can_admit(&self.seqs[&id].tokens, final_len, reserve)
            {
                break;
            }
            let cached = self.kv.admit(id, &self.seqs[&id].tokens, final_len)?;
            if let Some(lost) = self.lost.remove(&id) {
                self.recomputed_tokens += lost.saturating_sub(cached) as u64;
            }
            let seq = self.seqs.get_mut(&id).expect("waiting sequence exists");
            seq.num_computed = cached;
            seq.metrics.cached_tokens = cached;
            let len = seq.num_uncomputed().min(budget);
            let sample = cached + len == seq.tokens.len();
            let new = &seq.tokens[cached..cached + len];
            let Grow::Done(copy) = self.kv.grow(id, new)? else {
                // can_admit said it fits; stay safe if not: undo and wait.
                self.kv.free(id)?;
                break;
            };
            out.copies.extend(copy);
            seq.set_state(SeqState::Running)?;
            self.waiting.pop_front();
            self.running.push(id);
            out.chunks.push(Chunk {
                seq: id,
                start: cached,
                len,
                sample,
            });
            budget -= len;
        }
        Ok(())
    }

    /// Preempts `running[j]`: frees its K/V and re-queues it at the front.
    fn preempt(&mut self, j: usize) -> Result<()> {
        let id = self.running.remove(j);
        self.kv.free(id)?;
        let seq = self.seqs.get_mut(&id).expect("running sequence exists");
        *self.lost.entry(id).or_default() += seq.num_computed;
        seq.num_computed = 0;
        seq.metrics.preemptions += 1;
        seq.set_state(SeqState::Preempted)?;
        seq.set_state(SeqState::Waiting)?;
        self.waiting.push_front(id);
        self.preemptions += 1;
        Ok(())
    }

    /// Removes a live sequence from the queues, frees its K/V and returns it, finished
    /// with `reason`. With [`FinishReason::Error`] its K/V were never computed: they are
    /// discarded, prefix-cache entries included. `None` if it is not live.
    pub(crate) fn retire(&mut self, id: SeqId, reason: FinishReason) -> Result<Option<Sequence>> {
        let Some(mut seq) = self.seqs.remove(&id) else {
            return Ok(None);
        };
        if reason == FinishReason::Length || reason == FinishReason::Stop {
            let output = seq.tokens.len() - seq.prompt_len;
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
        seq.set_state(SeqState::Finished(reason))?;
        Ok(Some(seq))
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
                if s.state != state {
                    return Err(format!("{id} is {queue} in state {:?}", s.state));
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
