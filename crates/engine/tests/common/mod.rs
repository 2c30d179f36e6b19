//! A mock executor that checks the engine's KV addressing: it stores each token id in the
//! slot the engine says its K/V go to, and its logits are a hash of the whole context
//! *read back through the addressing*. If the engine ever pointed a sequence at the wrong
//! slots — a missed copy-on-write, a bad prefix hit, a stale block table, a wrong
//! contiguous base — the outputs would differ from a run in isolation, or a read would
//! hit an unwritten slot and fail the step.

use pagedattn_engine::{
    EngineConfig, Executor, ExecutorError, KvPolicy, ModelSpec, SchedulerConfig, StepOutput,
};
use pagedattn_kernels::{Batch, KvLayout, LogitsFor};
use pagedattn_kv::BlockCopy;

pub const VOCAB: usize = 64;
pub const KV_BYTES_PER_TOKEN: u64 = 100;

pub struct Mock {
    pub max_len: usize,
    slots: Vec<Option<u32>>,
    block_size: usize,
    pub steps: usize,
    pub max_batch: usize,
    /// Fail the execute call of this step number (1-based), before writing anything.
    pub fail_at_step: Option<usize>,
    /// Fail the next execute call (the switch is shared with the test driving the engine).
    pub fail_next: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Sleep this long in every execute call (a model step takes time).
    pub step_delay: std::time::Duration,
    /// The model's end-of-turn ids (besides end-of-sequence, token 1).
    pub end_of_turn: Vec<u32>,
}

impl Mock {
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            slots: Vec::new(),
            block_size: 0,
            steps: 0,
            max_batch: 0,
            fail_at_step: None,
            fail_next: std::sync::Arc::default(),
            step_delay: std::time::Duration::ZERO,
            end_of_turn: Vec::new(),
        }
    }
}

fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

impl Executor for Mock {
    fn spec(&self) -> ModelSpec {
        ModelSpec {
            kv_bytes_per_token: KV_BYTES_PER_TOKEN,
            vocab_size: VOCAB,
            max_model_len: self.max_len,
            eos_token_id: Some(1),
            end_of_turn_ids: self.end_of_turn.clone(),
            simulated: false,
        }
    }

    fn init_kv(&mut self, layout: KvLayout) -> Result<(), ExecutorError> {
        let n = match layout {
            KvLayout::Paged {
                num_blocks,
                block_size,
            } => {
                self.block_size = block_size;
                num_blocks * block_size
            }
            KvLayout::Contiguous { slots } => slots,
        };
        self.slots = vec![None; n];
        Ok(())
    }

    fn copy_blocks(&mut self, copies: &[BlockCopy]) -> Result<(), ExecutorError> {
        let bs = self.block_size;
        for c in copies {
            let (s, d) = (c.src.index() * bs, c.dst.index() * bs);
            self.slots.copy_within(s..s + bs, d);
        }
        Ok(())
    }

    fn execute(&mut self, batch: &Batch<'_>) -> Result<StepOutput, ExecutorError> {
        self.steps += 1;
        std::thread::sleep(self.step_delay);
        let next = self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        if next || self.fail_at_step == Some(self.steps) {
            return Err(ExecutorError::failed("injected failure"));
        }
        self.max_batch = self.max_batch.max(batch.seqs().len());
        let bs = self.block_size.max(1);
        let fail = |m: String| Err(ExecutorError::failed(m));
        // Like a real forward pass: every sequence's K/V is written before anyone attends.
        for s in batch.seqs() {
            let start = s.context_len - s.query_len;
            for i in 0..s.query_len {
                let row = s.query_start + i;
                // The batch's slots must be where the location puts each position.
                let slot = s.kv.slot(start + i, bs);
                if Some(batch.slots()[row]) != slot {
                    return fail(format!(
                        "slot {} for position {}, expected {slot:?}",
                        batch.slots()[row],
                        start + i
                    ));
                }
                match self.slots.get_mut(batch.slots()[row]) {
                    Some(x) => *x = Some(batch.tokens()[row]),
                    None => return fail("slot out of range".into()),
                }
            }
        }
        let mut logits = Vec::new();
        for (i, (s, &want)) in batch.seqs().iter().zip(batch.logits()).enumerate() {
            if want != LogitsFor::Last {
                continue;
            }
            let mut h = 0x1234_5678u64;
            for p in 0..s.context_len {
                let Some(t) = s.kv.slot(p, bs).and_then(|slot| self.slots[slot]) else {
                    return fail(format!("sequence {i}: position {p} was never written"));
                };
                h = mix(h ^ u64::from(t)).wrapping_add(p as u64);
            }
            logits.extend((0..VOCAB as u64).map(|j| (mix(h ^ (j * 0x9e37)) % 1000) as f32 / 100.0));
        }
        Ok(StepOutput {
            logits: Some(logits),
            modeled_seconds: None,
        })
    }
}

/// An engine config with a KV budget of `tokens` token slots.
pub fn config(policy: KvPolicy, tokens: u64, block_size: usize) -> EngineConfig {
    EngineConfig {
        policy,
        kv_budget_bytes: tokens * KV_BYTES_PER_TOKEN,
        block_size,
        max_model_len: None,
        scheduler: SchedulerConfig {
            max_num_seqs: 64,
            max_num_batched_tokens: 96,
            headroom_blocks: 2,
            headroom_percent: 20,
        },
        keep_history: true,
    }
}
