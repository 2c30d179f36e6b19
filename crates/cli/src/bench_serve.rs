//! `pagedattn bench serve`: the serving benchmark — one workload through each KV policy at
//! the same KV budget, real or simulated execution, reported as a table, JSON and plots.
//! With `--backend openai` the same workload goes over HTTP to an OpenAI-compatible server
//! instead, measured and reported the same way.

use crate::flags::{parse_bytes, parse_kv_dtype, parse_rates, parse_weights};
use crate::model_file::model_or_default;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use pagedattn_bench::driver::run_policy;
use pagedattn_bench::openai::{run_openai_detailed, OpenAiBackend};
use pagedattn_bench::report::{relate_to_paged, table, PolicyReport};
use pagedattn_bench::sim::{GpuPreset, SimulatedExecutor, PRESETS};
use pagedattn_bench::workload::{self, Arrivals, Lengths, WorkloadRequest, WorkloadSpec};
use pagedattn_engine::{EngineConfig, KvPolicy, SchedulerConfig};
use pagedattn_model::{LoadOptions, Model, WeightDType};
use pagedattn_runner::ModelExecutor;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// This engine, once per KV policy.
    InProcess,
    /// An OpenAI-compatible server at --url.
    Openai,
}

/// How an in-process step is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Exec {
    /// The model on this CPU.
    Real,
    /// A GPU cost model (--gpu); the scheduler and block manager run for real.
    Simulated,
}

impl Exec {
    fn name(self) -> &'static str {
        match self {
            Self::Real => "real",
            Self::Simulated => "simulated",
        }
    }
}

/// `--policies`: one KV policy by name.
fn parse_policy(s: &str) -> std::result::Result<KvPolicy, String> {
    s.trim().parse()
}

