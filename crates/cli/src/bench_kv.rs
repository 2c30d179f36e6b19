//! `pagedattn bench kv`: the block manager and the contiguous baseline driven through the
//! same synthetic serving workload at the same KV capacity — memory management only, no
//! model. Every step, each running sequence gains one token; waiting requests are admitted
//! in arrival order while memory allows. It shows what paging changes before any compute
//! is involved: how many sequences fit at once, how full the reserved memory is, and so
//! how many steps the same work takes.

use anyhow::{bail, Context, Result};
use clap::Args;
use pagedattn_bench::workload::MAX_DRAWS_PER_REQUEST;
use pagedattn_kernels::{DType, KvShape};
use pagedattn_kv::{BlockManager, ContiguousAllocator, ContiguousSizing, KvConfig, KvError, SeqId};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};
use serde::Serialize;
use std::collections::VecDeque;

/// Flags of `pagedattn bench kv`.
#[derive(Debug, Args)]
pub struct KvArgs {
    /// Requests in the workload (all arrive at once).
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// KV capacity in tokens, the same for every policy (default: 3 x max-len).
    #[arg(long)]
    kv_tokens: Option<usize>,
    /// Tokens per block.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// Maximum sequence length (prompt + output); the contiguous-max reservation.
    #[arg(long, default_value_t = 2048)]
    max_len: usize,
    /// Free blocks the paged policy keeps per running sequence when admitting, for their
    /// growth (0: admit whenever the prompt fits, as vLLM does).
    #[arg(long, default_value_t = 4)]
    headroom_blocks: usize,
    /// Seed of the workload.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One request: prompt and output lengths in tokens.
#[derive(Clone, Copy, Debug)]
struct Req {
    prompt: usize,
    output: usize,
}

/// ShareGPT-like lengths (the vLLM paper's means: input 161, output 338), log-normal,
/// filtered to prompt <= 1024 and prompt + output <= max_len.
fn workload(n: usize, max_len: usize, seed: u64) -> Result<Vec<Req>> {
    let lognormal = |mean: f64, sigma: f64| LogNormal::new(mean.ln() - sigma * sigma / 2.0, sigma);
    let input = lognormal(161.31, 0.85)?;
    let output = lognormal(337.99, 0.55)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reqs = Vec::with_capacity(n);
    let budget = n.saturating_mul(MAX_DRAWS_PER_REQUEST).max(10_000);
    for _ in 0..budget {
        if reqs.len() == n {
            return Ok(reqs);
        }
        let prompt = (input.sample(&mut rng).round() as usize).max(1);
        let out = (output.sample(&mut rng).round() as usize).max(1);
        if prompt <= 1024.min(max_len.saturating_sub(1))
            && prompt.checked_add(out).is_some_and(|t| t <= max_len)
        {
            reqs.push(Req {
                prompt,
                output: out,
            });
        }
    }
    if reqs.len() == n {
        return Ok(reqs);
    }
    bail!(
        "only {} of {n} ShareGPT-like requests fit --max-model-len {max_len} after {budget} draws; raise it",
        reqs.len()
    )
}

/// What one policy's run measured.
#[derive(Debug, Serialize)]
struct Outcome {
    policy: String,
    steps: usize,
    output_tokens: usize,
    tokens_per_step: f64,
    throughput_vs_paged: f64,
    mean_running: f64,
    peak_running: usize,
    utilization_mean: f64,
    occupancy_mean: f64,
    preemptions: usize,
    recomputed_tokens: usize,
    block_reuse: f64,
    internal_fragmentation_mean: f64,
    external_fragmentation_mean: f64,
    metadata_overhead: f64,
}

/// Memory-management side of one policy.
trait Kv {
    /// Admits a request if memory allows (`running` sequences already hold memory).
    fn admit(&mut self, seq: SeqId, r: Req, running: usize) -> Result<bool>;
    /// Adds one token; `false` when memory ran out (paged only).
    fn grow(&mut self, seq: SeqId) -> Result<bool>;
    fn release(&mut self, seq: SeqId) -> Result<()>;
    /// (tokens stored, slots held, total slots, internal frag slots, external frag slots)
    fn usage(&self) -> (usize, usize, usize, usize, usize);
}

struct Paged {
    m: BlockManager,
    headroom: usize,
}

impl Kv for Paged {
    fn admit(&mut self, seq: SeqId, r: Req, running: usize) -> Result<bool> {
        // Keep free blocks for the running sequences' growth, so admission does not push
        // them into preemption (the first request is always admitted).
        let need = r.prompt.div_ceil(self.m.block_size()) + running * self.headroom;
        if running > 0 && need > self.m.num_free_blocks() {
            return Ok(false);
        }
        self.m.add_sequence(seq)?;
        if self.m.append_tokens(seq, &vec![0; r.prompt]).is_err() {
            self.m.free_sequence(seq)?;
            return Ok(false);
        }
        Ok(true)
    }
    fn grow(&mut self, seq: SeqId) -> Result<bool> {
        match self.m.append_tokens(seq, &[0]) {
            Ok(_) => Ok(true),
            Err(KvError::OutOfBlocks { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
    fn release(&mut self, seq: SeqId) -> Result<()> {
        self.m.free_sequence(seq)?;
        Ok(())
    }
    fn usage(&self) -> (usize, usize, usize, usize, usize) {
        let s = self.m.stats();
        let held = s.used_blocks * s.block_size;
        (
            s.tokens_stored,
            held,
            s.total_blocks * s.block_size,
            held - s.tokens_stored,
            0,
        )
    }
}

struct Contiguous(ContiguousAllocator);

impl Kv for Contiguous {
    fn admit(&mut self, seq: SeqId, r: Req, _running: usize) -> Result<bool> {
        if !self.0.can_reserve(r.prompt + r.output) {
            return Ok(false);
        }
        self.0.reserve(seq, r.prompt + r.output)?;
        self.0.append(seq, r.prompt)?;
        Ok(true)
    }
    fn grow(&mut self, seq: SeqId) -> Result<bool> {
        self.0.append(seq, 1)?;
        Ok(true)
    }
    fn release(&mut self, seq: SeqId) -> Result<()> {
        self.0.free(seq)?;
        Ok(())
    }
    fn usage(&self) -> (usize, usize, usize, usize, usize) {
        let s = self.0.stats();
        (
            s.tokens_stored,
            s.reserved_slots,
            s.total_slots,
            s.internal_fragmentation_slots,
            s.external_fragmentation_slots,
        )
    }
}

/// Runs the workload to completion; preemption (paged) frees the newest sequence, which
/// restarts from its prompt.
fn simulate(name: &str, kv: &mut dyn Kv, reqs: &[Req]) -> Result<Outcome> {
    let mut waiting: VecDeque<usize> = (0..reqs.len()).collect();
    let mut running: Vec<(usize, usize)> = Vec::new(); // (request, tokens generated)
    let (mut steps, mut out_tokens, mut preemptions, mut recomputed) = (0, 0, 0, 0);
    let (mut sum_running, mut peak_running) = (0usize, 0usize);
    let (mut util, mut occ, mut int_frag, mut ext_frag) = (0.0, 0.0, 0.0, 0.0);
    while !waiting.is_empty() || !running.is_empty() {
        while let Some(&i) = waiting.front() {
            if !kv.admit(SeqId(i as u64), reqs[i], running.len())? {
                break;
            }
            waiting.pop_front();
            running.push((i, 0));
        }
        if running.is_empty() {
            bail!("request {} does not fit the KV capacity", waiting[0]);
        }
        let mut k = 0;
        while k < running.len() {
            let (i, _) = running[k];
            if kv.grow(SeqId(i as u64))? {
                running[k].1 += 1;
                k += 1;
                continue;
            }
            let (victim, done) = running.pop().context("a sequence to preempt")?;
            kv.release(SeqId(victim as u64))?;
            preemptions += 1;
            recomputed += reqs[victim].prompt + done;
            out_tokens -= done;
            waiting.push_front(victim);
        }
        steps += 1;
        out_tokens += running.len();
        sum_running += running.len();
        peak_running = peak_running.max(running.len());
        let (stored, held, total, internal, external) = kv.usage();
        util += if held == 0 {
            1.0
        } else {
            stored as f64 / held as f64
        };
        occ += held as f64 / total as f64;
        int_frag += internal as f64 / total as f64;
        ext_frag += external as f64 / total as f64;
        let mut j = 0;
        while j < running.len() {
            let (i, done) = running[j];
            if done == reqs[i].output {
                kv.release(SeqId(i as u64))?;
                running.swap_remove(j);
            } else {
                j += 1;
            }
        }
    }
    let n = steps as f64;
    Ok(Outcome {
        policy: name.to_string(),
        steps,
        output_tokens: out_tokens,
        tokens_per_step: out_tokens as f64 / n,
        throughput_vs_paged: 0.0,
        mean_running: sum_running as f64 / n,
        peak_running,
        utilization_mean: util / n,
        occupancy_mean: occ / n,
        preemptions,
        recomputed_tokens: recomputed,
        block_reuse: 0.0,
        internal_fragmentation_mean: int_frag / n,
        external_fragmentation_mean: ext_frag / n,
        metadata_overhead: 0.0,
    })
}

/// Runs `pagedattn bench kv`.
pub fn run(args: &KvArgs) -> Result<()> {
    if args.block_size == 0 || args.max_len < 2 || args.requests == 0 {
        bail!("--block-size and --requests must be at least 1, --max-len at least 2");
    }
    let kv_tokens = args.kv_tokens.unwrap_or(3 * args.max_len);
    if kv_tokens < args.max_len {
        bail!(
            "--kv-tokens {kv_tokens} cannot hold one sequence of --max-len {}",
            args.max_len
        );
    }
    let reqs = workload(args.requests, args.max_len, args.seed)?;
    // SmolLM2-135M's shape for the byte accounting: 30 layers, 3 KV heads x 64, f32.
    let shape = KvShape {
        num_layers: 30,
        num_kv_heads: 3,
        head_dim: 64,
        dtype: DType::F32,
    };
    let cfg = KvConfig::new(kv_tokens / args.block_size)
        .with_block_size(args.block_size)
        .with_bytes_per_token(shape.bytes_per_token());
    let mut results = Vec::new();
    let mut paged = Paged {
        m: BlockManager::new(cfg.clone())?,
        headroom: args.headroom_blocks,
    };
    let mut o = simulate("paged", &mut paged, &reqs)?;
    let st = paged.m.stats();
    o.block_reuse = st.block_reuse_rate;
    o.metadata_overhead = st.metadata_overhead;
    results.push(o);
    for (name, sizing) in [
        ("contiguous-max", ContiguousSizing::Max),
        ("contiguous-pow2", ContiguousSizing::Pow2),
        ("contiguous-oracle", ContiguousSizing::Oracle),
    ] {
        let arena = ContiguousAllocator::from_config(&cfg, sizing, args.max_len)?;
        let mut c = Contiguous(arena);
        let mut o = simulate(name, &mut c, &reqs)?;
        o.metadata_overhead = c.0.stats().metadata_overhead;
        results.push(o);
    }
    let paged_rate = results[0].tokens_per_step;
    for r in &mut results {
        r.throughput_vs_paged = r.tokens_per_step / paged_rate;
    }
    print_table(args, kv_tokens, &reqs, &results);
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "config": {
                "requests": args.requests, "kv_tokens": kv_tokens, "block_size": args.block_size,
                "max_len": args.max_len, "seed": args.seed, "workload": "sharegpt-like",
            },
            "policies": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_table(args: &KvArgs, kv_tokens: usize, reqs: &[Req], results: &[Outcome]) {
    let mean = |f: fn(&Req) -> usize| reqs.iter().map(f).sum::<usize>() as f64 / reqs.len() as f64;
    println!(
        "KV memory management only (no model): {} sharegpt-like requests (mean prompt {:.0}, \
         output {:.0} tokens), all at once; KV capacity {kv_tokens} tokens for every policy, \
         block size {}, max length {}, seed {}.",
        reqs.len(),
        mean(|r| r.prompt),
        mean(|r| r.output),
        args.block_size,
        args.max_len,
        args.seed
    );
    println!(
        "{:<18} {:>7} {:>9} {:>8} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>10}",
        "policy",
        "steps",
        "tok/step",
        "vs paged",
        "mean seqs",
        "peak",
        "util",
        "occupied",
        "int frag",
        "ext frag",
        "preempt",
        "recompute",
        "meta ovh"
    );
    for r in results {
        println!(
            "{:<18} {:>7} {:>9.2} {:>7.2}x {:>9.2} {:>6} {:>7.1}% {:>7.1}% {:>7.1}% {:>7.1}% {:>7} {:>9} {:>9.5}%",
            r.policy,
            r.steps,
            r.tokens_per_step,
            r.throughput_vs_paged,
            r.mean_running,
            r.peak_running,
            100.0 * r.utilization_mean,
            100.0 * r.occupancy_mean,
            100.0 * r.internal_fragmentation_mean,
            100.0 * r.external_fragmentation_mean,
            r.preemptions,
            r.recomputed_tokens,
            100.0 * r.metadata_overhead,
        );
    }
    println!(
        "paged block reuse {:.1}%; util = tokens stored / slots held; occupied = slots held / \
         capacity; fragmentation as a share of capacity, time-averaged over steps.",
        100.0 * results[0].block_reuse
    );
}
