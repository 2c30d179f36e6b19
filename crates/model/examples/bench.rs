//! Single-sequence speed of the model on this machine: prefill of a 512-token prompt, and
//! decode at contexts of 128 and 1024, through the paged KV cache (blocks of 16, f32).
//!
//! ```sh
//! cargo run --release -p pagedattn-model --example bench -- [MODEL.gguf | --random NAME] [--bf16 | --native]
//! ```
//! Without arguments it uses `models/SmolLM2-135M-Instruct.Q4_1.gguf`. Prints tokens/s
//! (median of several runs), batched decode of 8 and 32 sequences, and the process's peak
//! resident memory.

use pagedattn_kernels::{Batch, DType, KvCache, KvLocation, LogitsFor};
use pagedattn_kv::BlockId;
use pagedattn_model::{LoadOptions, Model, WeightDType};
use std::path::PathBuf;
use std::time::Instant;

const BLOCK_SIZE: usize = 16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dtype = if args.iter().any(|a| a == "--bf16") {
        WeightDType::Bf16
    } else if args.iter().any(|a| a == "--native") {
        WeightDType::Native
    } else {
        WeightDType::F32
    };
    let t = Instant::now();
    let model = if let Some(i) = args.iter().position(|a| a == "--random") {
        let name = args.get(i + 1).map_or("smollm2-135m", String::as_str);
        Model::random_named(name, 0, dtype)?
    } else {
        let default = || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        };
        let path = args
            .iter()
            .find(|a| !a.starts_with("--"))
            .map_or_else(default, PathBuf::from);
        Model::load(&path, LoadOptions { dtype })?
    };
    let c = model.config().clone();
    println!(
        "model: {} layers, hidden {}, {} params, weights {:.0} MiB ({dtype:?}), loaded in {:.2} s; {} rayon threads",
        c.num_layers,
        c.hidden_size,
        c.num_params(),
        model.weight_bytes() as f64 / f64::from(1u32 << 20),
        t.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    let max_ctx: usize = 1024 + 64;
    let num_blocks = max_ctx.div_ceil(BLOCK_SIZE);
    let mut cache = KvCache::new(c.kv_shape(DType::F32), num_blocks, BLOCK_SIZE)?;
    // Blocks in reverse order, so the cache is really paged, not accidentally contiguous.
    let table: Vec<BlockId> = (0..num_blocks as u32).rev().map(BlockId).collect();
    let tokens: Vec<u32> = (0..max_ctx as u32)
        .map(|i| (i * 7919 + 13) % c.vocab_size as u32)
        .collect();
    let mut run = |start: usize, n: usize| -> Result<f64, Box<dyn std::error::Error>> {
        let mut batch = Batch::paged(BLOCK_SIZE);
        let at = KvLocation::Paged(&table);
        batch.push(&tokens[start..start + n], start, at, LogitsFor::Last)?;
        let t = Instant::now();
        model.forward(&batch, &mut cache)?;
        Ok(t.elapsed().as_secs_f64())
    };

    // `--batched-only` skips prefill and single-sequence decode (for profiling).
    if !args.iter().any(|a| a == "--batched-only") {
        let mut prefill: Vec<f64> = (0..3).map(|_| run(0, 512)).collect::<Result<_, _>>()?;
        prefill.sort_by(f64::total_cmp);
        println!(
            "prefill 512 tokens: {:.0} tokens/s (median of 3, {:.3} s)",
            512.0 / prefill[1],
            prefill[1]
        );

        for ctx in [128, 1024] {
            run(0, ctx - 1)?;
            let steps = 32;
            let mut times: Vec<f64> = (0..steps)
                .map(|i| run(ctx - 1 + i % 16, 1))
                .collect::<Result<_, _>>()?;
            times.sort_by(f64::total_cmp);
            println!(
                "decode at context {ctx}: {:.1} tokens/s (median step {:.2} ms over {steps} steps)",
                1.0 / times[steps / 2],
                times[steps / 2] * 1e3
            );
        }
    }
    for seqs in [1, 2, 4, 6, 8, 12, 16, 24, 32] {
        let t = batched_decode(&model, seqs, 128)?;
        println!(
            "batched decode, {seqs} sequences at context 128: {:.1} tokens/s ({:.2} ms per step)",
            seqs as f64 / t,
            t * 1e3
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM")) {
        println!("peak RSS: {}", line.trim_start_matches("VmHWM:").trim());
    }
    Ok(())
}

/// Median time of one decode step for `seqs` sequences at context `ctx`, each in its own
/// blocks. The cache holds zeros rather than a real prefix: attention costs the same
/// whatever the values, and this avoids minutes of prefill.
fn batched_decode(
    model: &Model,
    seqs: usize,
    ctx: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let c = model.config();
    let per_seq = ctx.div_ceil(BLOCK_SIZE);
    let mut cache = KvCache::new(c.kv_shape(DType::F32), seqs * per_seq, BLOCK_SIZE)?;
    // Sequence s owns blocks s, s + seqs, s + 2 * seqs, ...: interleaved, as after churn.
    let tables: Vec<Vec<BlockId>> = (0..seqs)
        .map(|s| {
            (0..per_seq)
                .map(|i| BlockId((i * seqs + s) as u32))
                .collect()
        })
        .collect();
    let tokens: Vec<u32> = (0..seqs as u32).map(|s| s * 31 + 7).collect();
    let mut batch = Batch::paged(BLOCK_SIZE);
    for s in 0..seqs {
        let at = KvLocation::Paged(&tables[s]);
        batch.push(&tokens[s..=s], ctx - 1, at, LogitsFor::Last)?;
    }
    let mut times = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        model.forward(&batch, &mut cache)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
