//! Mirrors the seed's `BlockTableBenchmarks`: token -> block lookup, a sequence's blocks,
//! its length, appending, stats — for sequences of 100 .. 10,000 and 1,000,000 tokens.

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pagedattn_kv::SeqId;
use std::hint::black_box;
use std::time::{Duration, Instant};

const LENS: [usize; 4] = [100, 1000, 10_000, 1_000_000];

fn block_table(c: &mut Criterion) {
    let mut g = c.benchmark_group("block_table");
    for &len in &LENS {
        let mut m = common::churned(len.div_ceil(16) + 5000);
        let s = SeqId(1);
        m.add_sequence(s).unwrap();
        let tokens: Vec<u32> = (0..len as u32).collect();
        m.append_tokens(s, &tokens).unwrap();
        // Other sequences in the table, as in a running server.
        for o in 2..64 {
            m.add_sequence(SeqId(o)).unwrap();
            m.append_tokens(SeqId(o), &[1; 40]).unwrap();
        }

        g.bench_function(BenchmarkId::new("GetBlockLookup", len), |bench| {
            let t = m.tables();
            let mut i = len / 2;
            bench.iter(|| {
                // Vary the token so the lookup is not hoisted; stays within the sequence.
                i = if i + 1 < len { i + 1 } else { len / 2 };
                black_box(t.lookup(black_box(s), i).unwrap())
            });
        });
        g.bench_function(BenchmarkId::new("GetSequenceBlocks", len), |bench| {
            let t = m.tables();
            bench.iter(|| black_box(t.blocks(black_box(s)).unwrap()));
        });
        g.bench_function(BenchmarkId::new("GetSequenceLength", len), |bench| {
            let t = m.tables();
            bench.iter(|| black_box(t.len(black_box(s)).unwrap()));
        });
        g.bench_function(BenchmarkId::new("GetStats", len), |bench| {
            let t = m.tables();
            bench.iter(|| black_box(t.stats()));
        });
        // Appending one token at a time to a second sequence (a new block every 16th):
        // amortized cost per token; the sequence is freed outside the timed region.
        let a = SeqId(10_000);
        g.bench_function(BenchmarkId::new("AppendToken", len), |bench| {
            bench.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(4096);
                    m.add_sequence(a).unwrap();
                    let t = Instant::now();
                    for i in 0..n {
                        black_box(m.append_tokens(a, &[i as u32]).unwrap());
                    }
                    spent += t.elapsed();
                    m.free_sequence(a).unwrap();
                    left -= n;
                }
                spent
            });
        });
        // The seed's AppendBlock: allocate a block for a sequence and append it.
        g.bench_function(BenchmarkId::new("AppendBlock", len), |bench| {
            bench.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(1024);
                    m.add_sequence(a).unwrap();
                    let t = Instant::now();
                    for _ in 0..n {
                        black_box(m.allocate_block(a).unwrap());
                    }
                    spent += t.elapsed();
                    m.free_sequence(a).unwrap();
                    left -= n;
                }
                spent
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = block_table
}
criterion_main!(benches);
