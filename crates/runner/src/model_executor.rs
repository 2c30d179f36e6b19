//! The real executor: a [`Model`] on this CPU, with its K/V in the [`KvStorage`] the engine's
//! layout asks for.

use pagedattn_engine::{Executor, ExecutorError, ModelSpec, StepOutput};
use pagedattn_kernels::{Batch, DType, KvLayout, KvStorage};
use pagedattn_kv::BlockCopy;
use pagedattn_model::Model;
use std::sync::Arc;

/// Runs a model over the engine's batches.
pub struct ModelExecutor {
    model: Arc<Model>,
    dtype: DType,
    store: Option<KvStorage>,
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
        let tokenizer = self.model.tokenizer();
        ModelSpec {
            kv_bytes_per_token: c.kv_shape(self.dtype).bytes_per_token(),
            vocab_size: c.vocab_size,
            max_model_len: c.max_context,
            eos_token_id: tokenizer.and_then(pagedattn_model::Tokenizer::eos_id),
            end_of_turn_ids: tokenizer.map_or_else(Vec::new, |t| t.end_of_turn_ids().to_vec()),
            simulated: false,
        }
    }

    fn init_kv(&mut self, layout: KvLayout) -> Result<(), ExecutorError> {
        let shape = self.model.config().kv_shape(self.dtype);
        self.store = Some(KvStorage::new(shape, layout)?);
        Ok(())
    }

    fn copy_blocks(&mut self, copies: &[BlockCopy]) -> Result<(), ExecutorError> {
        let store = self.store.as_mut().ok_or(ExecutorError::NotInitialized)?;
        Ok(store.copy_blocks(copies)?)
    }

    fn execute(&mut self, batch: &Batch<'_>) -> Result<StepOutput, ExecutorError> {
        let store = self.store.as_mut().ok_or(ExecutorError::NotInitialized)?;
        let logits = self
            .model
            .forward(batch, store)
            .map_err(ExecutorError::failed)?;
        Ok(StepOutput {
            logits: Some(logits.data),
            modeled_seconds: None,
        })
    }
}
