//! A model's configuration from a Hugging Face `config.json`, and back.

use super::{Architecture, ModelConfig, RopeScaling, RopeStyle};
use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};

impl ModelConfig {
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
