//! Model shape and hyperparameters, from GGUF metadata, a Hugging Face `config.json`, or a
//! built-in name.

use crate::error::{ModelError, Result};
use crate::gguf::{Array, GgufFile, Value};
use pagedattn_kernels::DType;
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

/// How RoPE's frequencies are stretched for contexts longer than the model was first
/// trained on. Each rotation frequency `theta^(-2i / head_dim)` is divided by a factor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeScaling {
    /// Every frequency divided by `factor` (positions interpolated).
    Linear {
        /// The divisor.
        factor: f32,
    },
    /// Llama 3.1's rule (`rope_type: llama3`): wavelengths shorter than
    /// `original_max_position / high_freq_factor` are kept, longer than
    /// `original_max_position / low_freq_factor` divided by `factor`, and the ones between
    /// interpolated smoothly.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f32,
        /// Wavelength bound (as a fraction of the original context) of the divided band.
        low_freq_factor: f32,
        /// Wavelength bound (as a fraction of the original context) of the kept band.
        high_freq_factor: f32,
        /// The context the model was pretrained with.
        original_max_position: usize,
    },
    /// One divisor per frequency (`head_dim / 2` values), as GGUF files store Llama 3.1's
    /// rule (`rope_freqs.weight`).
    FreqFactors(Vec<f32>),
}

impl RopeScaling {
    /// The divisor of each of `inv_freq`'s frequencies.
    pub fn divisors(&self, inv_freq: &[f64]) -> Vec<f64> {
        match self {
            Self::Linear { factor } => vec![f64::from(*factor); inv_freq.len()],
            Self::FreqFactors(f) => f.iter().map(|&x| f64::from(x)).collect(),
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                let (factor, low, high) = (
                    f64::from(*factor),
                    f64::from(*low_freq_factor),
                    f64::from(*high_freq_factor),
                );
                let old = *original_max_position as f64;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                inv_freq
                    .iter()
                    .map(|&f| {
                        let wavelen = std::f64::consts::TAU / f;
                        if wavelen < high_wavelen {
                            1.0
                        } else if wavelen > low_wavelen {
                            factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            1.0 / ((1.0 - smooth) / factor + smooth)
                        }
                    })
                    .collect()
            }
        }
    }

    /// Checks the parameters: finite, positive, ordered, one factor per frequency.
    fn validate(&self, head_dim: usize) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidConfig(format!("RoPE scaling: {m}")));
        let positive = |x: f32| x.is_finite() && x > 0.0;
        match self {
            Self::Linear { factor } if !positive(*factor) => {
                bad(format!("factor {factor} must be finite and > 0"))
            }
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                if !(positive(*factor) && positive(*low_freq_factor) && positive(*high_freq_factor))
                {
                    bad(format!(
                        "factor {factor}, low_freq_factor {low_freq_factor} and high_freq_factor {high_freq_factor} must be finite and > 0"
                    ))
                } else if low_freq_factor >= high_freq_factor {
                    bad(format!(
                        "low_freq_factor {low_freq_factor} must be below high_freq_factor {high_freq_factor}"
                    ))
                } else if *original_max_position == 0 {
                    bad("original_max_position_embeddings must be > 0".into())
                } else {
                    Ok(())
                }
            }
            Self::FreqFactors(f) if f.len() != head_dim / 2 => bad(format!(
                "{} frequency factors for {} frequencies (head_dim {head_dim} / 2)",
                f.len(),
                head_dim / 2
            )),
            Self::FreqFactors(f) => match f.iter().position(|&x| !positive(x)) {
                Some(i) => bad(format!(
                    "frequency factor {i} is {}; must be finite and > 0",
                    f[i]
                )),
                None => Ok(()),
            },
            Self::Linear { .. } => Ok(()),
        }
    }
}

