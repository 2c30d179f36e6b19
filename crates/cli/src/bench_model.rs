//! `pagedattn bench model`: the model step's speed, measured as llama.cpp's `llama-bench`
//! measures it, so the two tables sit side by side (docs/BENCHMARKS.md):
//!
//! - prefill of N tokens (`pp128`, `pp512`): one sequence, the whole prompt in one step,
//!   logits for the last position; tokens/s = N / time;
//! - decode at batch B (`tg128` for B = 1): B sequences, each after its own 128-token prompt
//!   (prefilled, not timed), 128 steps of one token each, logits every step, the next
//!   token fixed (no sampling: the same work whatever the logits); tokens/s = B x 128 /
//!   time. llama-bench's `tg128` starts from an empty context; here the context grows from
//!   128 to 256, a little more attention per step.
//!
//! Each test runs once to warm up, then `--reps` times; mean and standard deviation of
//! tokens/s are reported, as llama-bench does. K/V live in the paged cache (blocks of 16,
//! bf16 by default: llama-bench's cache is f16, the same bytes).
//!
//! Where the step's time goes: the machine's single-thread peaks of the three arithmetic
//! paths (f32 FMA, int8 dot product, bf16 pair dot product) and its DRAM read bandwidth
//! are probed first; each decode batch's step time is shown beside its roofline (the
//! weights and the batch's K/V read once at that bandwidth, or its multiply-adds at the
//! peak of the path the weights use on every thread, whichever is longer); and each of
//! the step's matrix products is timed alone at every batch size, with its share of that
//! peak and of the step (`roofline.rs`). `--svg` draws step time and roofline against
//! batch.

use crate::flags::{parse_kv_dtype, parse_weights};
use crate::machine::cpu_name;
use crate::model_file::model_or_default;
use crate::roofline::{time_products, Peaks, ProductTime, Roofline};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use pagedattn_kernels::{Batch, KvCache, KvLocation, LogitsFor};
use pagedattn_kv::BlockId;
use pagedattn_model::{LoadOptions, Model};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

const BLOCK_SIZE: usize = 16;
/// Prompt before the timed decode steps, and the steps timed.
const DECODE_PROMPT: usize = 128;
const DECODE_STEPS: usize = 128;
/// The mean context of the timed decode steps (the roofline reads this much K/V).
const MEAN_CONTEXT: f64 = (DECODE_PROMPT + DECODE_STEPS / 2) as f64;

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// GGUF file or Hugging Face directory (default: the SmolLM2 file, fetched if missing).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Weights: native (a GGUF file's quantized blocks), bf16 or f32.
    #[arg(long, default_value = "native")]
    pub weights: String,
    /// K/V storage: bf16, f16 or f32.
    #[arg(long, default_value = "bf16")]
    pub kv_dtype: String,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Decode batch sizes (sequences per step), comma-separated.
    #[arg(long, default_value = "1,4,16", value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Prefill lengths in tokens, comma-separated.
    #[arg(long, default_value = "128,512", value_delimiter = ',')]
    pub prefill: Vec<usize>,
    /// Timed repetitions of each test (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also draw step time and its roofline against batch size into this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Skip the machine probes, the roofline and the per-product table.
    #[arg(long)]
    pub no_breakdown: bool,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpu: String,
    threads: usize,
    isa: String,
}

