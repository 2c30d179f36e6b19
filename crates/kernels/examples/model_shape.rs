//! Paged decode attention at SmolLM2-135M's shape (9 query heads, 3 KV heads of 64, blocks
//! of 16, bf16 K/V): one layer's call, as the model makes it once per layer and step.
//!
//! ```sh
//! cargo run --release -p pagedattn-kernels --example model_shape
//! ```

use pagedattn_kernels::{paged_attention, AttentionConfig, DType, KvCache, KvShape, PagedSeq};
use pagedattn_kv::BlockId;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (heads, kv_heads, dim, bs) = (9, 3, 64, 16);
    // 30 copies of the layer (the model's depth), so the K/V come from DRAM as in a step.
    let layers = 30;
    for &(batch, ctx) in &[(1, 128), (1, 1024), (8, 512), (16, 512), (16, 1024)] {
        let blocks_per_seq = ctx / bs;
        let num_blocks = batch * blocks_per_seq;
        let cache = KvCache::new(
            KvShape {
                num_layers: layers,
                num_kv_heads: kv_heads,
                head_dim: dim,
                dtype: DType::Bf16,
            },
            num_blocks,
            bs,
        )?;
        // Blocks interleaved across sequences, as the pool hands them out over time.
        let tables: Vec<Vec<BlockId>> = (0..batch)
            .map(|s| {
                (0..blocks_per_seq)
                    .map(|b| BlockId((b * batch + s) as u32))
                    .collect()
            })
            .collect();
        let seqs: Vec<PagedSeq> = tables
            .iter()
            .enumerate()
            .map(|(i, t)| PagedSeq {
                query_start: i,
                query_len: 1,
                context_len: ctx,
                kv: t,
            })
            .collect();
        let q = vec![0.1f32; batch * heads * dim];
        let mut out = vec![0.0f32; q.len()];
        let cfg = AttentionConfig::new(heads, dim);
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            for layer in 0..layers {
                paged_attention(&cfg, &cache, layer, &q, &seqs, &mut out)?;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let kv_bytes = (batch * ctx * kv_heads * dim * 2 * 2 * layers) as f64;
        println!(
            "batch {batch:2} context {ctx:4}: {:.3} ms for {layers} layers ({:.1} us per call), {:.1} GB/s of K/V",
            best * 1e3,
            best * 1e6 / layers as f64,
            kv_bytes / best / 1e9
        );
    }
    Ok(())
}
