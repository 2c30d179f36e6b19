//! Where the model and the engine meet: [`ModelExecutor`] runs a
//! [`Model`](pagedattn_model::Model) as the engine's [`Executor`](pagedattn_engine::Executor),
//! its K/V in the paged cache or the contiguous arena, whichever layout the engine's KV
//! policy asks for. The engine itself knows nothing of models; the CLI and the server use
//! this crate to run one.
//!
//! ```
//! use pagedattn_engine::{Engine, EngineConfig, KvPolicy, SamplingParams};
//! use pagedattn_kernels::DType;
//! use pagedattn_model::{Model, WeightDType};
//! use pagedattn_runner::ModelExecutor;
//! use std::sync::Arc;
//!
//! let model = Arc::new(Model::random_named("tiny", 0, WeightDType::F32)?);
//! let bytes = model.config().kv_shape(DType::F32).bytes_per_token();
//! let exec = ModelExecutor::new(model, DType::F32);
//! let mut engine = Engine::new(exec, EngineConfig::new(KvPolicy::Paged, 1024 * bytes))?;
//! let out = engine.generate(&[vec![1, 2, 3]], &SamplingParams::greedy(4))?;
//! assert_eq!(out[0][0].len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Unsafe code lives in the kernels crate only (its SIMD and allocation paths).
#![forbid(unsafe_code)]

mod model_executor;

pub use model_executor::ModelExecutor;
