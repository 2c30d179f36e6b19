//! Read-only views of an engine: its sequences, metrics, KV use, and an invariant check.

use crate::engine::Engine;
use crate::executor::Executor;
use crate::kv_space::KvUsage;
use crate::metrics::{SeqMetrics, StepMetrics};
use crate::sequence::{SeqState, Sequence};
use pagedattn_kv::PoolView;
use serde::{Deserialize, Serialize};

/// Sequences listed in a [`PoolPicture`], at most (running ones first).
pub const PICTURE_SEQUENCES: usize = 256;

/// Where a live sequence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PictureState {
    /// Admitted, holding blocks.
    Running,
    /// Queued.
    Waiting,
    /// Evicted to free memory, queued again.
    Preempted,
}

/// One live sequence in a [`PoolPicture`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqPicture {
    /// The sequence (the pool view's cell owners name these).
    pub seq: u64,
    /// Its request.
    pub request: u64,
    /// Where it is.
    pub state: PictureState,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens generated so far.
    pub output_tokens: usize,
    /// Blocks in its table (0 while waiting).
    pub blocks: usize,
}

/// The paged pool and the live sequences at one moment, for a dashboard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolPicture {
    /// Every block's state, aggregated into cells.
    pub pool: PoolView,
    /// Live sequences, running first, at most [`PICTURE_SEQUENCES`].
    pub sequences: Vec<SeqPicture>,
    /// Live sequences left out of `sequences`.
    pub sequences_left_out: usize,
    /// The longest sequence admitted (what a contiguous cache reserves per sequence).
    pub max_model_len: usize,
}

impl<E: Executor> Engine<E> {
    /// The unfinished sequences, running ones first (in admission order), then waiting.
    pub fn sequences(&self) -> impl Iterator<Item = &Sequence> + '_ {
        self.sched.live()
    }

    /// Sequences running (admitted, holding KV memory).
    pub fn num_running(&self) -> usize {
        self.sched.num_running()
    }

    /// Sequences waiting for admission.
    pub fn num_waiting(&self) -> usize {
        self.sched.num_waiting()
    }

    /// Metrics of finished sequences, in finishing order (kept with `keep_history` only).
    pub fn finished_metrics(&self) -> &[SeqMetrics] {
        self.requests.history()
    }

    /// Metrics of every step (kept with `keep_history` only).
    pub fn step_metrics(&self) -> &[StepMetrics] {
        &self.steps
    }

    /// The record of the latest step that ran, if any.
    pub fn last_step(&self) -> Option<&StepMetrics> {
        self.last_step.as_ref()
    }

    /// KV memory use now.
    pub fn kv_usage(&self) -> KvUsage {
        self.sched.kv().usage()
    }

    /// The paged block manager's stats (paged policies).
    pub fn block_manager_stats(&self) -> Option<pagedattn_kv::BlockManagerStats> {
        self.sched
            .kv()
            .block_manager()
            .map(pagedattn_kv::BlockManager::stats)
    }

    /// The paged pool in at most `max_cells` cells and the live sequences (paged policies;
    /// `None` for contiguous ones). O(blocks + live sequences).
    pub fn pool_picture(&self, max_cells: usize) -> Option<PoolPicture> {
        let bm = self.sched.kv().block_manager()?;
        let mut sequences = Vec::new();
        let mut left_out = 0;
        for s in self.sched.live() {
            if sequences.len() == PICTURE_SEQUENCES {
                left_out += 1;
                continue;
            }
            let state = match s.state() {
                SeqState::Running => PictureState::Running,
                SeqState::Preempted => PictureState::Preempted,
                _ => PictureState::Waiting,
            };
            sequences.push(SeqPicture {
                seq: s.id().0,
                request: s.request().0,
                state,
                prompt_tokens: s.prompt_len(),
                output_tokens: s.output().len(),
                blocks: bm.tables().blocks(s.id()).map_or(0, <[_]>::len),
            });
        }
        Some(PoolPicture {
            pool: bm.pool_view(max_cells),
            sequences,
            sequences_left_out: left_out,
            max_model_len: self.max_model_len(),
        })
    }

    /// Checks the scheduler's, the KV manager's and the request bookkeeping's invariants
    /// (see the module docs of `scheduler.rs` and `requests.rs`).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.sched.check_invariants()?;
        self.requests.check(&self.sched)
    }
}
