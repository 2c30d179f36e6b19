//! Mirrors the seed's `BlockManagerBenchmarks`: allocate one block, allocate n blocks,
//! free one block, free a sequence's blocks, read stats — over pool sizes 100 .. 5000 and
//! 1,000,000 (to show the operations do not grow with the pool).
//!
//! Every timed loop measures the operation itself: allocations are undone outside the
//! timed region (`iter_custom`), so the pool never runs dry.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pagedattn_kv::{BlockId, SeqId};
use std::hint::black_box;
use std::time::{Duration, Instant};

const POOLS: [usize; 5] = [100, 500, 1000, 5000, 1_000_000];
const SEQ_LENS: [usize; 3] = [16, 32, 64];

fn block_manager(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_manager");
    for &pool in &POOLS {
        let mut m = common::churned(pool);
        let s = SeqId(1_000);
        m.add_sequence(s).unwrap();
        // Grow the table once so pushes below never reallocate.
        let cap = pool.min(4096) - 1;
        let warm: Vec<BlockId> = m.allocate_blocks(s, cap).unwrap().to_vec();
        for b in warm.iter().rev() {
            m.free_block(s, *b).unwrap();
        }

        g.bench_function(BenchmarkId::new("AllocateSingleBlock", pool), |bench| {
            bench.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(cap);
                    let t = Instant::now();
                    for _ in 0..n {
                        black_box(m.allocate_block(s).unwrap());
                    }
                    spent += t.elapsed();
                    while let Some(&b) = m.tables().blocks(s).unwrap().last() {
                        m.free_block(s, b).unwrap();
                    }
                    left -= n;
                }
                spent
            });
        });

        g.bench_function(BenchmarkId::new("FreeSingleBlock", pool), |bench| {
            bench.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(cap);
                    m.allocate_blocks(s, n).unwrap();
                    let t = Instant::now();
                    for _ in 0..n {
                        let b = *m.tables().blocks(s).unwrap().last().unwrap();
                        m.free_block(s, black_box(b)).unwrap();
                    }
                    spent += t.elapsed();
                    left -= n;
                }
                spent
            });
        });

        g.bench_function(BenchmarkId::new("AllocateFreePair", pool), |bench| {
            bench.iter(|| {
                let b = m.allocate_block(s).unwrap();
                m.free_block(s, black_box(b)).unwrap();
            });
        });

        for &len in &SEQ_LENS {
            let n = len.div_ceil(16);
            let per_round = cap / n;
            g.bench_function(
                BenchmarkId::new(format!("AllocateMultipleBlocks/len{len}"), pool),
                |bench| {
                    bench.iter_custom(|iters| {
                        let mut spent = Duration::ZERO;
                        let mut left = iters as usize;
                        while left > 0 {
                            let k = left.min(per_round);
                            let t = Instant::now();
                            for _ in 0..k {
                                black_box(m.allocate_blocks(s, n).unwrap());
                            }
                            spent += t.elapsed();
                            while let Some(&b) = m.tables().blocks(s).unwrap().last() {
                                m.free_block(s, b).unwrap();
                            }
                            left -= k;
                        }
                        spent
                    });
                },
            );
        }

        // The seed frees a sequence of 10 blocks; build a round of such sequences outside
        // the timed region, then time freeing them.
        let per_round = (pool / 10 - 1).min(256);
        g.bench_function(BenchmarkId::new("FreeSequenceBlocks", pool), |bench| {
            bench.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let k = left.min(per_round);
                    for i in 0..k {
                        m.add_sequence(SeqId(10_000 + i as u64)).unwrap();
                        m.allocate_blocks(SeqId(10_000 + i as u64), 10).unwrap();
                    }
                    let t = Instant::now();
                    for i in 0..k {
                        black_box(m.free_sequence(SeqId(10_000 + i as u64)).unwrap());
                    }
                    spent += t.elapsed();
                    left -= k;
                }
                spent
            });
        });

        g.bench_function(BenchmarkId::new("GetStatistics", pool), |bench| {
            bench.iter(|| black_box(&m).stats());
        });
        m.check_invariants().unwrap();
    }
    g.finish();
}

/// The dashboard's picture of a pool of 100,000 blocks, half held by 500 sequences,
/// aggregated into 4,096 cells: what the engine thread spends between two steps per picture
/// (at most one per 400 ms).
fn pool_view(c: &mut Criterion) {
    let mut m = pagedattn_kv::BlockManager::new(
        pagedattn_kv::KvConfig::new(100_000).with_prefix_caching(true),
    )
    .unwrap();
    for s in 0..500u64 {
        m.add_sequence(SeqId(s)).unwrap();
        m.allocate_blocks(SeqId(s), 100).unwrap();
    }
    let mut g = c.benchmark_group("dashboard");
    g.bench_function(BenchmarkId::new("PoolView", 100_000), |bench| {
        bench.iter(|| black_box(&m).pool_view(4096));
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = block_manager, pool_view
}
criterion_main!(benches);