/// Flags of `pagedattn bench serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the workload runs; with openai, --policies and the model and engine flags are
    /// ignored.
    #[arg(long, value_enum, default_value_t = Backend::InProcess)]
    backend: Backend,
    /// Server for --backend openai: plain http, e.g. http://127.0.0.1:8000 (a trailing /v1
    /// is accepted).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Model name to send with --backend openai (default: the first model the server's
    /// GET /v1/models lists).
    #[arg(long, alias = "model-name")]
    served_model_name: Option<String>,
    /// With --backend openai, seconds a request may take from sending to its last token;
    /// a request past it counts as failed.
    #[arg(long, default_value_t = 600.0)]
    request_timeout: f64,
    /// With --backend openai, prompt token ids are drawn below this (default 49152,
    /// SmolLM2's vocabulary: the same workload a real in-process run draws). In-process
    /// runs take the model's.
    #[arg(long)]
    vocab_size: Option<usize>,
    /// sharegpt-like, alpaca-like, prefix-shared or uniform.
    #[arg(long, default_value = "sharegpt-like")]
    workload: String,
    /// Request lengths (and arrival times) from a CSV trace instead of a synthetic workload.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Requests to run (default: 16 for real execution, 1000 simulated).
    #[arg(long)]
    requests: Option<usize>,
    /// Requests per second, Poisson arrivals; a comma list runs a sweep; "inf" (default):
    /// all at once ("trace": the trace's timestamps).
    #[arg(long, default_value = "inf")]
    rate: String,
    /// KV memory budget, e.g. 64MiB or 12GB (default: 3 x max-model-len tokens of KV, or
    /// the GPU preset's KV memory when simulated).
    #[arg(long)]
    kv_budget: Option<String>,
    /// Comma list of paged, paged-prefix, contiguous-max, contiguous-pow2, contiguous-oracle.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = parse_policy,
        default_value = "paged,contiguous-max,contiguous-pow2,contiguous-oracle"
    )]
    policies: Vec<KvPolicy>,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// Longest prompt + output.
    #[arg(long, default_value_t = 2048)]
    max_model_len: usize,
    /// Shared prefix length for the prefix-shared workload.
    #[arg(long, default_value_t = 512)]
    prefix_len: usize,
    /// Distinct shared prefixes (conversations) of the prefix-shared workload; request i
    /// belongs to conversation i mod N.
    #[arg(long, default_value_t = 1)]
    prefix_groups: usize,
    /// With --backend openai, send each request's conversation (prefix-shared workload)
    /// in this header, e.g. X-Session-Id, so a load balancer can keep a conversation on
    /// one replica.
    #[arg(long)]
    session_header: Option<String>,
    /// How in-process steps are computed.
    #[arg(long, value_enum, default_value_t = Exec::Real)]
    exec: Exec,
    /// Cost-model preset (a GPU or this project's CPU, and a model) for simulated
    /// execution.
    #[arg(
        long,
        default_value = "a100-40gb:opt-13b",
        value_parser = clap::builder::PossibleValuesParser::new(PRESETS.map(|p| p.name))
    )]
    gpu: String,
    /// What-if for simulated execution: the share of peak FLOP/s the products reach,
    /// instead of the preset's (0 < F <= 1).
    #[arg(long)]
    flops_efficiency: Option<f64>,
    /// What-if for simulated execution: whether weight streaming and arithmetic overlap
    /// (true) or add up (false), instead of the preset's.
    #[arg(long)]
    overlap: Option<bool>,
    /// Model for real execution: a .gguf file or a Hugging Face directory (default:
    /// models/SmolLM2-135M-Instruct.Q4_1.gguf, fetched when missing).
    #[arg(long)]
    model: Option<PathBuf>,
    /// K/V storage type for real execution: f32, f16 or bf16 (16-bit by default, as
    /// serving engines store K/V in the model's 16-bit type).
    #[arg(long, default_value = "bf16")]
    kv_dtype: String,
    /// Weight type for real execution: native (a GGUF file's quantized blocks, multiplied
    /// with int8 activations; other matrices bf16), bf16 or f32.
    #[arg(long, default_value = "native")]
    weights: String,
    /// Free blocks kept per running sequence when admitting (paged), until the first
    /// request finishes (default 12).
    #[arg(long)]
    headroom_blocks: Option<usize>,
    /// Afterwards, the headroom per running sequence in percent of the estimated mean
    /// output length (paged; default 20).
    #[arg(long)]
    headroom_percent: Option<usize>,
    /// Sequences per step, at most.
    #[arg(long, default_value_t = 256)]
    max_num_seqs: usize,
    /// Tokens per step, at most.
    #[arg(long)]
    max_num_batched_tokens: Option<usize>,
    /// Workload seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Read the workload from a JSONL file (as written by --save-workload).
    #[arg(long)]
    load_workload: Option<PathBuf>,
    /// Write the workload to a JSONL file.
    #[arg(long)]
    save_workload: Option<PathBuf>,
    /// Write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write SVG plots into this directory.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `pagedattn bench serve`.
