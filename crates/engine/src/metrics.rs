//! Per-sequence and per-step measurements, as plain serializable structs.
//!
//! Times are seconds on the engine's clock (wall clock for real execution, modeled time
//! for simulated execution).

use crate::finish::FinishReason;
use crate::ids::RequestId;
use serde::{Deserialize, Serialize};

/// The life of one sequence.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeqMetrics {
    /// Its request.
    pub request: RequestId,
    /// Index among the request's sequences.
    pub index: usize,
    /// Prompt tokens.
    pub prompt_len: usize,
    /// Prompt tokens found in the prefix cache when it was (last) admitted.
    #[serde(default)]
    pub cached_tokens: usize,
    /// When the request arrived.
    pub arrival: f64,
    /// When it was first scheduled.
    pub first_scheduled: Option<f64>,
    /// When each output token was produced (the first is the first token).
    pub token_times: Vec<f64>,
    /// When it finished.
    pub finished: Option<f64>,
    /// Why it finished.
    pub finish_reason: Option<FinishReason>,
    /// Times it was preempted.
    pub preemptions: u32,
}

impl SeqMetrics {
    /// Time to first token.
    pub fn ttft(&self) -> Option<f64> {
        self.token_times.first().map(|t| t - self.arrival)
    }

    /// Time per output token after the first: (last - first) / (n - 1).
    pub fn tpot(&self) -> Option<f64> {
        let n = self.token_times.len();
        (n > 1).then(|| (self.token_times[n - 1] - self.token_times[0]) / (n - 1) as f64)
    }

    /// Gaps between consecutive output tokens.
    pub fn itl(&self) -> impl Iterator<Item = f64> + '_ {
        self.token_times.windows(2).map(|w| w[1] - w[0])
    }

    /// Arrival to finish.
    pub fn e2e(&self) -> Option<f64> {
        self.finished.map(|f| f - self.arrival)
    }
}

/// What one step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// When the step ended.
    pub time: f64,
    /// How long it took.
    pub duration: f64,
    /// Sequences in the batch.
    pub batch_size: usize,
    /// Of which decoding (one token).
    pub decode_seqs: usize,
    /// Tokens computed.
    pub tokens_scheduled: usize,
    /// Sequences running after the step.
    pub running: usize,
    /// Sequences waiting after the step.
    pub waiting: usize,
    /// KV slots held by sequences.
    pub kv_held_slots: usize,
    /// KV slots holding tokens.
    pub kv_tokens: usize,
    /// `kv_tokens / kv_held_slots`.
    pub utilization: f64,
    /// Held-but-empty slots.
    pub internal_fragmentation_slots: usize,
    /// Free slots outside the largest free run (contiguous).
    pub external_fragmentation_slots: usize,
    /// Preemptions in this step.
    pub preemptions: usize,
}

/// Totals over the engine's life.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineTotals {
    /// Steps run.
    pub steps: u64,
    /// Tokens whose K/V were computed (prefill + decode, recomputation included).
    pub computed_tokens: u64,
    /// Tokens computed again after preemption.
    pub recomputed_tokens: u64,
    /// Preemptions.
    pub preemptions: u64,
    /// Output tokens produced.
    pub output_tokens: u64,
    /// Prompt tokens of the requests accepted.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Requests that ended (finished, aborted or failed).
    #[serde(default)]
    pub finished_requests: u64,
}

impl EngineTotals {
    /// Recomputed / all computed tokens.
    pub fn recompute_tax(&self) -> f64 {
        if self.computed_tokens == 0 {
            0.0
        } else {
            self.recomputed_tokens as f64 / self.computed_tokens as f64
        }
    }
}
