//! PagedAttention kernels for the CPU.
//!
//! - [`KvCache`]: block-paged K/V storage, per layer `[num_blocks, num_kv_heads,
//!   block_size, head_dim]`, in f32, f16 or bf16 ([`DType`]); [`KvCache::write_kv`]
//!   scatters new tokens into their slots, [`KvCache::copy_blocks`] serves copy-on-write.
//! - [`ContiguousKv`]: the baseline layout, one arena `[num_kv_heads, capacity_slots,
//!   head_dim]` per layer in which each sequence owns a run of slots.
//! - [`paged_attention`], [`contiguous_attention`], [`padded_attention`]: decode and
//!   causal prefill over a flattened batch of sequences, grouped-query attention, online
//!   softmax in one pass, split-K with a merge when there are few sequences. All three run
//!   the *same* tile loop; only the address of a tile differs, so paged and contiguous
//!   outputs for the same inputs are bitwise identical.
//! - [`KvShape`] (what one token's K/V are) and [`KvLayout`] (blocks or one arena) describe
//!   every store; [`KvStorage`] is whichever store a layout asks for, and [`KvStore`] the
//!   interface a forward pass writes and attends through.
//! - [`Batch`]: the step description an engine builds and a model consumes — new tokens,
//!   their positions and slots, and per sequence a [`SeqSpec`] (its rows of the batch, its
//!   context, where its K/V live: a [`KvLocation`]).
//! - [`Cpu`]: what this CPU runs — a vector instruction set ([`Isa`]: AVX-512, AVX2+FMA,
//!   NEON, scalar) plus the VNNI and BF16 dot products — resolved once
//!   ([`Cpu::selected`], or the path `PAGEDATTN_ISA` names) and passed to every kernel.
//! - [`linear`]: `y (+)= x W^T` over a [`PackedMatrix`] (f32, f16 or bf16 weights in
//!   panels of [`PANEL`] output features), any number of rows, weights read once per call;
//!   [`qlinear`] over GGML's quantized blocks with integer dot products; [`swiglu`], the
//!   MLP's activation.
//! - [`fma_peak_gflops`], [`int8_peak_gmacs`], [`bf16_peak_gmacs`]: this CPU's peaks on
//!   each arithmetic path, for rooflines.
//! - [`reference_attention`]: the f64 specification the kernels are tested against.
//!
//! ```
//! use pagedattn_kernels::{paged_attention, AttentionConfig, DType, KvCache, KvShape, PagedSeq};
//! use pagedattn_kv::BlockId;
//!
//! let (heads, kv_heads, dim, block) = (4, 2, 8, 4);
//! let shape = KvShape { num_layers: 1, num_kv_heads: kv_heads, head_dim: dim, dtype: DType::F32 };
//! let mut cache = KvCache::new(shape, 8, block)?;
//! // A 6-token prompt stored in blocks 5 and 2 (slots 20..24 and 8..10).
//! let table = [BlockId(5), BlockId(2)];
//! let slots: Vec<usize> = (0..6).map(|t| table[t / block].index() * block + t % block).collect();
//! let kv: Vec<f32> = (0..6 * kv_heads * dim).map(|i| (i % 7) as f32 * 0.1).collect();
//! cache.write_kv(0, &slots, &kv, &kv)?;
//!
//! // Prefill all six tokens (causal), in one call.
//! let q = vec![0.5f32; 6 * heads * dim];
//! let mut out = vec![0.0f32; q.len()];
//! let seqs = [PagedSeq { query_start: 0, query_len: 6, context_len: 6, kv: &table[..] }];
//! paged_attention(&AttentionConfig::new(heads, dim), &cache, 0, &q, &seqs, &mut out)?;
//! // The first token sees only itself: its output is its own value row.
//! assert!((out[0] - kv[0]).abs() < 1e-6);
//! # Ok::<(), pagedattn_kernels::KernelError>(())
//! ```

// The SIMD design depends on `#[inline(always)]`: generic kernel code must be inlined into
// each `#[target_feature]` entry to be compiled with that entry's instruction set.
#![allow(clippy::inline_always)]
// Every `unsafe` block says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

mod activation;
mod attention;
mod cpu;
mod error;
mod probe;
mod products;
mod step;
mod store;
#[doc(hidden)]
pub mod testing;

pub use activation::swiglu;
pub use attention::kernel::{
    AttentionKernel, AttentionPhase, ContiguousAttention, PaddedAttention, PagedAttention,
};
pub use attention::reference::{reference_attention, RefKv, RefSeq, RefShape};
pub use attention::spec::{AttentionConfig, ContiguousSeq, PagedSeq, SeqSpec, SplitPolicy};
pub use attention::{contiguous_attention, padded_attention, paged_attention};
pub use cpu::{Cpu, Isa};
pub use error::{KernelError, Result};
pub use probe::{bf16_peak_gmacs, fma_peak_gflops, int8_peak_gmacs, sum_f32};
pub use products::dense::linear;
pub use products::packed::{PackedMatrix, PANEL};
pub use products::quant::blocks::{QuantType, QK, QK_K};
pub use products::quant::{dequantize_blocks, qlinear, QuantMatrix};
pub use step::{Batch, KvLocation, LogitsFor};
pub use store::backend::{KvStorage, KvStore};
pub use store::cache::KvCache;
pub use store::contiguous::{ContiguousKv, ContiguousRun};
pub use store::dtype::{DType, KvElem};
pub use store::shape::{KvLayout, KvShape};