#[derive(Debug, Serialize)]
struct Decode {
    batch: usize,
    tokens_per_s: f64,
    stddev: f64,
    /// Mean time of one step of `batch` sequences.
    step_ms: f64,
    /// The step's roofline (see the module docs), when the machine was probed.
    roofline_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Prefill {
    tokens: usize,
    tokens_per_s: f64,
    stddev: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    model: String,
    weights: String,
    weight_bytes: usize,
    reps: usize,
    peaks: Option<Peaks>,
    decode: Vec<Decode>,
    prefill: Vec<Prefill>,
    products: Vec<ProductTime>,
}

/// Runs `pagedattn bench model`.
pub fn run(args: &ModelArgs) -> Result<()> {
    let weights = parse_weights(&args.weights)?;
    let kv_dtype = parse_kv_dtype(&args.kv_dtype)?;
    if args.reps == 0 {
        bail!("--reps must be >= 1");
    }
    if args.batch.is_empty() || args.batch.iter().any(|&b| b == 0 || b > 256) {
        bail!("--batch sizes must be 1 to 256, not {:?}", args.batch);
    }
    if args.prefill.contains(&0) {
        bail!("--prefill lengths must be >= 1, not {:?}", args.prefill);
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    if threads == 0 {
        bail!("--threads must be >= 1");
    }
    let path = model_or_default(args.model.as_deref())?;
    let model = Model::load(&path, LoadOptions { dtype: weights })
        .map_err(|e| anyhow!("cannot load model {}: {e}", path.display()))?;
    let max_ctx = model.config().max_context;
    let longest = args
        .prefill
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(DECODE_PROMPT + DECODE_STEPS);
    if longest > max_ctx {
        bail!("a test needs {longest} positions; the model's context is {max_ctx}");
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start the thread pool")?;
    let cpu = model.cpu();
    let machine = Machine {
        cpu: cpu_name(),
        threads,
        isa: cpu.to_string(),
    };
    println!(
        "model: {} | weights {} ({:.0} MiB) | K/V {} | {} | {} threads | isa {}",
        path.display(),
        weights.name(),
        model.weight_bytes() as f64 / f64::from(1u32 << 20),
        args.kv_dtype,
        machine.cpu,
        threads,
        machine.isa
    );
    let peaks = (!args.no_breakdown).then(|| pool.install(|| Peaks::probe(cpu)));
    if let Some(p) = &peaks {
        println!(
            "peaks per thread: f32 FMA {:.0} GFLOP/s | int8 dot ({}) {:.0} GMAC/s | bf16 dot {} | DRAM read {:.1} GB/s ({threads} threads)",
            p.fma_gflops,
            cpu.int8_instruction(),
            p.int8_gmacs,
            p.bf16_gmacs
                .map_or_else(|| "none".to_string(), |g| format!("{g:.0} GMAC/s")),
            p.read_gbps
        );
    }
    let roof = peaks.map(|p| Roofline::new(&model, p, threads, kv_dtype, MEAN_CONTEXT));
    println!(
        "{:<10} {:>12} {:>10} {:>10} {:>10}",
        "test", "tokens/s", "± sd", "ms/step", "roofline"
    );
    let mut report = Report {
        machine,
        model: path.display().to_string(),
        weights: weights.name().to_string(),
        weight_bytes: model.weight_bytes(),
        reps: args.reps,
        peaks,
        decode: Vec::new(),
        prefill: Vec::new(),
        products: Vec::new(),
    };
    pool.install(|| -> Result<()> {
        for &n in &args.prefill {
            let mut bench = Bench::new(&model, 1, n, kv_dtype)?;
            let (mean, sd) = repeat(args.reps, || {
                let t = bench.prefill(n)?;
                Ok(n as f64 / t)
            })?;
            println!("{:<10} {mean:>12.1} {sd:>10.1}", format!("pp{n}"));
            report.prefill.push(Prefill {
                tokens: n,
                tokens_per_s: mean,
                stddev: sd,
            });
        }
        for &b in &args.batch {
            let mut bench = Bench::new(&model, b, DECODE_PROMPT + DECODE_STEPS, kv_dtype)?;
            let (mean, sd) = repeat(args.reps, || {
                bench.prefill(DECODE_PROMPT)?;
                let t = bench.decode(DECODE_PROMPT, DECODE_STEPS)?;
                Ok((b * DECODE_STEPS) as f64 / t)
            })?;
            let name = if b == 1 {
                format!("tg{DECODE_STEPS}")
            } else {
                format!("tg{DECODE_STEPS} x{b}")
            };
            let step_ms = b as f64 / mean * 1e3;
            let roofline_ms = roof.as_ref().map(|r| r.step_ms(b));
            let shown = roofline_ms.map_or_else(String::new, |r| format!("{r:.2}"));
            println!("{name:<10} {mean:>12.1} {sd:>10.1} {step_ms:>10.2} {shown:>10}");
            report.decode.push(Decode {
                batch: b,
                tokens_per_s: mean,
                stddev: sd,
                step_ms,
                roofline_ms,
            });
        }
        if let Some(r) = &roof {
            let decode = &report.decode;
            let step_ms = |b| decode.iter().find(|d| d.batch == b).map(|d| d.step_ms);
            report.products = time_products(&model, r, &args.batch, step_ms)?;
        }
        Ok(())
    })?;
    print_ratios(&report.decode);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.svg {
        draw(p, &report)?;
    }
    Ok(())
}

/// Step time at each batch size against the step of one sequence.
fn print_ratios(decode: &[Decode]) {
    let Some(one) = decode.iter().find(|d| d.batch == 1) else {
        return;
    };
    let ratios: Vec<String> = decode
        .iter()
        .filter(|d| d.batch > 1)
        .map(|d| {
            format!(
                "step({}) = {:.2} x step(1)",
                d.batch,
                d.step_ms / one.step_ms
            )
        })
        .collect();
    if !ratios.is_empty() {
        println!("\n{}", ratios.join(" | "));
    }
}

/// Draws step time and its roofline against batch size.
fn draw(path: &std::path::Path, report: &Report) -> Result<()> {
    let pts = |f: &dyn Fn(&Decode) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .decode
            .iter()
            .filter_map(|d| f(d).map(|v| (d.batch as f64, v)))
            .collect()
    };
    let mut series = vec![("measured step".to_string(), pts(&|d| Some(d.step_ms)))];
    if report.peaks.is_some() {
        series.push(("roofline".to_string(), pts(&|d| d.roofline_ms)));
    }
    let title = format!(
        "decode step time against batch ({}, {} threads, {} weights)",
        report.machine.cpu, report.machine.threads, report.weights
    );
    pagedattn_bench::plot::line_chart(path, &title, "sequences per step", "ms per step", &series)
        .map_err(|e| anyhow!("cannot draw {e}"))
}

/// One warm-up call, then `reps` timed ones: mean and sample standard deviation.
fn repeat(reps: usize, mut f: impl FnMut() -> Result<f64>) -> Result<(f64, f64)> {
    f()?;
    let xs: Vec<f64> = (0..reps).map(|_| f()).collect::<Result<_>>()?;
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
    } else {
        0.0
    };
    Ok((mean, var.sqrt()))
}

/// `seqs` sequences of up to `len` positions in a paged cache, blocks interleaved across
/// sequences (as after churn), with fixed pseudo-random tokens.
struct Bench<'m> {
    model: &'m Model,
    cache: KvCache,
    tables: Vec<Vec<BlockId>>,
    tokens: Vec<u32>,
}

