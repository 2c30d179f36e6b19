//! The weights of a decoder, with Q/K/V fused into one matrix and gate/up into another so
//! each becomes one matrix product. Held as the file's own quantized blocks
//! ([`WeightDType::Native`]) or dequantized to f32 or bf16.
//!
//! Every format (GGUF, safetensors, random) is a [`TensorSource`] that fills a tensor,
//! named by a format-neutral [`TensorName`], into an f32 buffer of the expected shape, and
//! may hand over its quantized blocks as they are stored.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::quant::{dequantize, GgmlType};
use half::bf16;
use pagedattn_kernels::{PackedMatrix, QuantMatrix, QuantType};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use LayerTensor as T;

/// Element type weights are kept in after loading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDType {
    /// 32-bit floats: exact dequantization.
    #[default]
    F32,
    /// bfloat16: half the memory; products widen tiles to f32 on the fly.
    Bf16,
    /// The file's own types: quantized matrices (`Q4_0`, `Q4_1`, `Q8_0`, `Q4_K`, `Q5_K`,
    /// `Q6_K`) stay as their blocks and are multiplied with int8 activations (a fused
    /// projection whose parts have different types keeps each part's); 16/32-bit matrices
    /// are held as bf16.
    Native,
}

impl WeightDType {
    /// The name the command line uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Native => "native",
        }
    }
}

/// A `[rows, cols]` matrix; linear layers are `[out, in]`, as in PyTorch. Held packed in
/// panels of output features (see [`PackedMatrix`]), the layout the matrix products read.
#[derive(Clone)]
pub struct Matrix {
    store: Store,
}

#[derive(Clone, Debug)]
pub(crate) enum Store {
    F32(PackedMatrix<f32>),
    Bf16(PackedMatrix<bf16>),
    Quant(QuantMatrix),
    /// Row blocks of different quantized types (a fused projection: Q4_K queries over
    /// Q6_K values, as Q4_K_M files mix them), multiplied part by part.
    Stacked(Vec<QuantMatrix>),
}

impl std::fmt::Debug for Matrix {
    // The values would be megabytes of output; the shape and type say what it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Matrix[{}x{}, {}]",
            self.rows(),
            self.cols(),
            self.dtype_name()
        )
    }
}

impl Matrix {
    /// Packs row-major `data` (`rows * cols` long, `cols > 0`; both come from the model's
    /// configuration, checked before any buffer is allocated).
    pub(crate) fn new(rows: usize, cols: usize, data: &[f32], dtype: WeightDType) -> Self {
        const CHECKED: &str = "the shape was checked above";
        assert!(cols > 0 && data.len() == rows * cols, "matrix shape");
        let store = match dtype {
            WeightDType::F32 => Store::F32(PackedMatrix::pack(data, cols).expect(CHECKED)),
            WeightDType::Bf16 | WeightDType::Native => {
                Store::Bf16(PackedMatrix::from_f32(data, cols).expect(CHECKED))
            }
        };
        Self { store }
    }

    /// A matrix of quantized blocks, multiplied as they are.
    pub(crate) fn quantized(q: QuantMatrix) -> Self {
        Self {
            store: Store::Quant(q),
        }
    }

    /// Row blocks of quantized matrices of different types, stacked (same columns).
    pub(crate) fn stacked(parts: Vec<QuantMatrix>) -> Self {
        assert!(
            !parts.is_empty() && parts.iter().all(|p| p.cols() == parts[0].cols()),
            "stacked parts share their columns"
        );
        Self {
            store: Store::Stacked(parts),
        }
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        match &self.store {
            Store::F32(p) => p.rows(),
            Store::Bf16(p) => p.rows(),
            Store::Quant(q) => q.rows(),
            Store::Stacked(parts) => parts.iter().map(QuantMatrix::rows).sum(),
        }
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        match &self.store {
            Store::F32(p) => p.cols(),
            Store::Bf16(p) => p.cols(),
            Store::Quant(q) => q.cols(),
            Store::Stacked(parts) => parts[0].cols(),
        }
    }