pub fn run(args: &ServeArgs) -> Result<()> {
    if args.max_model_len < 2 {
        bail!(
            "--max-model-len must be at least 2 (a prompt token and an output token), not {}",
            args.max_model_len
        );
    }
    if args.requests == Some(0) {
        bail!("--requests must be at least 1");
    }
    if args.block_size == 0 {
        bail!("--block-size must be at least 1");
    }
    if args.backend == Backend::Openai {
        return run_server(args);
    }
    if args.vocab_size.is_some() {
        bail!("--vocab-size applies to --backend openai (in-process runs take the model's)");
    }
    let policies = &args.policies;
    let rates = parse_rates(&args.rate)?;
    let simulated = args.exec == Exec::Simulated;
    let mut all = Vec::new();
    let (model_name, kv_budget, requests);
    if simulated {
        // Clap checked the name against the presets.
        let preset = GpuPreset::by_name(&args.gpu)
            .with_context(|| format!("unknown --gpu {:?}", args.gpu))?;
        let mut preset = preset.clone();
        if let Some(f) = args.flops_efficiency {
            if !(f > 0.0 && f <= 1.0) {
                bail!("--flops-efficiency must be in (0, 1], not {f}");
            }
            preset.flops_efficiency = f;
        }
        if let Some(o) = args.overlap {
            preset.overlap = o;
        }
        let preset = &preset;
        model_name = if args.flops_efficiency.is_some() || args.overlap.is_some() {
            format!(
                "{} (FLOP efficiency {}, overlap {})",
                preset.name, preset.flops_efficiency, preset.overlap
            )
        } else {
            preset.name.to_string()
        };
        kv_budget = args
            .kv_budget
            .as_deref()
            .map_or(Ok(preset.kv_budget_bytes), parse_bytes)?;
        requests = args.requests.unwrap_or(1000);
        for rate in &rates {
            let reqs = build_workload(args, *rate, requests, preset.vocab_size)?;
            let reports = run_all(args, policies, kv_budget, &reqs, *rate, || {
                SimulatedExecutor::new(preset.clone(), args.max_model_len)
            })?;
            print_header(args, &reqs, *rate, kv_budget, &model_name);
            print!("{}", table(&reports));
            all.push((*rate, reports));
        }
    } else {
        let dtype = parse_kv_dtype(&args.kv_dtype)?;
        let weights = parse_weights(&args.weights)?;
        // Flags are checked before the model is loaded (or fetched).
        let given_budget = args.kv_budget.as_deref().map(parse_bytes).transpose()?;
        let (model, name) = load_model(args.model.as_deref(), weights)?;
        let model = Arc::new(model);
        if args.max_model_len > model.config().max_context {
            bail!(
                "--max-model-len {} exceeds the model's context of {}",
                args.max_model_len,
                model.config().max_context
            );
        }
        model_name = format!("{name} ({} weights, {} KV)", args.weights, args.kv_dtype);
        let per_token = model.config().kv_shape(dtype).bytes_per_token();
        kv_budget = given_budget.unwrap_or(3 * args.max_model_len as u64 * per_token);
        requests = args.requests.unwrap_or(DEFAULT_REAL_REQUESTS);
        for rate in &rates {
            let reqs = build_workload(args, *rate, requests, model.config().vocab_size)?;
            let reports = run_all(args, policies, kv_budget, &reqs, *rate, || {
                ModelExecutor::new(model.clone(), dtype)
            })?;
            print_header(args, &reqs, *rate, kv_budget, &model_name);
            print!("{}", table(&reports));
            all.push((*rate, reports));
        }
    }
    let config = json!({
        "workload": workload_name(args),
        "requests": requests,
        "kv_budget_bytes": kv_budget,
        "block_size": args.block_size,
        "max_model_len": args.max_model_len,
        "exec": args.exec.name(),
        "model": model_name,
        "seed": args.seed,
    });
    write_outputs(args, &config, &all)
}

/// Prompt token ids of `--backend openai` workloads are drawn below this unless
/// `--vocab-size` says otherwise: SmolLM2's vocabulary, so the requests are those a real
/// in-process run with the default model draws (same generator, same seed).
const DEFAULT_SERVER_VOCAB_SIZE: usize = 49_152;

/// Failed requests whose reason is printed, at most, per run.
const SHOWN_ERRORS: usize = 5;

