//! Applying a computed step to the scheduler's sequences (vLLM's `update_from_output`), and
//! describing a step for the executor. A child of the scheduler: the one writer of
//! sequence progress is still the scheduler module.

use super::Scheduler;
use crate::error::{EngineError, Result};
use crate::ids::SeqId;
use crate::output::RequestOutput;
use crate::scheduled::{Scheduled, StepUpdate};
use pagedattn_kernels::{Batch, LogitsFor, SeqSpec};

impl Scheduler {
    /// Whether `chunk` reaches its sequence's last token (its logits pick the next one).
    pub(super) fn samples(&self, chunk: &SeqSpec<SeqId>) -> bool {
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
}
