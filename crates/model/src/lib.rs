//! A Llama-family decoder (Llama 2/3.x, Mistral, SmolLM, Qwen2/2.5) whose attention runs
//! on the paged KV cache.
//!
//! - [`Model`]: loaded from a GGUF file ([`Model::load`]; F32, F16, BF16, Q4_0, Q4_1,
//!   Q8_0, Q4_K, Q5_K and Q6_K tensors, kept as blocks or dequantized to f32 or bf16), a
//!   Hugging Face directory ([`Model::load_hf`]), or seeded random weights from a named
//!   config ([`Model::random_named`]: `smollm2-135m`, `tiny`).
//! - [`Model::forward`]: one step over a flattened [`Batch`] of sequences (the kernels
//!   crate's step description), prefill chunks and decode tokens mixed, each with its own
//!   positions, new-token slots and block table (or contiguous run); K/V go through a
//!   [`KvStore`] ([`pagedattn_kernels::KvCache`], [`pagedattn_kernels::ContiguousKv`] or
//!   [`pagedattn_kernels::KvStorage`]); logits only for the rows asked for.
//! - [`Tokenizer`]: byte-level BPE or SentencePiece built from GGUF metadata, or a Hugging
//!   Face directory's `tokenizer.json` with its config files; streaming decode.
//!
//! [`Batch`]: pagedattn_kernels::Batch
//! [`KvStore`]: pagedattn_kernels::KvStore
//!
//! ```
//! use pagedattn_kernels::{Batch, DType, KvCache, KvLocation, LogitsFor};
//! use pagedattn_kv::BlockId;
//! use pagedattn_model::{Model, WeightDType};
//!
//! let model = Model::random_named("tiny", 0, WeightDType::F32)?;
//! let mut cache = KvCache::new(model.config().kv_shape(DType::F32), 4, 16)?;
//! // A 3-token prompt in block 2 (slots 32, 33, 34).
//! let table = [BlockId(2)];
//! let mut batch = Batch::paged(16);
//! batch.push(&[5, 6, 7], 0, KvLocation::Paged(&table), LogitsFor::Last)?;
//! assert_eq!(batch.slots(), &[32, 33, 34]);
//! let logits = model.forward(&batch, &mut cache)?;
//! assert_eq!((logits.len(), logits.row(0).len()), (1, model.config().vocab_size));
//! # Ok::<(), pagedattn_model::ModelError>(())
//! ```

// Unsafe code lives in the kernels crate only (its SIMD and allocation paths).
#![forbid(unsafe_code)]

mod config;
mod error;
mod forward;
pub mod gguf;
mod hf;
mod linear;
mod model;
mod ops;
pub mod quant;
mod rope;
mod tokenizer;
mod weights;

pub use config::{Architecture, ModelConfig, RopeScaling, RopeStyle};
pub use error::{ModelError, Result};
pub use forward::{Logits, LogitsRow};
pub use model::{LoadOptions, Model};
pub use tokenizer::{TokenStream, Tokenizer};
pub use weights::{LayerTensor, Matrix, TensorName, TensorSource, WeightDType};
