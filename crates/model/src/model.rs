//! The model object: config, weights, tokenizer, and the constructors that load them from a
//! GGUF file, a Hugging Face directory, or a seeded random init.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::rope::Rope;
use crate::tokenizer::Tokenizer;
use crate::weights::{GgufSource, Matrix, RandomSource, WeightDType, Weights};
use pagedattn_kernels::Cpu;
use std::path::Path;

/// How to load weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Element type the weights are kept in after dequantization.
    pub dtype: WeightDType,
}

/// A Llama-family decoder ready to run. `Sync`: one model serves any number of threads;
/// all per-step state lives in the caller's batch and KV store.
#[derive(Clone)]
pub struct Model {
    pub(crate) config: ModelConfig,
    pub(crate) weights: Weights,
    pub(crate) tokenizer: Option<Tokenizer>,
    pub(crate) rope: Rope,
    /// The code path every product and attention call runs on.
    pub(crate) cpu: Cpu,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("weight_bytes", &self.weights.bytes())
            .field("tokenizer", &self.tokenizer.is_some())
            .field("cpu", &self.cpu)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads a `.gguf` file, or a Hugging Face directory (`config.json`,
    /// `model.safetensors`, optional `tokenizer.json`).
    pub fn load(path: &Path, opts: LoadOptions) -> Result<Self> {
        if path.is_dir() {
            return Self::load_hf(path, opts);
        }
        let file = GgufFile::open(path)?;
        Self::from_gguf(&file, opts)
    }

    /// Builds the model (weights and tokenizer) from a parsed GGUF file.
    pub fn from_gguf(file: &GgufFile, opts: LoadOptions) -> Result<Self> {
        let config = ModelConfig::from_gguf(file)?;
        crate::weights::check_gguf_tensors(file, &config)?;
        // The tokenizer first: what it refuses is refused before the weights are read.
        let tokenizer = Tokenizer::from_gguf(file)?;
        let weights = Weights::load(&config, &mut GgufSource(file), opts.dtype)?;
        Ok(Self::assemble(config, weights, Some(tokenizer)))
    }

    /// A model with seeded random weights and no tokenizer, for tests and benchmarks.
    pub fn random(config: ModelConfig, seed: u64, dtype: WeightDType) -> Result<Self> {
        config.validate()?;
        let weights = Weights::load(&config, &mut RandomSource::new(seed), dtype)?;
        Ok(Self::assemble(config, weights, None))
    }

    /// A random model from a built-in config name (`smollm2-135m`, `tiny`).
    pub fn random_named(name: &str, seed: u64, dtype: WeightDType) -> Result<Self> {
        Self::random(ModelConfig::named(name)?, seed, dtype)
    }

    pub(crate) fn assemble(
        config: ModelConfig,
        weights: Weights,
        tokenizer: Option<Tokenizer>,
    ) -> Self {
        let rope = Rope::new(
            config.head_dim,
            config.rope_theta,
            config.rope_style,
            config.rope_scaling.as_ref(),
        );
        Self {
            config,
            weights,
            tokenizer,
            rope,
            cpu: Cpu::selected(),
        }
    }

    /// Shape and hyperparameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The tokenizer, if the model came with one.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The tokenizer, or [`ModelError::NoTokenizer`].
    pub fn require_tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or(ModelError::NoTokenizer)
    }

    /// Replaces the tokenizer.
    pub fn set_tokenizer(&mut self, tokenizer: Option<Tokenizer>) {
        self.tokenizer = tokenizer;
    }

    /// The code path its kernels run on ([`Cpu::selected`] unless set).
    pub fn cpu(&self) -> Cpu {
        self.cpu
    }

    /// Runs its kernels on `cpu` (to compare paths on one model).
    pub fn set_cpu(&mut self, cpu: Cpu) {
        self.cpu = cpu;
    }

    /// Bytes held by the weights.
    pub fn weight_bytes(&self) -> usize {
        self.weights.bytes()
    }

    /// The matrix products of one step, in the order the forward pass runs them: one
    /// layer's (`qkv`, `o`, `gate_up`, `down`; every layer has the same shapes) and the
    /// LM head, each with the number of times a step runs it (the layer count, or 1).
    pub fn products(&self) -> Vec<(&'static str, &Matrix, usize)> {
        let layers = self.weights.layers.len();
        let mut out = Vec::new();
        if let Some(l) = self.weights.layers.first() {
            out.push(("qkv", &l.wqkv, layers));
            out.push(("o", &l.wo, layers));
            out.push(("gate_up", &l.w_gate_up, layers));
            out.push(("down", &l.w_down, layers));
        }
        out.push(("lm_head", self.weights.head(), 1));
        out
    }
}
