//! Small, cache-resident paged attention calls at the kernel grid's shape (32 heads of
//! 128, blocks of 16): the per-call costs that decide small batches and short contexts.
//! Runs inside a rayon pool, as the model's forward pass does; median of many calls.
//!
//! ```sh
//! cargo run --release -p pagedattn-kernels --example small_calls [f32|f16|bf16] [batch context query_len]
//! ```

use pagedattn_kernels::{paged_attention, AttentionConfig, DType, KvCache, KvShape, PagedSeq};
use pagedattn_kv::BlockId;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    rayon::ThreadPoolBuilder::new()
        .build()?
        .install(|| inner().map_err(|e| e.to_string()))?;
    Ok(())
}

fn inner() -> Result<(), Box<dyn std::error::Error>> {
    let dtype = match std::env::args().nth(1).as_deref() {
        Some("f16") => DType::F16,
        Some("bf16") => DType::Bf16,
        _ => DType::F32,
    };
    let (heads, dim, bs) = (32, 128, 16);
    let a: Vec<usize> = std::env::args()
        .skip(2)
        .map(|x| x.parse().unwrap_or(1))
        .collect();
    let default = vec![
        (1usize, 16usize, 1usize),
        (4, 16, 1),
        (1, 64, 1),
        (1, 128, 1),
        (4, 128, 1),
        (1, 256, 1),
        (1, 16, 16),
        (4, 64, 64),
    ];
    let pts = if a.len() == 3 {
        vec![(a[0], a[1], a[2])]
    } else {
        default
    };
    let iters = if a.len() == 3 { 20000 } else { 2000 };
    for &(batch, ctx, qlen) in &pts {
        let bps = ctx.div_ceil(bs);
        let cache = KvCache::new(
            KvShape {
                num_layers: 1,
                num_kv_heads: heads,
                head_dim: dim,
                dtype,
            },
            batch * bps,
            bs,
        )?;
        let tables: Vec<Vec<BlockId>> = (0..batch)
            .map(|s| (0..bps).map(|b| BlockId((b * batch + s) as u32)).collect())
            .collect();
        let seqs: Vec<PagedSeq> = tables
            .iter()
            .enumerate()
            .map(|(i, t)| PagedSeq {
                query_start: i * qlen,
                query_len: qlen,
                context_len: ctx,
                kv: t,
            })
            .collect();
        let q = vec![0.1f32; batch * qlen * heads * dim];
        let mut out = vec![0.0f32; q.len()];
        let cfg = AttentionConfig::new(heads, dim);
        let mut times = vec![];
        for _ in 0..iters {
            let t = Instant::now();
            paged_attention(&cfg, &cache, 0, &q, &seqs, &mut out)?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{batch}x{ctx} q{qlen}: median {:.1} us (min {:.1})",
            times[iters / 2],
            times[0]
        );
    }
    Ok(())
}
