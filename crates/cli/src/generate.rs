//! `pagedattn generate`: run a model on one or more prompts through the continuous-batching
//! engine over a paged KV cache. One prompt streams its continuation to stdout as tokens
//! are made; several run as one batched job and print each completion, then a summary.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use pagedattn_engine::{Engine, EngineConfig, KvPolicy, Request, SamplingParams};
use pagedattn_kernels::DType;
use pagedattn_model::{LoadOptions, Model, TokenStream};
use pagedattn_runner::ModelExecutor;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `pagedattn generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// A `.gguf` file, or a Hugging Face directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// A prompt; repeat the flag for several prompts, run as one batch.
    #[arg(long)]
    pub prompt: Vec<String>,
    /// A file with one prompt per line (added to any --prompt).
    #[arg(long)]
    pub prompts_file: Option<PathBuf>,
    /// Wrap each prompt as one ChatML user turn (with the model's default system prompt).
    #[arg(long)]
    pub chat: bool,
    /// Most tokens to generate per prompt (stops earlier at end-of-sequence).
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
    /// RNG seed for sampling (prompt i uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weights: native (a GGUF file's quantized blocks; other matrices bf16), bf16 or f32.
    #[arg(long, default_value = "native")]
    pub weights: String,
    /// KV memory budget, e.g. 256MiB or 1GB.
    #[arg(long, default_value = "256MiB")]
    pub kv_budget: String,
    /// Print load time and speeds to stderr when done.
    #[arg(long)]
    pub stats: bool,
}

/// Runs `pagedattn generate`. Every error is one line naming its cause.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let mut texts = args.prompt.clone();
    if let Some(f) = &args.prompts_file {
        let body =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        texts.extend(
            body.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    if texts.is_empty() {
        bail!("give at least one --prompt or a --prompts-file");
    }
    let dtype = crate::flags::parse_weights(&args.weights)?;
    let kv_budget = crate::flags::parse_bytes(&args.kv_budget).context("--kv-budget")?;
    let t_load = Instant::now();
    let model = Model::load(&args.model, LoadOptions { dtype })
        .map_err(|e| anyhow!("cannot load model {}: {e}", args.model.display()))?;
    let load_s = t_load.elapsed().as_secs_f64();
    let tok = model
        .require_tokenizer()
        .map_err(|e| anyhow!("{e}"))?
        .clone();
    let eos = tok.eos_id();
    let prompts = texts
        .iter()
        .map(|t| {
            let text = if args.chat {
                tok.chat_prompt(t)
            } else {
                t.clone()
            };
            tok.encode_prompt(&text).map_err(|e| anyhow!("{e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    // The longest sequence this job can make; the KV budget must hold one of them.
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) + args.max_tokens;
    let max_len = longest.min(model.config().max_context);
    let model = Arc::new(model);
    let exec = ModelExecutor::new(model, DType::F32);
    let mut config = EngineConfig::new(KvPolicy::Paged, kv_budget);
    config.max_model_len = Some(max_len);
    let mut engine = Engine::new(exec, config).map_err(|e| anyhow!("{e}"))?;
    // One prompt's output is streamed, decoded after the prompt's last tokens.
    let mut stream = TokenStream::after(
        Arc::new(tok.clone()),
        prompts.first().map_or(&[][..], Vec::as_slice),
    );
    for (i, p) in prompts.into_iter().enumerate() {
        let params = SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            seed: Some(args.seed.wrapping_add(i as u64)),
            ..SamplingParams::greedy(args.max_tokens)
        };
        engine
            .add_request(Request::new(i as u64, p, params))
            .map_err(|e| anyhow!("prompt {}: {e}", i + 1))?;
    }
    let single = texts.len() == 1;
    let mut outputs: Vec<Vec<u32>> = vec![Vec::new(); texts.len()];
    let mut stdout = std::io::stdout().lock();
    let t0 = Instant::now();
    while engine.has_unfinished() {
        for o in engine.step().map_err(|e| anyhow!("{e}"))? {
            for id in o
                .new_tokens
                .into_iter()
                .filter(|&t| Some(t) != eos && !tok.end_of_turn_ids().contains(&t))
            {
                outputs[o.request.0 as usize].push(id);
                if single {
                    if let Some(piece) = stream.push(id).map_err(|e| anyhow!("{e}"))? {
                        stdout
                            .write_all(piece.as_bytes())
                            .and_then(|()| stdout.flush())
                            .map_err(|e| anyhow!("stdout: {e}"))?;
                    }
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if single {
        writeln!(stdout).map_err(|e| anyhow!("stdout: {e}"))?;
    } else {
        for (i, out) in outputs.iter().enumerate() {
            let text = tok.decode(out).map_err(|e| anyhow!("{e}"))?;
            writeln!(stdout, "[{}] {}{}", i + 1, texts[i], text)
                .map_err(|e| anyhow!("stdout: {e}"))?;
        }
    }
    let generated: usize = outputs.iter().map(Vec::len).sum();
    let peak_kv = engine
        .step_metrics()
        .iter()
        .map(|s| s.kv_held_slots)
        .max()
        .unwrap_or(0);
    let per_token = engine.spec().kv_bytes_per_token;
    if !single || args.stats {
        eprintln!(
            "{} requests, {generated} tokens in {secs:.2} s ({:.1} tokens/s), peak KV {:.1} MiB; model load {load_s:.2} s",
            texts.len(),
            generated as f64 / secs.max(1e-9),
            (peak_kv as u64 * per_token) as f64 / (1024.0 * 1024.0),
        );
    }
    Ok(())
}
