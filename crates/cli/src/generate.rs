//! `pagedattn generate`: run a model on one prompt and stream the continuation to stdout.
//!
//! A single sequence on a paged KV cache: the prompt is one prefill, then one decode step
//! per token, with blocks taken in order from a cache sized for prompt + `--max-tokens`.
//! Timing goes to stderr so stdout holds only the generated text.

use anyhow::{anyhow, Result};
use clap::Args;
use pagedattn_kernels::{DType, KvCache, KvCacheConfig};
use pagedattn_kv::BlockId;
use pagedattn_model::{
    Batch, KvLocation, LoadOptions, LogitsFor, Model, ModelError, Sampler, SamplingParams,
    SeqInput, TokenStream, WeightDType,
};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Tokens per KV block.
const BLOCK_SIZE: usize = 16;

/// Arguments of `pagedattn generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// A `.gguf` file, or a Hugging Face directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as one ChatML user turn (with the model's default system prompt).
    #[arg(long)]
    pub chat: bool,
    /// Most tokens to generate (stops earlier at end-of-sequence).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep only the k most likely tokens (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// RNG seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep weights in bf16 instead of f32 (half the memory).
    #[arg(long)]
    pub bf16: bool,
    /// Print token counts and speeds to stderr when done.
    #[arg(long)]
    pub stats: bool,
}

/// Runs `pagedattn generate`. Every error is one line naming its cause.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    let mut sampler = Sampler::new(sampling).map_err(|e| anyhow!("{e}"))?;
    let dtype = if args.bf16 {
        WeightDType::Bf16
    } else {
        WeightDType::F32
    };
    let t_load = Instant::now();
    let model = Model::load(&args.model, LoadOptions { dtype }).map_err(|e| match e {
        // The I/O error names its own file (which may be inside a model directory).
        ModelError::Io { .. } => anyhow!("cannot load model: {e}"),
        e => anyhow!("cannot load model {}: {e}", args.model.display()),
    })?;
    let load_s = t_load.elapsed().as_secs_f64();
    let tok = model.require_tokenizer().map_err(|e| anyhow!("{e}"))?;
    let text = if args.chat {
        tok.chat_prompt(&args.prompt)
    } else {
        args.prompt.clone()
    };
    let prompt = tok.encode(&text).map_err(|e| anyhow!("{e}"))?;
    if prompt.is_empty() {
        return Err(anyhow!("the prompt is empty"));
    }
    let c = model.config();
    let total = (prompt.len() + args.max_tokens).min(c.max_context);
    if prompt.len() >= total {
        return Err(anyhow!(
            "the prompt has {} tokens; the model's context is {}",
            prompt.len(),
            c.max_context
        ));
    }
    let num_blocks = total.div_ceil(BLOCK_SIZE);
    let mut cache = KvCache::new(KvCacheConfig {
        num_layers: c.num_layers,
        num_blocks,
        num_kv_heads: c.num_kv_heads,
        block_size: BLOCK_SIZE,
        head_dim: c.head_dim,
        dtype: DType::F32,
    })
    .map_err(|e| anyhow!("cannot allocate the KV cache: {e}"))?;
    let table: Vec<BlockId> = (0..num_blocks as u32).map(BlockId).collect();

    let mut stream = TokenStream::new(tok);
    let mut stdout = std::io::stdout().lock();
    let (mut pos, mut next_input) = (0usize, prompt.clone());
    let (mut generated, mut prefill_s, t_decode) = (0usize, 0.0, Instant::now());
    let t_prefill = Instant::now();
    while generated < args.max_tokens && pos + next_input.len() <= total {
        let slots: Vec<usize> = (pos..pos + next_input.len())
            .map(|p| table[p / BLOCK_SIZE].index() * BLOCK_SIZE + p % BLOCK_SIZE)
            .collect();
        let mut batch = Batch::new();
        batch.push(SeqInput {
            tokens: &next_input,
            start_pos: pos,
            slots: &slots,
            kv: KvLocation::Paged(&table),
            logits: LogitsFor::Last,
        });
        let logits = model
            .forward(&batch, &mut cache)
            .map_err(|e| anyhow!("forward pass failed: {e}"))?;
        if pos == 0 {
            prefill_s = t_prefill.elapsed().as_secs_f64();
        }
        pos += next_input.len();
        let id = sampler.sample(logits.row(0));
        generated += 1;
        if Some(id) == tok.eos_id() {
            break;
        }
        if let Some(piece) = stream.push(id).map_err(|e| anyhow!("{e}"))? {
            stdout
                .write_all(piece.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| anyhow!("stdout: {e}"))?;
        }
        next_input = vec![id];
    }
    writeln!(stdout).map_err(|e| anyhow!("stdout: {e}"))?;
    if args.stats {
        let decode_s = t_decode.elapsed().as_secs_f64() - prefill_s;
        let decoded = generated.saturating_sub(1);
        eprintln!(
            "load {load_s:.2} s | prompt {} tokens, prefill {:.1} tok/s | generated {generated} tokens, decode {:.1} tok/s",
            prompt.len(),
            prompt.len() as f64 / prefill_s.max(1e-9),
            decoded as f64 / decode_s.max(1e-9),
        );
    }
    Ok(())
}
