//! Model shape and hyperparameters, from GGUF metadata, a Hugging Face `config.json`, or a
//! built-in name.

mod gguf;
mod hf;
mod rope_scaling;

pub(crate) use gguf::{meta_str, ROPE_FREQS};
pub use rope_scaling::RopeScaling;

use crate::error::{ModelError, Result};
use pagedattn_kernels::{DType, KvShape};
use serde::{Deserialize, Serialize};

/// How rotary embeddings pair up the elements of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopeStyle {
    /// Rotate `(2i, 2i + 1)`: GGUF files, whose converter permutes the Q/K rows to match.
    AdjacentPairs,
    /// Rotate `(i, i + head_dim / 2)`: Hugging Face checkpoints.
    HalfSplit,
}

/// The decoder family: what a layer computes beyond the block all of them share (RMSNorm,
/// grouped-query attention with RoPE, SwiGLU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama 2 / 3.x, Mistral, SmolLM, TinyLlama: no biases.
    #[default]
    Llama,
    /// Qwen2 / Qwen2.5: Llama's block with biases on the Q, K and V projections.
    Qwen2,
}

impl Architecture {
    /// The name GGUF's `general.architecture` and `config.json`'s `model_type` use.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
        }
    }

    /// Whether the Q, K and V projections carry biases.
    pub const fn qkv_bias(self) -> bool {
        matches!(self, Self::Qwen2)
    }
}

/// Shape and hyperparameters of a Llama-family decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Decoder layers.
    pub num_layers: usize,
    /// Residual stream width.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Longest context the model was trained for; positions beyond it are rejected.
    pub max_context: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// RoPE pairing convention.
    pub rope_style: RopeStyle,
    /// Whether the LM head reuses the token embedding.
    pub tie_embeddings: bool,
    /// The decoder family.
    #[serde(default)]
    pub architecture: Architecture,
    /// RoPE frequency scaling, if the model uses it.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
}

impl ModelConfig {
    /// A built-in config by name: `smollm2-135m` (the real model's shape) or `tiny`
    /// (a few thousand parameters per layer, for fast tests).
    pub fn named(name: &str) -> Result<Self> {
        match name {
            "smollm2-135m" => Ok(Self {
                num_layers: 30,
                hidden_size: 576,
                intermediate_size: 1536,
                num_heads: 9,
                num_kv_heads: 3,
                head_dim: 64,
                vocab_size: 49_152,
                max_context: 8192,
                rope_theta: 100_000.0,
                rms_norm_eps: 1e-5,
                rope_style: RopeStyle::AdjacentPairs,
                tie_embeddings: true,
                architecture: Architecture::Llama,
                rope_scaling: None,
            }),
            "tiny" => Ok(Self {
                num_layers: 2,
                hidden_size: 64,
                intermediate_size: 128,
                num_heads: 4,
                num_kv_heads: 2,
                head_dim: 16,
                vocab_size: 256,
                max_context: 1024,
                rope_theta: 10_000.0,
                rms_norm_eps: 1e-5,
                rope_style: RopeStyle::AdjacentPairs,
                tie_embeddings: true,
                architecture: Architecture::Llama,
                rope_scaling: None,
            }),
            _ => Err(ModelError::UnknownConfig(name.to_string())),
        }
    }

    /// What one token's K/V are in the cache, stored as `dtype` (its
    /// [`KvShape::bytes_per_token`] sizes a cache from a memory budget).
    pub fn kv_shape(&self, dtype: DType) -> KvShape {
        KvShape {
            num_layers: self.num_layers,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            dtype,
        }
    }

    /// Width of the query projection (`num_heads * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the key (or value) projection (`num_kv_heads * head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Parameters (with tied embeddings counted once); saturates instead of overflowing.
    pub fn num_params(&self) -> usize {
        self.checked_num_params().unwrap_or(usize::MAX)
    }