    /// The element type it is held in (`f32`, `bf16`, a block type such as `Q4_1`, or
    /// `mixed` for row blocks of several block types).
    pub fn dtype_name(&self) -> &'static str {
        match &self.store {
            Store::F32(_) => "f32",
            Store::Bf16(_) => "bf16",
            Store::Quant(q) => q.ty().name(),
            Store::Stacked(_) => "mixed",
        }
    }

    /// Whether its products run on the int8 path (quantized blocks).
    pub fn is_quantized(&self) -> bool {
        matches!(self.store, Store::Quant(_) | Store::Stacked(_))
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match &self.store {
            Store::F32(p) => p.bytes(),
            Store::Bf16(p) => p.bytes(),
            Store::Quant(q) => q.bytes(),
            Store::Stacked(parts) => parts.iter().map(QuantMatrix::bytes).sum(),
        }
    }

    /// Copies row `r` into `out` as f32; `r < rows` and `out.len() == cols` (callers check
    /// token ids against the vocabulary first).
    pub(crate) fn row_into(&self, r: usize, out: &mut [f32]) {
        let done = match &self.store {
            Store::F32(p) => p.row_into(r, out),
            Store::Bf16(p) => p.row_into(r, out),
            Store::Quant(q) => q.row_into(r, out),
            Store::Stacked(parts) => {
                let mut r = r;
                let mut done = Err(pagedattn_kernels::KernelError::InvalidShape(format!(
                    "row {r} past the stacked parts"
                )));
                for p in parts {
                    if r < p.rows() {
                        done = p.row_into(r, out);
                        break;
                    }
                    r -= p.rows();
                }
                done
            }
        };
        assert!(done.is_ok(), "{done:?}");
    }

    /// Rows `start..end` as f32.
    pub(crate) fn rows_f32(&self, start: usize, end: usize) -> Vec<f32> {
        let cols = self.cols();
        let mut out = vec![0.0; (end - start) * cols];
        for (r, o) in (start..end).zip(out.chunks_exact_mut(cols.max(1))) {
            self.row_into(r, o);
        }
        out
    }
}

/// What a tensor is, independent of any file format's naming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorName {
    /// Token embedding `[vocab, hidden]`.
    Embed,
    /// Final RMSNorm weight `[hidden]`.
    FinalNorm,
    /// Untied LM head `[vocab, hidden]`.
    LmHead,
    /// A per-layer tensor.
    Layer(usize, LayerTensor),
}

/// The tensors of one decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerTensor {
    /// RMSNorm before attention.
    AttnNorm,
    /// Query projection `[q_dim, hidden]`.
    Q,
    /// Key projection `[kv_dim, hidden]`.
    K,
    /// Value projection `[kv_dim, hidden]`.
    V,
    /// Attention output projection `[hidden, q_dim]`.
    O,
    /// RMSNorm before the MLP.
    FfnNorm,
    /// SwiGLU gate `[ffn, hidden]`.
    Gate,
    /// SwiGLU up `[ffn, hidden]`.
    Up,
    /// SwiGLU down `[hidden, ffn]`.
    Down,
    /// Query bias `[q_dim]` (Qwen2).
    QBias,
    /// Key bias `[kv_dim]` (Qwen2).
    KBias,
    /// Value bias `[kv_dim]` (Qwen2).
    VBias,
}

/// A provider of tensors in f32.
pub trait TensorSource {
    /// Checks the tensor exists with `shape` (`[rows, cols]` or `[len]`). Called before any
    /// buffer for it is allocated, so sizes from a corrupt config are never allocated.
    fn check(&self, name: TensorName, shape: &[usize]) -> Result<()>;

    /// Fills `out` with the tensor, which must have `shape`.
    fn fill(&mut self, name: TensorName, shape: &[usize], out: &mut [f32]) -> Result<()>;

    /// The tensor's quantized blocks as stored (row-major `[rows, cols / 32]` blocks), if
    /// it is held in a type the products read directly (`shape` checked first).
    fn blocks(&self, _name: TensorName, _shape: &[usize]) -> Result<Option<(QuantType, Vec<u8>)>> {
        Ok(None)
    }
}

/// Per-layer weights.
#[derive(Clone, Debug)]
pub(crate) struct LayerWeights {
    pub attn_norm: Vec<f32>,
    /// Q, K and V rows stacked: `[q_dim + 2 * kv_dim, hidden]`.
    pub wqkv: Matrix,
    /// Q, K and V biases stacked (`q_dim + 2 * kv_dim`), for architectures that have them.
    pub qkv_bias: Option<Vec<f32>>,
    pub wo: Matrix,
    pub ffn_norm: Vec<f32>,
    /// Gate and up rows stacked: `[2 * ffn, hidden]`.
    pub w_gate_up: Matrix,
    pub w_down: Matrix,
}

/// All weights of a decoder.
#[derive(Clone, Debug)]
pub(crate) struct Weights {
    pub embed: Matrix,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// `None` when tied to `embed`.
    pub lm_head: Option<Matrix>,
}

