//! A continuous-batching inference engine over paged or contiguous KV caches.
//!
//! Requests come in with [`Engine::add_request`]; each [`Engine::step`] schedules running
//! sequences (one decode token each, or the next prefill chunk) and admits waiting ones
//! under a token budget, asks the [`Executor`] to compute the step, samples, and returns
//! the new tokens. The KV policy ([`KvPolicy`]) is a value: paged blocks (optionally with
//! prefix caching) or one contiguous run per sequence sized max / pow2 / oracle — the same
//! engine serves both sides of every comparison, at the same KV budget in bytes.
//!
//! The step the executor receives is the kernels crate's plain-data
//! [`Batch`](pagedattn_kernels::Batch); the engine knows nothing of models, tokenizers or
//! weight files (the `pagedattn-runner` crate runs a model under it).
//!
//! ```
//! use pagedattn_engine::{
//!     Engine, EngineConfig, Executor, ExecutorError, KvPolicy, ModelSpec, SamplingParams,
//!     StepOutput,
//! };
//! use pagedattn_kernels::{Batch, KvLayout, LogitsFor};
//!
//! /// A toy model: the next token is the previous one plus one.
//! struct Counter;
//! impl Executor for Counter {
//!     fn spec(&self) -> ModelSpec {
//!         ModelSpec { kv_bytes_per_token: 64, vocab_size: 100, max_model_len: 64, eos_token_id: None, end_of_turn_ids: vec![], simulated: false }
//!     }
//!     fn init_kv(&mut self, _: KvLayout) -> Result<(), ExecutorError> { Ok(()) }
//!     fn copy_blocks(&mut self, _: &[pagedattn_kv::BlockCopy]) -> Result<(), ExecutorError> { Ok(()) }
//!     fn execute(&mut self, batch: &Batch<'_>) -> Result<StepOutput, ExecutorError> {
//!         let mut logits = Vec::new();
//!         for (s, &want) in batch.seqs().iter().zip(batch.logits()) {
//!             if want == LogitsFor::Last {
//!                 let last = batch.tokens()[s.query_start + s.query_len - 1];
//!                 let mut row = vec![0.0; 100];
//!                 row[(last as usize + 1) % 100] = 1.0;
//!                 logits.extend(row);
//!             }
//!         }
//!         Ok(StepOutput { logits: Some(logits), modeled_seconds: None })
//!     }
//! }
//!
//! let mut engine = Engine::new(Counter, EngineConfig::new(KvPolicy::Paged, 64 * 256))?;
//! let out = engine.generate(&[vec![1, 2, 3], vec![40]], &SamplingParams::greedy(3))?;
//! assert_eq!(out, vec![vec![vec![4, 5, 6]], vec![vec![41, 42, 43]]]);
//! # Ok::<(), pagedattn_engine::EngineError>(())
//! ```

// Unsafe code lives in the kernels crate only (its SIMD and allocation paths).
#![forbid(unsafe_code)]

pub mod core;
mod engine;
mod error;
mod executor;
mod finish;
mod headroom;
mod ids;
mod inspect;
mod kv_space;
mod metrics;
mod output;
mod request;
mod requests;
mod sampler;
mod scheduled;
mod scheduler;
mod sequence;

pub use engine::{Engine, EngineConfig};
pub use error::{EngineError, Result};
pub use executor::{Executor, ExecutorError, ModelSpec, StepOutput};
pub use finish::FinishReason;
pub use ids::{RequestId, SeqId, TokenId};
pub use inspect::{PictureState, PoolPicture, SeqPicture, PICTURE_SEQUENCES};
pub use kv_space::{KvPolicy, KvUsage};
pub use metrics::{EngineTotals, SeqMetrics, StepMetrics};
pub use output::RequestOutput;
pub use pagedattn_kv::ContiguousSizing;
pub use request::{validate, Request, SamplingParams, MAX_LOGPROBS, MAX_N};
pub use sampler::{argmax, TokenLogprob};
pub use scheduler::SchedulerConfig;
pub use sequence::{SeqState, Sequence};
