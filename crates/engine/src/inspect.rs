//! Read-only views of an engine: its sequences, metrics, KV use, and an invariant check.

use crate::engine::Engine;
use crate::executor::Executor;
use crate::kv_space::KvUsage;
use crate::metrics::{EngineTotals, SeqMetrics, StepMetrics};
use crate::sequence::{SeqState, Sequence};

impl<E: Executor> Engine<E> {
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