impl Weights {
    pub(crate) fn load(
        c: &ModelConfig,
        src: &mut dyn TensorSource,
        dtype: WeightDType,
    ) -> Result<Self> {
        let (h, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let matrix = |src: &mut dyn TensorSource,
                      parts: &[(TensorName, usize)],
                      cols: usize|
         -> Result<Matrix> {
            for &(name, r) in parts {
                src.check(name, &[r, cols])?;
            }
            if dtype == WeightDType::Native {
                // Every part stored in a quantized type: kept as blocks (one matrix when the
                // types agree, else one per part).
                let mut blocks = Vec::with_capacity(parts.len());
                for &(name, r) in parts {
                    match src.blocks(name, &[r, cols])? {
                        Some(b) => blocks.push((r, b)),
                        None => break,
                    }
                }
                if blocks.len() == parts.len() {
                    let ty0 = blocks[0].1 .0;
                    if blocks.iter().all(|(_, (ty, _))| *ty == ty0) {
                        let rows = blocks.iter().map(|b| b.0).sum();
                        let bytes: Vec<u8> = blocks.into_iter().flat_map(|(_, (_, b))| b).collect();
                        return Ok(Matrix::quantized(QuantMatrix::new(
                            ty0, rows, cols, &bytes,
                        )?));
                    }
                    let parts = blocks
                        .into_iter()
                        .map(|(r, (ty, b))| QuantMatrix::new(ty, r, cols, &b))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    return Ok(Matrix::stacked(parts));
                }
            }
            let rows: usize = parts.iter().map(|p| p.1).sum();
            let mut data = vec![0.0; rows * cols];
            let mut at = 0;
            for &(name, r) in parts {
                src.fill(name, &[r, cols], &mut data[at..at + r * cols])?;
                at += r * cols;
            }
            Ok(Matrix::new(rows, cols, &data, dtype))
        };
        let vector_of = |src: &mut dyn TensorSource, name: TensorName, len: usize| {
            src.check(name, &[len])?;
            let mut out = vec![0.0; len];
            src.fill(name, &[len], &mut out)?;
            Ok::<_, ModelError>(out)
        };
        let vector = |src: &mut dyn TensorSource, name: TensorName| vector_of(src, name, h);
        let embed = matrix(src, &[(TensorName::Embed, v)], h)?;
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let l = |t| TensorName::Layer(i, t);
            layers.push(LayerWeights {
                attn_norm: vector(src, l(T::AttnNorm))?,
                wqkv: matrix(
                    src,
                    &[
                        (l(T::Q), c.q_dim()),
                        (l(T::K), c.kv_dim()),
                        (l(T::V), c.kv_dim()),
                    ],
                    h,
                )?,
                qkv_bias: if c.architecture.qkv_bias() {
                    let mut b = vector_of(src, l(T::QBias), c.q_dim())?;
                    b.extend(vector_of(src, l(T::KBias), c.kv_dim())?);
                    b.extend(vector_of(src, l(T::VBias), c.kv_dim())?);
                    Some(b)
                } else {
                    None
                },
                wo: matrix(src, &[(l(T::O), h)], c.q_dim())?,
                ffn_norm: vector(src, l(T::FfnNorm))?,
                w_gate_up: matrix(src, &[(l(T::Gate), f), (l(T::Up), f)], h)?,
                w_down: matrix(src, &[(l(T::Down), h)], f)?,
            });
        }
        let final_norm = vector(src, TensorName::FinalNorm)?;
        let lm_head = if c.tie_embeddings {
            None
        } else {
            Some(matrix(src, &[(TensorName::LmHead, v)], h)?)
        };
        Ok(Self {
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }

    /// Bytes held by all weights.
    pub(crate) fn bytes(&self) -> usize {
        let layer = |l: &LayerWeights| {
            l.wqkv.bytes()
                + l.wo.bytes()
                + l.w_gate_up.bytes()
                + l.w_down.bytes()
                + 4 * (l.attn_norm.len()
                    + l.ffn_norm.len()
                    + l.qkv_bias.as_ref().map_or(0, Vec::len))
        };
        self.embed.bytes()
            + self.layers.iter().map(layer).sum::<usize>()
            + 4 * self.final_norm.len()
            + self.lm_head.as_ref().map_or(0, Matrix::bytes)
    }

    /// The LM head (the embedding when tied).
    pub(crate) fn head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

/// Tensors from a GGUF file (llama.cpp naming), dequantized as they are read.
pub(crate) struct GgufSource<'a>(pub &'a GgufFile);

impl GgufSource<'_> {
    fn find(&self, name: TensorName, shape: &[usize]) -> Result<&crate::gguf::TensorInfo> {
        let key = gguf_name(name);
        let t = self
            .0
            .tensor(&key)
            .ok_or_else(|| ModelError::MissingTensor(key.clone()))?;
        // GGUF lists the fastest dimension first; reverse to compare with [rows, cols].
        let found: Vec<usize> = t.dims.iter().rev().copied().collect();
        if found != shape {
            return Err(ModelError::ShapeMismatch {
                name: key,
                expected: shape.to_vec(),
                found,
            });
        }
        Ok(t)
    }
}

impl TensorSource for GgufSource<'_> {
    fn check(&self, name: TensorName, shape: &[usize]) -> Result<()> {
        self.find(name, shape).map(|_| ())
    }

