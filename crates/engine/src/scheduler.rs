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
//!    still cover the rest of every running prompt plus `headroom_blocks` per running
//!    sequence for decode growth. Admitting whenever the prompt fits (vLLM's rule) fills
//!    the pool to the brim, and the next decode steps preempt what was just admitted — a
//!    preemption storm, costly on a CPU where recomputing a prompt is expensive.
//!    Contiguous policies admit when their whole reservation fits, and never preempt.
//!    No admissions in a step that preempted: memory is short.

use crate::error::Result;
use crate::kv_space::{Grow, KvSpace};
use crate::sequence::{SeqState, Sequence};
use pagedattn_kv::{BlockCopy, SeqId};
use std::collections::{HashMap, VecDeque};

/// Scheduling limits.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchedulerConfig {
    /// Sequences running at once, at most.
    pub max_num_seqs: usize,
    /// Tokens computed per step, at most (decode tokens + prefill chunk tokens).
    pub max_num_batched_tokens: usize,
    /// Free blocks kept per running sequence when admitting (paged policies).
    pub headroom_blocks: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 512,
            headroom_blocks: 4,
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
    pub(crate) cfg: SchedulerConfig,
    pub(crate) kv: KvSpace,
    pub(crate) seqs: HashMap<SeqId, Sequence>,
    pub(crate) waiting: VecDeque<SeqId>,
    /// In admission order.
    pub(crate) running: Vec<SeqId>,
    /// Final length each sequence reserves under contiguous policies.
    pub(crate) final_len: HashMap<SeqId, usize>,
    pub(crate) preemptions: u64,
    pub(crate) recomputed_tokens: u64,
    /// K/V discarded by preemption, per sequence, not yet recomputed.
    lost: HashMap<SeqId, usize>,
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
        }
    }

    pub(crate) fn schedule(&mut self) -> Result<Scheduled> {
        let mut out = Scheduled::default();
        let mut budget = self.cfg.max_num_batched_tokens;
        let mut i = 0;
        'running: while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let seq = &self.seqs[&id];
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
    /// decode headroom, for the sequences running after one more admission.
    fn reserve_blocks(&self) -> usize {
        let prompts: usize = self
            .running
            .iter()
            .map(|id| self.kv.blocks_for(self.seqs[id].num_uncomputed()))
            .sum();
        prompts + (self.running.len() + 1) * self.cfg.headroom_blocks
    }

    fn admit(&mut self, out: &mut Scheduled, mut budget: usize) -> Result<()> {
        while budget > 0 && self.running.len() < self.cfg.max_num_seqs {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let final_len = self.final_len[&id];
            // The first sequence is always admitted when it fits at all, so the queue moves.
            let reserve = if self.running.is_empty() {
                0
            } else {
                self.reserve_blocks()
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
            let len = seq.num_uncomputed().min(budget);
            let sample = cached + len == seq.tokens.len();
            let new = &seq.tokens[cached..cached + len];
            let Grow::Done(copy) = self.kv.grow(id, new)? else {
                // can_admit said it fits; stay safe if not: undo and wait.
                self.kv.free(id)?;
                break;
            };
            out.copies.extend(copy);
            seq.set_state(SeqState::Running);
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
        seq.set_state(SeqState::Preempted);
        seq.set_state(SeqState::Waiting);
        self.waiting.push_front(id);
        self.preemptions += 1;
        Ok(())
    }

    /// Removes a finished or aborted sequence from the queues and frees its K/V.
    pub(crate) fn retire(&mut self, id: SeqId) -> Result<()> {
        if let Some(j) = self.running.iter().position(|&s| s == id) {
            self.running.remove(j);
            self.kv.free(id)?;
        } else if let Some(j) = self.waiting.iter().position(|&s| s == id) {
            self.waiting.remove(j);
        }
        self.final_len.remove(&id);
        self.lost.remove(&id);
        Ok(())
    }
}
