//! Hugging Face layout: `config.json`, the weights and the tokenizer's files
//! (`tokenizer.json`, `tokenizer_config.json`, `generation_config.json`) in one directory.
//! Weights are one `model.safetensors` or shards listed by `model.safetensors.index.json`
//! (`weight_map`: tensor name -> shard file in the same directory); F32, F16 or BF16.
//!
//! Hugging Face Llama checkpoints use half-split RoPE. Saving a model loaded from GGUF
//! (adjacent-pair RoPE) undoes the converter's Q/K row permutation, so the saved model
//! computes the same function under the Hugging Face convention.

use crate::config::{ModelConfig, RopeStyle};
use crate::error::{ModelError, Result};
use crate::model::{LoadOptions, Model};
use crate::tokenizer::Tokenizer;
use crate::weights::{LayerTensor, Matrix, TensorName, TensorSource, Weights};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

const CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";
/// Largest index file read (real ones are tens of KiB; they list tensor names only).
const MAX_INDEX_BYTES: u64 = 64 << 20;

fn st_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Safetensors(e.to_string())
}

fn hf_name(name: TensorName) -> String {
    match name {
        TensorName::Embed => "model.embed_tokens.weight".into(),
        TensorName::FinalNorm => "model.norm.weight".into(),
        TensorName::LmHead => "lm_head.weight".into(),
        TensorName::Layer(i, t) => {
            let s = match t {
                LayerTensor::AttnNorm => "input_layernorm",
                LayerTensor::Q => "self_attn.q_proj",
                LayerTensor::K => "self_attn.k_proj",
                LayerTensor::V => "self_attn.v_proj",
                LayerTensor::O => "self_attn.o_proj",
                LayerTensor::FfnNorm => "post_attention_layernorm",
                LayerTensor::Gate => "mlp.gate_proj",
                LayerTensor::Up => "mlp.up_proj",
                LayerTensor::Down => "mlp.down_proj",
                LayerTensor::QBias => return format!("model.layers.{i}.self_attn.q_proj.bias"),
                LayerTensor::KBias => return format!("model.layers.{i}.self_attn.k_proj.bias"),
                LayerTensor::VBias => return format!("model.layers.{i}.self_attn.v_proj.bias"),
            };
            format!("model.layers.{i}.{s}.weight")
        }
    }
}

/// The weight files of `dir`: `model.safetensors`, or else the distinct shards its index
/// names, in first-mention order. Shard names must be plain file names in `dir` ending in
/// `.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<String>> {
    if dir.join(WEIGHTS).exists() || !dir.join(INDEX).exists() {
        return Ok(vec![WEIGHTS.into()]);
    }
    let path = dir.join(INDEX);
    let bad = |m: String| ModelError::Safetensors(format!("{INDEX}: {m}"));
    let len = std::fs::metadata(&path)
        .map_err(|e| ModelError::io(&path, e))?
        .len();
    if len > MAX_INDEX_BYTES {
        return Err(bad(format!("{len} bytes (at most {MAX_INDEX_BYTES})")));
    }
    let text = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| bad("no weight_map object".into()))?;
    let mut files: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{tensor:?}] is not a file name")))?;
        let plain = !file.is_empty()
            && !file.contains(['/', '\\'])
            && file != ".."
            && Path::new(file)
                .extension()
                .is_some_and(|e| e == "safetensors");
        if !plain {
            return Err(bad(format!(
                "weight_map[{tensor:?}] = {file:?} is not a .safetensors file in the directory"
            )));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    if files.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    Ok(files)
}

/// The tensors of one or more safetensors files (shards), looked up by name.
struct SafetensorsSource<'a>(Vec<SafeTensors<'a>>);

impl<'a> SafetensorsSource<'a> {
    fn find(&self, name: TensorName, shape: &[usize]) -> Result<(String, TensorView<'a>)> {
        let key = hf_name(name);
        let t = self
            .0
            .iter()
            .find_map(|st| st.tensor(&key).ok())
            .ok_or_else(|| ModelError::MissingTensor(key.clone()))?;
        if t.shape() != shape {
            return Err(ModelError::ShapeMismatch {
                name: key,
                expected: shape.to_vec(),
                found: t.shape().to_vec(),
            });
        }
        // Checked before the f32 buffer is allocated: a one-byte type would otherwise
        // justify only a quarter of the buffer sized from its shape.
        if !matches!(t.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(ModelError::UnsupportedTensorType {
                name: key,
                kind: format!("{:?}", t.dtype()),
            });
        }
        Ok((key, t))
    }
}

