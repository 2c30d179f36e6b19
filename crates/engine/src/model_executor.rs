//! The real executor: a [`Model`] on this CPU, with its K/V in the paged [`KvCache`] or
//! the contiguous [`ContiguousKv`] arena, whichever layout the engine's policy asks for.

use crate::executor::{Executor, KvLayout, ModelSpec, StepOutput};
use pagedattn_kernels::{ContiguousKv, ContiguousKvConfig, DType, KvCache, KvCacheConfig};
use pagedattn_kv::BlockCopy;
use pagedattn_model::{Batch, Model};
use std::sync::Arc;

enum Store {
    Paged(KvCache),
    Contiguous(ContiguousKv),
}

/// Runs a model over the engine's batches.
pub struct ModelExecutor {
    model: Arc<Model>,
    dtype: DType,
    store: Option<Store>,
}

impl std::fmt::Debug for ModelExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelExecutor")
            .field("config", self.model.config())
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

impl ModelExecutor {
    /// An executor for `model` storing K/V as `dtype`. The model is shared, so several
    /// engines (one per policy) can run it in turn without reloading.
    pub fn new(model: Arc<Model>, dtype: DType) -> Self {
        Self {
            model,
            dtype,
            store: None,
        }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }
}

impl Executor for ModelExecutor {
    fn spec(&self) -> ModelSpec {
        let c = self.model.config();
        ModelSpec {
            kv_bytes_per_token: c.kv_bytes_per_token(self.dtype) as u64,
            vocab_size: c.vocab_size,
            max_model_len: c.max_context,
            eos_token_id: self
                .model
                .tokenizer()
                .and_then(pagedattn_model::Tokenizer::eos_id),
            end_of_turn_ids: self
                .model
                .tokenizer()
                .map_or_else(Vec::new, |t| t.end_of_turn_ids().to_vec()),
            simulated: false,
        }
    }

    fn init_kv(&mut self, layout: KvLayout) -> Result<(), String> {
        let c = self.model.config();
        self.store = Some(match layout {
            KvLayout::Paged {
                num_blocks,
                block_size,
            } => Store::Paged(
                KvCache::new(KvCacheConfig {
                    num_layers: c.num_layers,
                    num_blocks,
                    num_kv_heads: c.num_kv_heads,
                    block_size,
                    head_dim: c.head_dim,
                    dtype: self.dtype,
                })
                .map_err(|e| e.to_string())?,
            ),
            KvLayout::Contiguous { slots } => Store::Contiguous(
                ContiguousKv::new(ContiguousKvConfig {
                    num_layers: c.num_layers,
                    num_kv_heads: c.num_kv_heads,
                    capacity_slots: slots,
                    head_dim: c.head_dim,
                    dtype: self.dtype,
                })
                .map_err(|e| e.to_string())?,
            ),
        });
        Ok(())
    }

    fn copy_blocks(&mut self, copies: &[BlockCopy]) -> Result<(), String> {
        if copies.is_empty() {
            return Ok(());
        }
        match &mut self.store {
            Some(Store::Paged(c)) => {
                let pairs: Vec<_> = copies.iter().map(|c| (c.src, c.dst)).collect();
                c.copy_blocks(&pairs).map_err(|e| e.to_string())
            }
            _ => Err("block copies need a paged KV cache".into()),
        }
    }

    fn execute(&mut self, batch: &Batch<'_>) -> Result<StepOutput, String> {
        let logits = match &mut self.store {
            Some(Store::Paged(kv)) => self.model.forward(batch, kv),
            Some(Store::Contiguous(kv)) => self.model.forward(batch, kv),
            None => return Err("KV storage was not initialized".into()),
        }
        .map_err(|e| e.to_string())?;
        Ok(StepOutput {
            logits: Some(logits.data),
            modeled_seconds: None,
        })
    }
}
