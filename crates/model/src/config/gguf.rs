//! A model's configuration from GGUF metadata (keys under the architecture's name).

use super::{Architecture, ModelConfig, RopeScaling, RopeStyle};
use crate::error::{ModelError, Result};
use crate::gguf::{Array, GgufFile, Value};

/// The GGUF tensor holding Llama 3.1's per-frequency RoPE divisors.
pub(crate) const ROPE_FREQS: &str = "rope_freqs.weight";

impl ModelConfig {
    /// Reads the config of a `llama` or `qwen2` GGUF file from its metadata (keys under the
    /// architecture's name) and, for Llama 3.1's RoPE scaling, its `rope_freqs.weight`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = meta_str(file, "general.architecture")?;
        let (architecture, rope_style) = match arch {
            // The converter permutes llama's Q/K rows so that rotated pairs are adjacent;
            // qwen2's are stored as trained and rotate halves (llama.cpp's NeoX mode).
            "llama" => (Architecture::Llama, RopeStyle::AdjacentPairs),
            "qwen2" => (Architecture::Qwen2, RopeStyle::HalfSplit),
            _ => {
                return Err(ModelError::InvalidConfig(format!(
                    "architecture {arch:?} is not supported (llama, qwen2)"
                )))
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let int = |k: &str| meta_usize(file, &key(k));
        let float = |k: &str, default: f64| -> Result<f32> {
            match file.get(&key(k)) {
                None => Ok(default as f32),
                Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| bad_key(&key(k))),
            }
        };
        let hidden_size = int("embedding_length")?;
        let num_heads = int("attention.head_count")?;
        let head_dim = match file.get(&key("rope.dimension_count")) {
            Some(_) => int("rope.dimension_count")?,
            None => hidden_size / num_heads.max(1),
        };
        let vocab_size = match file.get(&key("vocab_size")) {
            Some(_) => int("vocab_size")?,
            None => file
                .get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .map_or(0, Array::len),
        };
        let mut rope_scaling = match file.get(&key("rope.scaling.type")) {
            None => None,
            Some(v) => match v.as_str() {
                Some("none") => None,
                Some("linear") => match file.get(&key("rope.scaling.factor")) {
                    None => None,
                    Some(_) => Some(RopeScaling::Linear {
                        factor: float("rope.scaling.factor", 1.0)?,
                    }),
                },
                Some(t) => {
                    return Err(ModelError::InvalidConfig(format!(
                        "{} {t:?}: RoPE scaling of this type is not supported (none, linear)",
                        key("rope.scaling.type")
                    )))
                }
                None => return Err(bad_key(&key("rope.scaling.type"))),
            },
        };
        if let Some(t) = file.tensor(ROPE_FREQS) {
            if rope_scaling.is_some() {
                return Err(ModelError::InvalidConfig(format!(
                    "tensor {ROPE_FREQS} and {} linear: two RoPE scalings at once are not supported",
                    key("rope.scaling.type")
                )));
            }
            if t.kind != crate::quant::GgmlType::F32 || t.dims.len() != 1 {
                return Err(ModelError::InvalidConfig(format!(
                    "tensor {ROPE_FREQS}: expected a vector of F32, found {:?} {:?}",
                    t.kind, t.dims
                )));
            }
            let factors = file
                .tensor_bytes(t)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            rope_scaling = Some(RopeScaling::FreqFactors(factors));
        }
        let c = Self {
            num_layers: int("block_count")?,
            hidden_size,
            intermediate_size: int("feed_forward_length")?,
            num_heads,
            num_kv_heads: match file.get(&key("attention.head_count_kv")) {
                Some(_) => int("attention.head_count_kv")?,
                None => num_heads,
            },
            head_dim,
            vocab_size,
            max_context: int("context_length")?,
            rope_theta: float("rope.freq_base", 10_000.0)?,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5)?,
            rope_style,
            tie_embeddings: file.tensor("output.weight").is_none(),
            architecture,
            rope_scaling,
        };
        c.validate()?;
        Ok(c)
    }
}

fn bad_key(key: &str) -> ModelError {
    ModelError::InvalidConfig(format!("metadata {key} is missing or has the wrong type"))
}

pub(crate) fn meta_usize(file: &GgufFile, key: &str) -> Result<usize> {
    file.get(key)
        .and_then(Value::as_u64)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| bad_key(key))
}

pub(crate) fn meta_str<'a>(file: &'a GgufFile, key: &str) -> Result<&'a str> {
    file.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad_key(key))
}