impl<'m> Bench<'m> {
    fn new(
        model: &'m Model,
        seqs: usize,
        len: usize,
        dtype: pagedattn_kernels::DType,
    ) -> Result<Self> {
        let c = model.config();
        let per_seq = len.div_ceil(BLOCK_SIZE);
        let cache = KvCache::new(c.kv_shape(dtype), seqs * per_seq, BLOCK_SIZE)?;
        let tables = (0..seqs)
            .map(|s| {
                (0..per_seq)
                    .map(|i| BlockId(u32::try_from(i * seqs + s).expect("a small cache")))
                    .collect()
            })
            .collect();
        let vocab = u32::try_from(c.vocab_size).unwrap_or(u32::MAX);
        let tokens = (0..=len as u32).map(|i| (i * 7919 + 13) % vocab).collect();
        Ok(Self {
            model,
            cache,
            tables,
            tokens,
        })
    }

    /// Prefills `n` tokens of every sequence in one step; seconds taken.
    fn prefill(&mut self, n: usize) -> Result<f64> {
        let mut batch = Batch::paged(BLOCK_SIZE);
        for table in &self.tables {
            batch.push(
                &self.tokens[..n],
                0,
                KvLocation::Paged(table),
                LogitsFor::Last,
            )?;
        }
        let t = Instant::now();
        self.model.forward(&batch, &mut self.cache)?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// `steps` decode steps of one token per sequence from position `start`; seconds.
    fn decode(&mut self, start: usize, steps: usize) -> Result<f64> {
        let t = Instant::now();
        for p in start..start + steps {
            let mut batch = Batch::paged(BLOCK_SIZE);
            for table in &self.tables {
                let at = KvLocation::Paged(table);
                batch.push(&self.tokens[p..=p], p, at, LogitsFor::Last)?;
            }
            self.model.forward(&batch, &mut self.cache)?;
        }
        Ok(t.elapsed().as_secs_f64())
    }
}