/// The GGUF tensor holding Llama 3.1's per-frequency RoPE divisors.
pub(crate) const ROPE_FREQS: &str = "rope_freqs.weight";

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

    /// Bytes of K and V one token occupies across all layers, stored as `dtype`; divide a
    /// KV memory budget by this to size the cache.
    pub fn kv_bytes_per_token(&self, dtype: DType) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype.size()
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

    /// Reads a Hugging Face `config.json` (Llama family).
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let err = |m: String| ModelError::InvalidConfig(format!("config.json: {m}"));
        let bad = |m: String| Err(err(m));
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        let Some(obj) = v.as_object() else {
            return bad("not a JSON object".into());
        };
        // serde's own type errors give a line and column only; name the field instead.
        for (key, val) in obj {
            let checked = match key.as_str() {
                "num_hidden_layers"
                | "hidden_size"
                | "intermediate_size"
                | "num_attention_heads"
                | "vocab_size"
                | "max_position_embeddings" => {
                    serde_json::from_value::<usize>(val.clone()).map(drop)
                }
                "num_key_value_heads" | "head_dim" => {
                    serde_json::from_value::<Option<usize>>(val.clone()).map(drop)
                }
                "rope_theta" | "rms_norm_eps" => {
                    serde_json::from_value::<Option<f32>>(val.clone()).map(drop)
                }
                "tie_word_embeddings" => {
                    serde_json::from_value::<Option<bool>>(val.clone()).map(drop)
                }
                _ => Ok(()),
            };
            checked.map_err(|e| err(format!("{key}: {e}")))?;
        }
        // The family and the features this crate implements; anything else is refused by
        // name rather than run without it.
        let text_field = |key: &str| obj.get(key).and_then(serde_json::Value::as_str);
        let arch_names: Vec<&str> = obj
            .get("architectures")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        let model_type = match text_field("model_type") {
            Some(t @ ("llama" | "mistral" | "qwen2")) => t,
            Some(other) => {
                return bad(format!(
                    "model_type {other:?} is not supported (llama, mistral, qwen2)"
                ))
            }
            None => match arch_names.iter().find_map(|a| match *a {
                "LlamaForCausalLM" => Some("llama"),
                "MistralForCausalLM" => Some("mistral"),
                "Qwen2ForCausalLM" => Some("qwen2"),
                _ => None,
            }) {
                Some(t) => t,
                None => {
                    return bad(format!(
                        "model_type is missing and architectures {arch_names:?} names no supported family (llama, mistral, qwen2)"
                    ))
                }
            },
        };
        let architecture = if model_type == "qwen2" {
            Architecture::Qwen2
        } else {
            Architecture::Llama
        };
        let rope_scaling = match obj.get("rope_scaling").filter(|v| !v.is_null()) {
            None => None,
            Some(s) => hf_rope_scaling(s).map_err(err)?,
        };
        // Llama's optional biases also cover the output projection; Qwen2's are fixed.
        for flag in ["attention_bias", "mlp_bias"] {
            if obj.get(flag).and_then(serde_json::Value::as_bool) == Some(true) {
                return bad(format!(
                    "{flag}: biases are not supported for model_type {model_type:?}"
                ));
            }
        }
        if let Some(act) = text_field("hidden_act").filter(|a| *a != "silu") {
            return bad(format!("hidden_act {act:?} is not supported (silu)"));
        }
        // Mistral attends within a sliding window; Qwen2 only when `use_sliding_window`.
        let windowed = match architecture {
            Architecture::Qwen2 => {
                obj.get("use_sliding_window")
                    .and_then(serde_json::Value::as_bool)
                    == Some(true)
            }
            Architecture::Llama => model_type == "mistral",
        };
        let sliding_window = obj
            .get("sliding_window")
            .and_then(serde_json::Value::as_u64)
            .filter(|_| windowed);
        let j: HfConfig = serde_json::from_value(v).map_err(|e| err(e.to_string()))?;
        let num_kv_heads = j.num_key_value_heads.unwrap_or(j.num_attention_heads);
        if j.head_dim.is_none()
            && j.num_attention_heads > 0
            && !j.hidden_size.is_multiple_of(j.num_attention_heads)
        {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {} (and head_dim is not given)",
                j.hidden_size, j.num_attention_heads
            ));
        }
        // JSON has no NaN or infinity, but a number too large for f32 parses as infinity.
        if let Some(t) = j.rope_theta.filter(|t| !(t.is_finite() && *t > 0.0)) {
            return bad(format!("rope_theta {t} must be finite and > 0"));
        }
        if let Some(e) = j.rms_norm_eps.filter(|e| !(e.is_finite() && *e > 0.0)) {
            return bad(format!("rms_norm_eps {e} must be finite and > 0"));
        }
        let c = Self {
            num_layers: j.num_hidden_layers,
            hidden_size: j.hidden_size,
            intermediate_size: j.intermediate_size,
            num_heads: j.num_attention_heads,
            num_kv_heads,
            head_dim: j
                .head_dim
                .unwrap_or(j.hidden_size / j.num_attention_heads.max(1)),
            vocab_size: j.vocab_size,
            // Mistral's sliding-window attention equals full attention up to the window:
            // serve contexts only that long.
            max_context: match sliding_window {
                Some(w) => j
                    .max_position_embeddings
                    .min(usize::try_from(w).unwrap_or(usize::MAX)),
                None => j.max_position_embeddings,
            },
            rope_theta: j.rope_theta.unwrap_or(10_000.0),
            rms_norm_eps: j.rms_norm_eps.unwrap_or(1e-6),
            rope_style: RopeStyle::HalfSplit,
            tie_embeddings: j.tie_word_embeddings.unwrap_or(false),
            architecture,
            rope_scaling,
        };
        c.validate()?;
        Ok(c)
    }

    /// The Hugging Face `config.json` for this config. Per-frequency RoPE factors
    /// ([`RopeScaling::FreqFactors`]) have no `config.json` form: an error.
    pub fn to_hf_json(&self) -> Result<String> {
        let rope_scaling = match &self.rope_scaling {
            None => None,
            Some(RopeScaling::Linear { factor }) => {
                Some(serde_json::json!({"rope_type": "linear", "factor": factor}))
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            }) => Some(serde_json::json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position,
            })),
            Some(RopeScaling::FreqFactors(_)) => {
                return Err(ModelError::InvalidConfig(
                    "per-frequency RoPE factors (rope_freqs.weight) have no config.json form"
                        .into(),
                ))
            }
        };
        let (arch, model_type) = match self.architecture {
            Architecture::Llama => ("LlamaForCausalLM", "llama"),
            Architecture::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        };
        let j = HfConfig {
            architectures: Some(vec![arch.into()]),
            model_type: Some(model_type.into()),
            num_hidden_layers: self.num_layers,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_attention_heads: self.num_heads,
            num_key_value_heads: Some(self.num_kv_heads),
            head_dim: Some(self.head_dim),
            vocab_size: self.vocab_size,
            max_position_embeddings: self.max_context,
            rope_theta: Some(self.rope_theta),
            rms_norm_eps: Some(self.rms_norm_eps),
            tie_word_embeddings: Some(self.tie_embeddings),
            rope_scaling,
        };
        serde_json::to_string_pretty(&j)
            .map_err(|e| ModelError::InvalidConfig(format!("config.json: {e}")))
    }
}