    fn fill(&mut self, name: TensorName, shape: &[usize], out: &mut [f32]) -> Result<()> {
        let t = self.find(name, shape)?;
        dequantize(t.kind, self.0.tensor_bytes(t), out)
    }

    fn blocks(&self, name: TensorName, shape: &[usize]) -> Result<Option<(QuantType, Vec<u8>)>> {
        let t = self.find(name, shape)?;
        let GgmlType::Quant(ty) = t.kind else {
            return Ok(None);
        };
        Ok(Some((ty, self.0.tensor_bytes(t).to_vec())))
    }
}

fn gguf_name(name: TensorName) -> String {
    match name {
        TensorName::Embed => "token_embd.weight".into(),
        TensorName::FinalNorm => "output_norm.weight".into(),
        TensorName::LmHead => "output.weight".into(),
        TensorName::Layer(i, t) => {
            let s = match t {
                LayerTensor::AttnNorm => "attn_norm",
                LayerTensor::Q => "attn_q",
                LayerTensor::K => "attn_k",
                LayerTensor::V => "attn_v",
                LayerTensor::O => "attn_output",
                LayerTensor::FfnNorm => "ffn_norm",
                LayerTensor::Gate => "ffn_gate",
                LayerTensor::Up => "ffn_up",
                LayerTensor::Down => "ffn_down",
                LayerTensor::QBias => return format!("blk.{i}.attn_q.bias"),
                LayerTensor::KBias => return format!("blk.{i}.attn_k.bias"),
                LayerTensor::VBias => return format!("blk.{i}.attn_v.bias"),
            };
            format!("blk.{i}.{s}.weight")
        }
    }
}

/// Every tensor a model of config `c` reads.
pub(crate) fn tensor_names(c: &ModelConfig) -> Vec<TensorName> {
    let mut names = vec![TensorName::Embed, TensorName::FinalNorm];
    if !c.tie_embeddings {
        names.push(TensorName::LmHead);
    }
    let mut per_layer = vec![
        T::AttnNorm,
        T::Q,
        T::K,
        T::V,
        T::O,
        T::FfnNorm,
        T::Gate,
        T::Up,
        T::Down,
    ];
    if c.architecture.qkv_bias() {
        per_layer.extend([T::QBias, T::KBias, T::VBias]);
    }
    for i in 0..c.num_layers {
        names.extend(per_layer.iter().map(|&t| TensorName::Layer(i, t)));
    }
    names
}

/// Refuses a GGUF file holding a tensor that config `c` does not read: a feature of the
/// architecture this crate does not implement (an output bias, a different norm), which
/// would otherwise be silently left out. llama.cpp refuses such files the same way.
pub(crate) fn check_gguf_tensors(file: &GgufFile, c: &ModelConfig) -> Result<()> {
    let used: std::collections::HashSet<String> =
        tensor_names(c).into_iter().map(gguf_name).collect();
    for t in &file.tensors {
        if !used.contains(&t.name) && t.name != crate::config::ROPE_FREQS {
            return Err(ModelError::InvalidConfig(format!(
                "tensor {} is not part of architecture {} as implemented here; refused rather than ignored",
                t.name,
                c.architecture.name()
            )));
        }
    }
    Ok(())
}

/// Seeded random weights: uniform with standard deviation 0.02 (norms are 1), as a
/// freshly initialized Llama; enough to exercise every code path and time it.
pub(crate) struct RandomSource(pub StdRng);

impl RandomSource {
    pub(crate) fn new(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }
}

impl TensorSource for RandomSource {
    fn check(&self, _name: TensorName, _shape: &[usize]) -> Result<()> {
        Ok(())
    }

    fn fill(&mut self, name: TensorName, _shape: &[usize], out: &mut [f32]) -> Result<()> {
        let is_norm = matches!(
            name,
            TensorName::FinalNorm
                | TensorName::Layer(_, LayerTensor::AttnNorm | LayerTensor::FfnNorm)
        );
        if is_norm {
            for x in out.iter_mut() {
                *x = 1.0 + self.0.random_range(-0.1..0.1);
            }
        } else {
            // Uniform on [-a, a] has standard deviation a / sqrt(3).
            let a = 0.02 * 3f32.sqrt();
            for x in out.iter_mut() {
                *x = self.0.random_range(-a..a);
            }
        }
        Ok(())
    }
}