/// `--backend openai`: the workload of a real run, sent to an OpenAI-compatible server.
fn run_server(args: &ServeArgs) -> Result<()> {
    if args.exec == Exec::Simulated {
        bail!(
            "--exec simulated models a GPU in-process; it cannot be combined with --backend openai"
        );
    }
    let timeout = Duration::try_from_secs_f64(args.request_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .with_context(|| {
            format!(
                "--request-timeout must be a positive number of seconds, not {}",
                args.request_timeout
            )
        })?;
    let mut backend = OpenAiBackend::new(&args.url).map_err(|e| anyhow!("--url: {e}"))?;
    backend.model.clone_from(&args.served_model_name);
    backend.timeout = timeout;
    backend
        .set_session_header(args.session_header.as_deref())
        .map_err(|e| anyhow!("--session-header: {e}"))?;
    let base = backend.base_url()?;
    let vocab_size = args.vocab_size.unwrap_or(DEFAULT_SERVER_VOCAB_SIZE);
    let rates = parse_rates(&args.rate)?;
    let requests = args.requests.unwrap_or(DEFAULT_REAL_REQUESTS);
    let mut all = Vec::new();
    let mut model = String::new();
    for rate in &rates {
        let reqs = build_workload(args, *rate, requests, vocab_size)?;
        let bar = progress(args.quiet, reqs.len(), "openai", *rate);
        let run = run_openai_detailed(&backend, &reqs, |n| bar.set_position(n as u64));
        bar.finish_and_clear();
        let run = run?;
        for (i, why) in run.errors.iter().take(SHOWN_ERRORS) {
            eprintln!("warning: request {i} failed: {why}");
        }
        if run.errors.len() > SHOWN_ERRORS {
            eprintln!(
                "warning: {} more requests failed",
                run.errors.len() - SHOWN_ERRORS
            );
        }
        println!(
            "{}, OpenAI-compatible server {base}, model {} (vocabulary {vocab_size}; --policies and the model and engine flags are ignored)",
            workload_summary(args, &reqs, *rate),
            run.model
        );
        print!("{}", table(std::slice::from_ref(&run.report)));
        model = run.model;
        all.push((*rate, vec![run.report]));
    }
    let config = json!({
        "backend": "openai",
        "workload": workload_name(args),
        "requests": requests,
        "max_model_len": args.max_model_len,
        "url": base,
        "model": model,
        "vocab_size": vocab_size,
        "request_timeout_s": args.request_timeout,
        "seed": args.seed,
    });
    write_outputs(args, &config, &all)
}

/// The JSON report and SVG plots, where asked for.
fn write_outputs(
    args: &ServeArgs,
    config: &serde_json::Value,
    all: &[(Option<f64>, Vec<PolicyReport>)],
) -> Result<()> {
    if let Some(path) = &args.json {
        write_json(path, config, all)?;
    }
    if let Some(dir) = &args.svg {
        pagedattn_bench::plot::write_plots(dir, all).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Requests in a real-execution run unless told otherwise: more than the contiguous
/// reservations hold at the default budget, so the batching effect shows, few enough that
/// the four default policies finish in under 5 minutes on a 2-core machine.
const DEFAULT_REAL_REQUESTS: usize = 16;

/// The model of a real run: `--model`, or SmolLM2-135M-Instruct, fetched when missing.
fn load_model(path: Option<&std::path::Path>, dtype: WeightDType) -> Result<(Model, String)> {
    let p = model_or_default(path)?;
    let model = Model::load(&p, LoadOptions { dtype })
        .with_context(|| format!("loading {}", p.display()))?;
    Ok((model, p.display().to_string()))
}

fn run_all<E: pagedattn_engine::Executor>(
    args: &ServeArgs,
    policies: &[KvPolicy],
    kv_budget: u64,
    reqs: &[WorkloadRequest],
    rate: Option<f64>,
    mut executor: impl FnMut() -> E,
) -> Result<Vec<PolicyReport>> {
    let mut reports = Vec::new();
    for &policy in policies {
        let cfg = engine_config(args, policy, kv_budget);
        let bar = progress(args.quiet, reqs.len(), policy, rate);
        let r = run_policy(executor(), &cfg, reqs, |n| bar.set_position(n as u64))
            .with_context(|| format!("policy {policy}"))?;
        bar.finish_and_clear();
        reports.push(r);
    }
    relate_to_paged(&mut reports);
    Ok(reports)
}

fn workload_name(args: &ServeArgs) -> String {
    args.trace
        .as_ref()
        .map_or(args.workload.clone(), |t| t.display().to_string())
}

/// "N requests (workload; mean prompt P, output O tokens), arrivals".
fn workload_summary(args: &ServeArgs, reqs: &[WorkloadRequest], rate: Option<f64>) -> String {
    let mean = |f: fn(&WorkloadRequest) -> usize| {
        reqs.iter().map(f).sum::<usize>() as f64 / reqs.len() as f64
    };
    format!(
        "{} requests ({}; mean prompt {:.0}, output {:.0} tokens), {}",
        reqs.len(),
        workload_name(args),
        mean(|r| r.prompt.len()),
        mean(|r| r.output_len),
        rate.map_or("all at once".to_string(), |r| if r.is_nan() {
            "trace arrivals".into()
        } else {
            format!("Poisson {r} req/s")
        }),
    )
}

fn print_header(
    args: &ServeArgs,
    reqs: &[WorkloadRequest],
    rate: Option<f64>,
    kv_budget: u64,
    model: &str,
) {
    println!(
        "{}, KV budget {:.1} MiB for every policy, block size {}, {} execution: {}",
        workload_summary(args, reqs, rate),
        kv_budget as f64 / (1024.0 * 1024.0),
        args.block_size,
        args.exec.name(),
        model
    );
}

fn engine_config(args: &ServeArgs, policy: KvPolicy, kv_budget: u64) -> EngineConfig {
    let defaults = SchedulerConfig::default();
    EngineConfig {
        policy,
        kv_budget_bytes: kv_budget,
        block_size: args.block_size,
        max_model_len: Some(args.max_model_len),
        scheduler: SchedulerConfig {
            max_num_seqs: args.max_num_seqs,
            max_num_batched_tokens: args.max_num_batched_tokens.unwrap_or(args.max_model_len),
            headroom_blocks: args.headroom_blocks.unwrap_or(defaults.headroom_blocks),
            headroom_percent: args.headroom_percent.unwrap_or(defaults.headroom_percent),
        },
        keep_history: true,
    }
}

fn build_workload(
    args: &ServeArgs,
    rate: Option<f64>,
    requests: usize,
    vocab_size: usize,
) -> Result<Vec<WorkloadRequest>> {
    let mut reqs = if let Some(p) = &args.load_workload {
        workload::read_jsonl(p)?
    } else {
        let lengths = match &args.trace {
            Some(t) => workload::read_trace(t)?,
            None => match args.workload.as_str() {
                "sharegpt-like" => Lengths::ShareGpt,
                "alpaca-like" => Lengths::Alpaca,
                "prefix-shared" => Lengths::PrefixShared {
                    prefix_len: args.prefix_len,
                    groups: args.prefix_groups,
                },
                "uniform" => Lengths::Uniform {
                    prompt: (16, 512),
                    output: (16, 512),
                },
                w => bail!(
                    "unknown --workload {w:?} (sharegpt-like, alpaca-like, prefix-shared, uniform)"
                ),
            },
        };
        let arrivals = match rate {
            None => Arrivals::AllAtOnce,
            Some(r) if r.is_nan() => Arrivals::FromTrace,
            Some(r) => Arrivals::Poisson(r),
        };
        WorkloadSpec {
            lengths,
            arrivals,
            requests,
            max_len: args.max_model_len,
            max_prompt: 1024.min(args.max_model_len - 1),
            vocab_size,
            seed: args.seed,
        }
        .generate()?
    };
    reqs.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
    if let Some(p) = &args.save_workload {
        workload::write_jsonl(p, &reqs)?;
    }
    Ok(reqs)
}

fn progress(
    quiet: bool,
    n: usize,
    policy: impl std::fmt::Display,
    rate: Option<f64>,
) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>22} [{bar:30}] {pos}/{len} requests {elapsed}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(match rate {
        Some(r) if !r.is_nan() => format!("{policy} @{r}/s"),
        _ => policy.to_string(),
    });
    bar
}

fn write_json(
    path: &PathBuf,
    config: &serde_json::Value,
    all: &[(Option<f64>, Vec<PolicyReport>)],
) -> Result<()> {
    let sweep: Vec<_> = all
        .iter()
        .map(|(rate, p)| json!({ "rate": rate.filter(|r| !r.is_nan()), "policies": p }))
        .collect();
    let doc = json!({ "config": config, "policies": all[0].1, "sweep": sweep });
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::{ServeArgs, DEFAULT_REAL_REQUESTS, PRESETS};
    use clap::Args;

    fn help() -> String {
        ServeArgs::augment_args(clap::Command::new("serve"))
            .term_width(1000)
            .render_long_help()
            .to_string()
    }

    #[test]
    fn the_help_states_the_defaults_the_code_uses() {
        let h = help();
        assert!(
            h.contains(&format!(
                "default: {DEFAULT_REAL_REQUESTS} for real execution"
            )),
            "{h}"
        );
        for p in PRESETS {
            assert!(h.contains(p.name), "--gpu does not list {}", p.name);
        }
        for name in ["in-process", "openai", "real", "simulated"] {
            assert!(h.contains(name), "{name}");
        }
    }
}
