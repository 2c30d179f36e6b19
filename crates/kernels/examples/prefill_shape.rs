//! Paged causal prefill of one sequence at the kernel grid's shape (32 heads of 128, blocks
//! of 16, f32 K/V), timed against the single-thread FMA work it does.
//!
//! ```sh
//! cargo run --release -p pagedattn-kernels --example prefill_shape [tokens] [reps]
//! ```

use pagedattn_kernels::{paged_attention, AttentionConfig, DType, KvCache, KvShape, PagedSeq};
use pagedattn_kv::BlockId;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tokens: usize = args.next().map_or(Ok(1024), |a| a.parse())?;
    let reps: usize = args.next().map_or(Ok(20), |a| a.parse())?;
    let (heads, dim, bs) = (32, 128, 16);
    let blocks = tokens.div_ceil(bs);
    let cache = KvCache::new(
        KvShape {
            num_layers: 1,
            num_kv_heads: heads,
            head_dim: dim,
            dtype: DType::F32,
        },
        blocks,
        bs,
    )?;
    let table: Vec<BlockId> = (0..blocks).rev().map(|b| BlockId(b as u32)).collect();
    let seqs = [PagedSeq {
        query_start: 0,
        query_len: tokens,
        context_len: tokens,
        kv: &table,
    }];
    let q: Vec<f32> = (0..tokens * heads * dim)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
        .collect();
    let mut out = vec![0.0f32; q.len()];
    let cfg = AttentionConfig::new(heads, dim);
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        paged_attention(&cfg, &cache, 0, &q, &seqs, &mut out)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    // 4 x head_dim flops per visible (query, key) pair, per head.
    let pairs = (tokens * (tokens + 1) / 2) as f64;
    let flops = 4.0 * dim as f64 * pairs * heads as f64;
    println!(
        "prefill {tokens} tokens, {} threads: median {:.3} ms ({:.3}-{:.3}), {:.1} GFLOP/s",
        rayon::current_num_threads(),
        med * 1e3,
        times[0] * 1e3,
        times[times.len() - 1] * 1e3,
        flops / med / 1e9
    );
    Ok(())
}
