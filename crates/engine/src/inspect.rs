//! Read-only views of an engine: its sequences, metrics, KV use, and an invariant check.

use crate::engine::Engine;
use crate::executor::Executor;
use crate::kv_space::KvUsage;
use crate::metrics::{EngineTotals, SeqMetrics, StepMetrics};
use crate::sequence::Sequence;

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
        &self.finished
    }

    /// Metrics of every step (kept with `keep_history` only).
    pub fn step_metrics(&self) -> &[StepMetrics] {
        &self.steps
    }

    /// The record of the latest step that ran, if any.
    pub fn last_step(&self) -> Option<&StepMetrics> {
        self.last_step.as_ref()
    }

    /// Totals.
    pub fn totals(&self) -> &EngineTotals {
        &self.totals
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

    /// Checks the scheduler's and the KV manager's invariants, and that the engine's
    /// requests and the scheduler's sequences agree (see the module docs of `engine.rs`
    /// and `scheduler.rs`).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.sched.check_invariants()?;
        let mut live = 0;
        for (id, req) in &self.requests {
            if req.live.is_empty() && req.pending_forks == 0 {
                return Err(format!("request {id} has nothing left but is kept"));
            }
            for &sid in &req.live {
                let s = self
                    .sched
                    .seq(sid)
                    .map_err(|_| format!("request {id} lists {sid}, which is not live"))?;
                if s.request() != *id {
                    return Err(format!("{sid} belongs to {}, listed by {id}", s.request()));
                }
                live += 1;
            }
        }
        let seqs = self.sched.live().count();
        if live != seqs {
            return Err(format!("{live} sequences in requests, {seqs} live"));
        }
        Ok(())
    }
}