/// The subset of a Hugging Face Llama `config.json` this crate reads.
#[derive(Serialize, Deserialize)]
struct HfConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    architectures: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model_type: Option<String>,
    num_hidden_layers: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    max_position_embeddings: usize,
    rope_theta: Option<f32>,
    rms_norm_eps: Option<f32>,
    tie_word_embeddings: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rope_scaling: Option<serde_json::Value>,
}

/// A `config.json` `rope_scaling` object: `default` (none), `linear` or `llama3`.
fn hf_rope_scaling(s: &serde_json::Value) -> std::result::Result<Option<RopeScaling>, String> {
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(serde_json::Value::as_str)
        .ok_or("rope_scaling: no rope_type")?;
    let num = |k: &str| -> std::result::Result<f32, String> {
        s.get(k)
            .and_then(serde_json::Value::as_f64)
            .map(|x| x as f32)
            .ok_or_else(|| format!("rope_scaling.{k} is missing or not a number"))
    };
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear {
            factor: num("factor")?,
        })),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position: s
                .get("original_max_position_embeddings")
                .and_then(serde_json::Value::as_u64)
                .and_then(|x| usize::try_from(x).ok())
                .ok_or(
                    "rope_scaling.original_max_position_embeddings is missing or not an integer",
                )?,
        })),
        other => Err(format!(
            "rope_scaling type {other:?} is not supported (default, linear, llama3)"
        )),
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
        // 30 layers x 3 KV heads x 64 x (K and V) x 2 bytes.
        assert_eq!(c.kv_bytes_per_token(DType::F16), 30 * 3 * 64 * 2 * 2);
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