impl TensorSource for SafetensorsSource<'_> {
    fn check(&self, name: TensorName, shape: &[usize]) -> Result<()> {
        self.find(name, shape).map(|_| ())
    }

    fn fill(&mut self, name: TensorName, shape: &[usize], out: &mut [f32]) -> Result<()> {
        let (key, t) = self.find(name, shape)?;
        let data = t.data();
        match t.dtype() {
            Dtype::F32 => {
                for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Dtype::F16 => {
                for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            Dtype::BF16 => {
                for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            other => {
                return Err(ModelError::UnsupportedTensorType {
                    name: key,
                    kind: format!("{other:?}"),
                })
            }
        }
        Ok(())
    }
}

impl Model {
    /// Loads a Hugging Face directory; `tokenizer.json` is optional.
    pub fn load_hf(dir: &Path, opts: LoadOptions) -> Result<Self> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| ModelError::io(dir.join(name), e))
        };
        let config_text = String::from_utf8(read(CONFIG)?)
            .map_err(|_| ModelError::InvalidConfig(format!("{CONFIG} is not UTF-8")))?;
        let config = ModelConfig::from_hf_json(&config_text)?;
        let files = weight_files(dir)?;
        let blobs = files
            .iter()
            .map(|f| read(f))
            .collect::<Result<Vec<Vec<u8>>>>()?;
        let total: usize = blobs.iter().map(Vec::len).sum();
        // Every parameter takes at least two bytes of the files (F16/BF16), so a config
        // whose parameter count the files cannot hold is refused before anything is sized
        // from it (a huge num_layers with tiny layers would otherwise reach an allocation).
        let needed = config.num_params().saturating_mul(2);
        if needed > total {
            return Err(ModelError::InvalidConfig(format!(
                "{CONFIG} implies {} parameters, at least {needed} bytes, but the weights have {total} bytes",
                config.num_params(),
            )));
        }
        let shards = files
            .iter()
            .zip(&blobs)
            .map(|(f, b)| SafeTensors::deserialize(b).map_err(|e| st_err(format!("{f}: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        let weights = Weights::load(&config, &mut SafetensorsSource(shards), opts.dtype)?;
        let tokenizer = Tokenizer::from_hf_dir(dir)?;
        Ok(Self::assemble(config, weights, tokenizer))
    }

    /// Writes the model in Hugging Face layout (f32 safetensors) into `dir`, creating it.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let c = &self.config;
        let mut hf_config = c.clone();
        hf_config.rope_style = RopeStyle::HalfSplit;
        let path = dir.join(CONFIG);
        std::fs::write(&path, hf_config.to_hf_json()?).map_err(|e| ModelError::io(path, e))?;

        let w = &self.weights;
        let (qd, kvd, f) = (c.q_dim(), c.kv_dim(), c.intermediate_size);
        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        let mut push = |name: TensorName, m: &Matrix, start: usize, end: usize| {
            tensors.push((
                hf_name(name),
                vec![end - start, m.cols()],
                m.rows_f32(start, end),
            ));
        };
        push(TensorName::Embed, &w.embed, 0, w.embed.rows());
        if let Some(head) = &w.lm_head {
            push(TensorName::LmHead, head, 0, head.rows());
        }
        for (i, l) in w.layers.iter().enumerate() {
            let t = |x| TensorName::Layer(i, x);
            push(t(LayerTensor::Q), &l.wqkv, 0, qd);
            push(t(LayerTensor::K), &l.wqkv, qd, qd + kvd);
            push(t(LayerTensor::V), &l.wqkv, qd + kvd, qd + 2 * kvd);
            push(t(LayerTensor::O), &l.wo, 0, l.wo.rows());
            push(t(LayerTensor::Gate), &l.w_gate_up, 0, f);
            push(t(LayerTensor::Up), &l.w_gate_up, f, 2 * f);
            push(t(LayerTensor::Down), &l.w_down, 0, l.w_down.rows());
        }
        for (i, l) in w.layers.iter().enumerate() {
            if let Some(b) = &l.qkv_bias {
                let t = |x| hf_name(TensorName::Layer(i, x));
                tensors.push((t(LayerTensor::QBias), vec![qd], b[..qd].to_vec()));
                tensors.push((t(LayerTensor::KBias), vec![kvd], b[qd..qd + kvd].to_vec()));
                tensors.push((t(LayerTensor::VBias), vec![kvd], b[qd + kvd..].to_vec()));
            }
        }
        if c.rope_style == RopeStyle::AdjacentPairs {
            for (name, _, data) in &mut tensors {
                if name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight") {
                    unpermute_rows(data, c.head_dim, c.hidden_size);
                }
                if name.ends_with("q_proj.bias") || name.ends_with("k_proj.bias") {
                    unpermute_rows(data, c.head_dim, 1);
                }
            }
        }
        for (i, l) in w.layers.iter().enumerate() {
            tensors.push((
                hf_name(TensorName::Layer(i, LayerTensor::AttnNorm)),
                vec![l.attn_norm.len()],
                l.attn_norm.clone(),
            ));
            tensors.push((
                hf_name(TensorName::Layer(i, LayerTensor::FfnNorm)),
                vec![l.ffn_norm.len()],
                l.ffn_norm.clone(),
            ));
        }
        tensors.push((
            hf_name(TensorName::FinalNorm),
            vec![w.final_norm.len()],
            w.final_norm.clone(),
        ));

        let views = tensors
            .iter()
            .map(|(name, shape, data)| {
                TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
                    .map(|v| (name.clone(), v))
                    .map_err(st_err)
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize_to_file(views, None, &dir.join(WEIGHTS)).map_err(st_err)?;
        if let Some(tok) = &self.tokenizer {
            tok.save_hf(dir)?;
        }
        Ok(())
    }
}

/// Undoes GGUF's Q/K row permutation: within each head, GGUF row `2i + s` is Hugging Face
/// row `s * head_dim / 2 + i`.
fn unpermute_rows(data: &mut [f32], head_dim: usize, cols: usize) {
    let half = head_dim / 2;
    for head in data.chunks_exact_mut(head_dim * cols) {
        let src = head.to_vec();
        for i in 0..half {
            for s in 0..2 {
                let (from, to) = ((2 * i + s) * cols, (s * half + i) * cols);
                head[to..to + cols].copy_from_slice(&src[from..from + cols]);
            }
        }
    }
}
