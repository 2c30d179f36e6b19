//! The scheduler's invariants (written at the top of `scheduler.rs`), recounted from
//! scratch. Used by tests after every operation; never on a hot path.

use super::Scheduler;
use crate::sequence::SeqState;

impl Scheduler {
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
