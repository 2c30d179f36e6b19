//! The model's matrix products `y (+)= x W^T`: dense weights packed into panels
//! (`packed.rs`, `dense.rs`; AVX-512 BF16 in `bf16.rs`), GGML's quantized blocks with
//! integer dot products (`quant/`), and what they share (`split.rs`).

#[cfg(target_arch = "x86_64")]
pub(crate) mod bf16;
pub(crate) mod dense;
pub(crate) mod packed;
pub(crate) mod quant;
pub(crate) mod split;
