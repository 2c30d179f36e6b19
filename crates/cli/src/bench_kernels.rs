//! `pagedattn bench kernels`: paged vs contiguous vs padded attention over the seed's grid,
//! against this machine's measured roofline.
//!
//! First it measures DRAM read bandwidth (a STREAM-style sum over arrays far larger than
//! the last-level cache, on the threads the kernels will use) and single-thread FMA peak.
//! Then, per grid point, it times the three kernels alternately in one run (median of
//! repetitions, with min and max). Paged blocks come from the block manager after
//! allocation churn, so block ids are shuffled. Points whose working set is not far beyond
//! the last-level cache rotate among several input sets so that decode reads DRAM.

use crate::machine::{cpu_name, llc_bytes, read_bandwidth_gbps};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use pagedattn_kernels::{
    contiguous_attention, fma_peak_gflops, padded_attention, paged_attention, AttentionConfig,
    ContiguousKv, ContiguousSeq, Cpu, DType, KvCache, KvShape, PagedSeq,
};
use pagedattn_kv::{BlockId, BlockManager, KvConfig, SeqId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Flags of `pagedattn bench kernels`.
#[derive(Debug, Clone, Args)]
pub struct KernelsArgs {
    /// A small grid that finishes in under a minute (decode at 256 and 1024 tokens, batch
    /// 1 and 16; one prefill).
    #[arg(long)]
    pub quick: bool,
    /// K/V storage type: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Threads for the kernels and the bandwidth probe (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Wall time to spend timing each kernel at each point, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub budget_ms: u64,
}

const NUM_HEADS: usize = 32;
const HEAD_DIM: usize = 128;
const BLOCK_SIZE: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Phase {
    Decode,
    Prefill,
}

#[derive(Clone, Copy, Debug)]
struct Point {
    phase: Phase,
    batch: usize,
    context: usize,
    num_kv_heads: usize,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpu: String,
    threads: usize,
    isa: String,
    read_gbps: f64,
    fma_gflops: f64,
    llc_mib: f64,
}

#[derive(Debug, Serialize)]
struct Row {
    phase: Phase,
    dtype: String,
    batch: usize,
    context: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    paged_ms: f64,
    contiguous_ms: f64,
    padded_ms: f64,
    paged_over_contiguous: f64,
    gbps: f64,
    pct_of_bandwidth: f64,
    gflops: f64,
    paged_min_ms: f64,
    paged_max_ms: f64,
    contiguous_min_ms: f64,
    contiguous_max_ms: f64,
    padded_min_ms: f64,
    padded_max_ms: f64,
    working_set_mib: f64,
    input_sets: usize,
    reps: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    results: Vec<Row>,
}

/// Runs the benchmark.
pub fn run(args: &KernelsArgs) -> Result<()> {
    let dtype = DType::parse(&args.dtype)
        .ok_or_else(|| anyhow!("unknown --dtype {:?} (f32, f16, bf16)", args.dtype))?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    if threads == 0 {
        bail!("--threads must be >= 1");
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| run_in_pool(args, dtype, threads))
}

fn run_in_pool(args: &KernelsArgs, dtype: DType, threads: usize) -> Result<()> {
    let cpu = Cpu::selected();
    let llc = llc_bytes();
    eprintln!("measuring read bandwidth ({threads} threads) and FMA peak ({cpu})...");
    let machine = Machine {
        cpu: cpu_name(),
        threads,
        isa: cpu.to_string(),
        read_gbps: read_bandwidth_gbps(cpu, llc),
        fma_gflops: fma_peak_gflops(cpu, 0.2),
        llc_mib: llc as f64 / f64::from(1u32 << 20),
    };
    println!(
        "machine: {} | {} threads | isa {} | DRAM read {:.1} GB/s | FMA peak {:.1} GFLOP/s per thread | LLC {:.0} MiB",
        machine.cpu, threads, machine.isa, machine.read_gbps, machine.fma_gflops, machine.llc_mib
    );
    println!(
        "{:<7} {:>5} {:>5} {:>7} {:>4} | {:>9} {:>9} {:>9} | {:>6} | {:>7} {:>5} | {:>8} | {:>7}",
        "phase",
        "dtype",
        "batch",
        "context",
        "kvh",
        "paged ms",
        "contig ms",
        "padded ms",
        "p/c",
        "GB/s",
        "%bw",
        "GFLOP/s",
        "ws MiB"
    );
    let mut results = Vec::new();
    for point in grid(args.quick) {
        let row = measure(point, dtype, llc, &machine, args)?;
        println!(
            "{:<7} {:>5} {:>5} {:>7} {:>4} | {:>9.3} {:>9.3} {:>9.3} | {:>6.3} | {:>7.1} {:>5.1} | {:>8.1} | {:>7.0}{}",
            format!("{:?}", row.phase).to_lowercase(),
            row.dtype,
            row.batch,
            row.context,
            row.num_kv_heads,
            row.paged_ms,
            row.contiguous_ms,
            row.padded_ms,
            row.paged_over_contiguous,
            row.gbps,
            row.pct_of_bandwidth,
            row.gflops,
            row.working_set_mib,
            if row.input_sets > 1 { format!(" x{}", row.input_sets) } else { String::new() },
        );
        results.push(row);
    }
    if let Some(path) = &args.json {
        let report = Report { machine, results };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn grid(quick: bool) -> Vec<Point> {
    let decode = |batch, context, num_kv_heads| Point {
        phase: Phase::Decode,
        batch,
        context,
        num_kv_heads,
    };
    let prefill = |batch, context| Point {
        phase: Phase::Prefill,
        batch,
        context,
        num_kv_heads: NUM_HEADS,
    };
    if quick {
        let mut g: Vec<Point> = [256, 1024]
            .into_iter()
            .flat_map(|c| [1, 16].map(|b| decode(b, c, NUM_HEADS)))
            .collect();
        g.push(prefill(1, 1024));
        return g;
    }
    let mut g = Vec::new();
    for context in [16, 32, 64, 128, 256, 512, 1024, 4096] {
        for batch in [1, 4, 8, 16] {
            g.push(decode(batch, context, NUM_HEADS));
        }
    }
    for context in [1024, 4096] {
        for batch in [1, 16] {
            g.push(decode(batch, context, 8));
        }
    }
    for context in [16, 32, 64, 128, 256, 512, 1024] {
        for batch in [1, 4] {
            g.push(prefill(batch, context));
        }
    }
    g
}

/// Input sets for one point: `sets` copies of the batch, paged and contiguous.
struct Inputs {
    cache: KvCache,
    tables: Vec<Vec<BlockId>>,
    arena: ContiguousKv,
    q: Vec<f32>,
    sets: usize,
}

fn build(point: Point, dtype: DType, sets: usize, seed: u64) -> Result<Inputs> {
    let Point {
        phase,
        batch,
        context,
        num_kv_heads,
    } = point;
    let seqs = sets * batch;
    let blocks_per_seq = context.div_ceil(BLOCK_SIZE);
    let needed = seqs * blocks_per_seq;
    let num_blocks = needed + needed / 4 + 64;
    let tables = churned_tables(num_blocks, seqs, context, seed)?;
    let shape = KvShape {
        num_layers: 1,
        num_kv_heads,
        head_dim: HEAD_DIM,
        dtype,
    };
    let mut cache = KvCache::new(shape, num_blocks, BLOCK_SIZE)?;
    let mut arena = ContiguousKv::new(shape, seqs * context)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let row = num_kv_heads * HEAD_DIM;
    let chunk = 256;
    let (mut k, mut v) = (vec![0.0f32; chunk * row], vec![0.0f32; chunk * row]);
    for (s, table) in tables.iter().enumerate() {
        let mut t0 = 0;
        while t0 < context {
            let n = chunk.min(context - t0);
            for x in k[..n * row].iter_mut().chain(v[..n * row].iter_mut()) {
                *x = rng.random_range(-1.0f32..1.0);
            }
            let slots: Vec<usize> = (t0..t0 + n)
                .map(|t| table[t / BLOCK_SIZE].index() * BLOCK_SIZE + t % BLOCK_SIZE)
                .collect();
            cache.write_kv(0, &slots, &k[..n * row], &v[..n * row])?;
            let arena_slots: Vec<usize> = (s * context + t0..s * context + t0 + n).collect();
            arena.write_kv(0, &arena_slots, &k[..n * row], &v[..n * row])?;
            t0 += n;
        }
    }
    let q_tokens = batch * if phase == Phase::Decode { 1 } else { context };
    let q = (0..q_tokens * NUM_HEADS * HEAD_DIM)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    Ok(Inputs {
        cache,
        tables,
        arena,
        q,
        sets,
    })
}

/// Block tables for `seqs` sequences of `context` tokens, allocated after churn: the pool
/// is filled with random-length sequences, a random subset is freed, and the benchmark's
/// sequences take the freed blocks in the order the free queue returns them.
fn churned_tables(
    num_blocks: usize,
    seqs: usize,
    context: usize,
    seed: u64,
) -> Result<Vec<Vec<BlockId>>> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut bm = BlockManager::new(KvConfig::new(num_blocks).with_block_size(BLOCK_SIZE))?;
    let mut fillers = Vec::new();
    let mut id = 1_000_000u64;
    while bm.num_free_blocks() > 0 {
        let tokens = rng
            .random_range(1..=64 * BLOCK_SIZE)
            .min(bm.num_free_blocks() * BLOCK_SIZE);
        bm.add_sequence(SeqId(id))?;
        bm.append_tokens(SeqId(id), &vec![0; tokens])?;
        fillers.push(SeqId(id));
        id += 1;
    }
    let needed = seqs * context.div_ceil(BLOCK_SIZE);
    while bm.num_free_blocks() < needed {
        let victim = fillers.swap_remove(rng.random_range(0..fillers.len()));
        bm.free_sequence(victim)?;
    }
    let mut tables = Vec::with_capacity(seqs);
    for s in 0..seqs {
        let seq = SeqId(s as u64);
        bm.add_sequence(seq)?;
        bm.append_tokens(seq, &vec![0; context])?;
        tables.push(bm.tables().blocks(seq)?.to_vec());
    }
    Ok(tables)
}

fn measure(
    point: Point,
    dtype: DType,
    llc: usize,
    machine: &Machine,
    args: &KernelsArgs,
) -> Result<Row> {
    let Point {
        phase,
        batch,
        context,
        num_kv_heads,
    } = point;
    let bytes = 2 * batch * context * num_kv_heads * HEAD_DIM * dtype.size();
    // Decode must read DRAM: rotate among enough input sets to exceed the LLC 2.5 times.
    let sets = if phase == Phase::Decode && bytes >= 4 << 20 {
        (llc * 5 / 2).div_ceil(bytes).clamp(1, 64)
    } else {
        1
    };
    let inputs = build(point, dtype, sets, (batch * 7919 + context) as u64)?;
    let q_len = if phase == Phase::Decode { 1 } else { context };
    let cfg = AttentionConfig::new(NUM_HEADS, HEAD_DIM).with_tile_size(BLOCK_SIZE);
    let out_len = inputs.q.len();
    let mut out = vec![0.0f32; out_len];
    let paged_seqs = |set: usize| -> Vec<PagedSeq<'_>> {
        (0..batch)
            .map(|b| PagedSeq {
                query_start: b * q_len,
                query_len: q_len,
                context_len: context,
                kv: &inputs.tables[set * batch + b][..],
            })
            .collect()
    };
    let contiguous_seqs = |set: usize| -> Vec<ContiguousSeq> {
        (0..batch)
            .map(|b| ContiguousSeq {
                query_start: b * q_len,
                query_len: q_len,
                context_len: context,
                kv: inputs.arena.run((set * batch + b) * context),
            })
            .collect()
    };
    let call = |kernel: usize, set: usize, out: &mut [f32]| -> Result<Duration> {
        let t = Instant::now();
        match kernel {
            0 => paged_attention(&cfg, &inputs.cache, 0, &inputs.q, &paged_seqs(set), out)?,
            1 => contiguous_attention(
                &cfg,
                &inputs.arena,
                0,
                &inputs.q,
                &contiguous_seqs(set),
                out,
            )?,
            _ => padded_attention(
                &cfg,
                &inputs.arena,
                0,
                &inputs.q,
                &contiguous_seqs(set),
                out,
            )?,
        }
        Ok(t.elapsed())
    };
    // Warm-up (page faults, thread pool), then size the repetitions to the budget.
    let mut first = Duration::ZERO;
    for k in 0..3 {
        first = first.max(call(k, 0, &mut out)?);
    }
    let budget = Duration::from_millis(args.budget_ms);
    let reps = ((budget.as_secs_f64() / first.as_secs_f64().max(1e-6)) as usize).clamp(5, 2000);
    let mut times = [
        Vec::with_capacity(reps),
        Vec::with_capacity(reps),
        Vec::with_capacity(reps),
    ];
    for rep in 0..reps {
        for (k, t) in times.iter_mut().enumerate() {
            // Padded reads the contiguous arena: give it the set contiguous read longest
            // ago, so it does not find that data still in the cache.
            let set = (rep + 1 + if k == 2 { inputs.sets / 2 } else { 0 }) % inputs.sets;
            t.push(call(k, set, &mut out)?.as_secs_f64() * 1e3);
        }
    }
    let stats = times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        (t[t.len() / 2], t[0], t[t.len() - 1])
    });
    let (paged, contiguous, padded) = (stats[0], stats[1], stats[2]);
    let pairs = if phase == Phase::Decode {
        context
    } else {
        context * (context + 1) / 2
    };
    let flops = 4.0 * (batch * pairs * NUM_HEADS * HEAD_DIM) as f64;
    let gbps = bytes as f64 / (paged.0 * 1e-3) / 1e9;
    Ok(Row {
        phase,
        dtype: dtype.name().to_string(),
        batch,
        context,
        num_heads: NUM_HEADS,
        num_kv_heads,
        head_dim: HEAD_DIM,
        block_size: BLOCK_SIZE,
        paged_ms: paged.0,
        contiguous_ms: contiguous.0,
        padded_ms: padded.0,
        paged_over_contiguous: paged.0 / contiguous.0,
        gbps,
        pct_of_bandwidth: 100.0 * gbps / machine.read_gbps,
        gflops: flops / (paged.0 * 1e-3) / 1e9,
        paged_min_ms: paged.1,
        paged_max_ms: paged.2,
        contiguous_min_ms: contiguous.1,
        contiguous_max_ms: contiguous.2,
        padded_min_ms: padded.1,
        padded_max_ms: padded.2,
        working_set_mib: bytes as f64 / f64::from(1u32 << 20),
        input_sets: inputs.sets,
        reps,
    })
}
