//! A continuous-batching inference engine over paged or contiguous KV caches.
//!
//! Requests come in with [`Engine::add_request`]; each [`Engine::step`] schedules running
//! sequences (one decode token each, or the next prefill chunk) and admits waiting ones
//! under a token budget, asks the [`Executor`] to compute the step, samples, and returns
//! the new tokens. The KV policy ([`KvPolicy`]) is a value: paged blocks (optionally with
//! prefix caching) or one contiguous run per sequence sized max / pow2 / oracle — the same
//! engine serves both sides of every comparison, at the same KV budget in bytes.
//!
//! ```
//! use pagedattn_engine::{
//!     Batch, Engine, EngineConfig, Executor, KvLayout, KvPolicy, LogitsFor, ModelSpec,
//!     SamplingParams, StepOutput,
//! };
//!
//! /// A toy model: the next token is the previous one plus one.
//! struct Counter;
//! impl Executor for Counter {
//!     fn spec(&self) -> ModelSpec {
//!         ModelSpec { kv_bytes_per_token: 64, vocab_size: 100, max_model_len: 64, eos_token_id: None, end_of_turn_ids: vec![], simulated: false }
//!     }
//!     fn init_kv(&mut self, _: KvLayout) -> Result<(), String> { Ok(()) }
//!     fn copy_blocks(&mut self, _: &[pagedattn_kv::BlockCopy]) -> Result<(), String> { Ok(()) }
//!     fn execute(&mut self, batch: &Batch<'_>) -> Result<StepOutput, String> {
//!         let mut logits = Vec::new();
//!         for c in batch.seqs.iter().filter(|c| c.logits == LogitsFor::Last) {
//!             let mut row = vec![0.0; 100];
//!             row[(*c.tokens.last().unwrap() as usize + 1) % 100] = 1.0;
//!             logits.extend(row);
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

mod completion;
pub mod core;
mod engine;
mod error;
mod executor;
mod inspect;
mod kv_space;
mod metrics;
mod model_executor;
mod request;
mod sampler;
mod scheduler;
mod sequence;

pub use engine::{Engine, EngineConfig, RequestOutput};
pub use error::{EngineError, Result};
pub use executor::{Executor, KvLayout, ModelSpec, StepOutput};
pub use inspect::{PictureState, PoolPicture, SeqPicture, PICTURE_SEQUENCES};
pub use kv_space::{ContiguousSizing, KvPolicy, KvUsage};
pub use metrics::{EngineTotals, SeqMetrics, StepMetrics};
pub use model_executor::ModelExecutor;
pub use pagedattn_model::{Batch, KvLocation, LogitsFor, SeqInput};
pub use request::{validate, Request, RequestId, SamplingParams, MAX_LOGPROBS, MAX_N};
pub use sampler::TokenLogprob;
pub use scheduler::SchedulerConfig;
pub use sequence::{FinishReason, SeqState, Sequence};