    fn checked_num_params(&self) -> Option<usize> {
        let (h, f) = (self.hidden_size, self.intermediate_size);
        let q = self.num_heads.checked_mul(self.head_dim)?;
        let kv = self.num_kv_heads.checked_mul(self.head_dim)?;
        let qkv = q.checked_add(kv.checked_mul(2)?)?;
        let bias = if self.architecture.qkv_bias() { qkv } else { 0 };
        let attn = h
            .checked_mul(qkv)?
            .checked_add(q.checked_mul(h)?)?
            .checked_add(bias)?;
        let layer = attn
            .checked_add(h.checked_mul(f)?.checked_mul(3)?)?
            .checked_add(2 * h)?;
        let embed = self.vocab_size.checked_mul(h)?;
        let head = if self.tie_embeddings { 0 } else { embed };
        self.num_layers
            .checked_mul(layer)?
            .checked_add(embed)?
            .checked_add(h)?
            .checked_add(head)
    }

    /// Checks the config is usable (non-zero sizes, heads divide, even head_dim).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        for (name, v) in [
            ("num_layers", self.num_layers),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_context", self.max_context),
        ] {
            if v == 0 {
                return bad(format!("{name} must be > 0"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_heads {} is not a multiple of num_kv_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        // Every buffer is sized from these numbers; refuse ones that overflow before any
        // is allocated (the tensor shapes are checked against the file separately).
        if self
            .checked_num_params()
            .and_then(|p| p.checked_mul(4))
            .is_none()
        {
            return bad("the parameter count overflows".into());
        }
        if self.vocab_size > u32::MAX as usize {
            return bad("vocab_size exceeds u32 token ids".into());
        }
        // Finite and positive: a zero epsilon divides by zero on an all-zero row, and a
        // non-finite theta or epsilon turns every activation into NaN.
        if !(self.rope_theta.is_finite()
            && self.rope_theta > 0.0
            && self.rms_norm_eps.is_finite()
            && self.rms_norm_eps > 0.0)
        {
            return bad(format!(
                "rope_theta ({}) and rms_norm_eps ({}) must be finite and > 0",
                self.rope_theta, self.rms_norm_eps
            ));
        }
        if let Some(scaling) = &self.rope_scaling {
            scaling.validate(self.head_dim)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sliding_window_bounds_the_context() {
        let c = ModelConfig::named("tiny").unwrap();
        let mut j: serde_json::Value = serde_json::from_str(&c.to_hf_json().unwrap()).unwrap();
        j["model_type"] = "mistral".into();
        j["max_position_embeddings"] = 4096.into();
        j["sliding_window"] = 1024.into();
        let m = ModelConfig::from_hf_json(&j.to_string()).unwrap();
        assert_eq!(m.max_context, 1024);
        j["sliding_window"] = serde_json::Value::Null;
        assert_eq!(
            ModelConfig::from_hf_json(&j.to_string())
                .unwrap()
                .max_context,
            4096
        );
        j["sliding_window"] = (1u64 << 20).into();
        assert_eq!(
            ModelConfig::from_hf_json(&j.to_string())
                .unwrap()
                .max_context,
            4096
        );
    }

    #[test]
    fn named_configs_are_valid() {
        for name in ["smollm2-135m", "tiny"] {
            ModelConfig::named(name).unwrap().validate().unwrap();
        }
        assert!(ModelConfig::named("gpt-5").is_err());
        let c = ModelConfig::named("smollm2-135m").unwrap();
        // SmolLM2-135M: 30 layers of 3 KV heads of 64, K and V, 2 bytes each.
        assert_eq!(c.kv_shape(DType::F16).bytes_per_token(), 23_040);
        assert!(
            (134_000_000..136_000_000).contains(&c.num_params()),
            "{}",
            c.num_params()
        );
    }

    #[test]
    fn hf_json_round_trip() {
        let mut c = ModelConfig::named("tiny").unwrap();
        c.rope_style = RopeStyle::HalfSplit;
        assert_eq!(
            ModelConfig::from_hf_json(&c.to_hf_json().unwrap()).unwrap(),
            c
        );
        assert!(ModelConfig::from_hf_json("{}").is_err());
    }
}
