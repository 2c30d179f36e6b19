//! `pagedattn serve`: the OpenAI-compatible server on the paged engine.

use crate::flags::{parse_bytes, parse_kv_dtype, parse_weights};
use crate::model_file::model_or_default;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use pagedattn_engine::{EngineConfig, KvPolicy, SchedulerConfig};
use pagedattn_model::{LoadOptions, Model};
use pagedattn_server::ServerOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Flags of `pagedattn serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A .gguf file or a Hugging Face directory (default: models/SmolLM2-135M-Instruct.Q4_1.gguf,
    /// fetched if missing).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// KV cache memory, e.g. 512MiB or 2GB.
    #[arg(long, default_value = "1GiB")]
    kv_budget: String,
    /// Longest prompt + completion (default: the model's context).
    #[arg(long)]
    max_model_len: Option<usize>,
    /// Sequences per step, at most.
    #[arg(long, default_value_t = 256)]
    max_num_seqs: usize,
    /// Tokens per step, at most (prefill chunks + decodes).
    #[arg(long, default_value_t = 2048)]
    max_num_batched_tokens: usize,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// K/V storage: bf16, f16 or f32.
    #[arg(long, default_value = "bf16")]
    kv_dtype: String,
    /// Weights: native (a GGUF file's quantized blocks; other matrices bf16), bf16 or f32.
    #[arg(long, default_value = "native")]
    weights: String,
    /// Reuse the K/V of prompt prefixes seen before.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    prefix_caching: bool,
    /// Answer 503 (Retry-After) while this many requests wait for their first token.
    #[arg(long, default_value_t = 1024)]
    max_waiting: usize,
    /// Require `Authorization: Bearer KEY` on /v1/* (or set PAGEDATTN_API_KEY).
    #[arg(long, env = "PAGEDATTN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The model's name in the API (default: the file name without extension).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Largest request body, e.g. 4MiB (413 beyond).
    #[arg(long, default_value = "4MiB")]
    max_body: String,
    /// Threads for the model's products and attention (default: one per core). Replicas
    /// sharing a machine take a share each.
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds requests in flight may run after SIGINT/SIGTERM before they are aborted.
    #[arg(long, default_value_t = 30.0)]
    shutdown_grace: f64,
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: &ServeArgs) -> Result<()> {
    let kv_dtype = parse_kv_dtype(&args.kv_dtype)?;
    let weights = parse_weights(&args.weights)?;
    if !(args.shutdown_grace.is_finite() && args.shutdown_grace >= 0.0 && args.shutdown_grace < 1e6)
    {
        bail!(
            "--shutdown-grace must be a number of seconds >= 0, not {}",
            args.shutdown_grace
        );
    }
    if let Some(n) = args.threads {
        if n == 0 {
            bail!("--threads must be >= 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow!("--threads: {e}"))?;
    }
    let kv_budget = parse_bytes(&args.kv_budget).context("--kv-budget")?;
    let max_body = usize::try_from(parse_bytes(&args.max_body).context("--max-body")?)
        .map_err(|_| anyhow!("--max-body is too large"))?;
    let path = model_or_default(args.model.as_deref())?;
    let model = Model::load(&path, LoadOptions { dtype: weights })
        .map_err(|e| anyhow!("cannot load model {}: {e}", path.display()))?;
    let cpu = model.cpu();
    let tokenizer = Arc::new(
        model
            .require_tokenizer()
            .map_err(|e| {
                anyhow!(
                    "{}: {e}; the server needs one to read and write text",
                    path.display()
                )
            })?
            .clone(),
    );
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| model_name(&path));
    let config = EngineConfig {
        policy: if args.prefix_caching {
            KvPolicy::PagedPrefixCache
        } else {
            KvPolicy::Paged
        },
        kv_budget_bytes: kv_budget,
        block_size: args.block_size,
        max_model_len: args.max_model_len,
        scheduler: SchedulerConfig {
            max_num_seqs: args.max_num_seqs,
            max_num_batched_tokens: args.max_num_batched_tokens,
            ..SchedulerConfig::default()
        },
        keep_history: false,
    };
    let options = ServerOptions {
        model_name: name.clone(),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        max_waiting: args.max_waiting.max(1),
        max_body_bytes: max_body,
        shutdown_grace: Duration::from_secs_f64(args.shutdown_grace),
    };
    let state = pagedattn_server::start(Arc::new(model), tokenizer, kv_dtype, config, options)
        .map_err(|e| anyhow!("cannot start the engine: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr().context("listener address")?;
        tracing::info!(
            model = %name,
            file = %path.display(),
            weights = %weights.name(),
            kv_dtype = %kv_dtype,
            code_path = %cpu,
            int8_products = %cpu.int8_instruction(),
            bf16_products = %cpu.bf16_instruction(),
            threads = rayon::current_num_threads(),
            max_model_len = state.engine.max_model_len(),
            kv_budget_bytes = kv_budget,
            "serving on http://{local}"
        );
        pagedattn_server::serve(listener, state, pagedattn_server::shutdown_signal())
            .await
            .context("server")?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The served name of a model file: its name without `.gguf`.
fn model_name(path: &Path) -> String {
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    file.strip_suffix(".gguf")
        .map_or(file.clone(), str::to_string)
}
