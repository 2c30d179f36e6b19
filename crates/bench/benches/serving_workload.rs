//! Mirrors the seed's `ServingWorkloadBenchmark` (NumSequences 10, 50, 100 x
//! AvgSequenceLength 64, 128, 256; lengths +-32; ~5% of sequences leave and are replaced
//! each round) — but with real work where the seed's sketch had none: each measured round
//! appends one token per running sequence through the block manager, writes its K/V into
//! the paged cache, runs paged decode attention over the whole batch (32 heads x 128, the
//! seed's shape, one layer), and churns departures and arrivals through the block manager.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pagedattn_kernels::{paged_attention, AttentionConfig, DType, KvCache, KvShape, PagedSeq};
use pagedattn_kv::{BlockManager, KvConfig, SeqId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::Duration;

const HEADS: usize = 32;
const DIM: usize = 128;
const BLOCK: usize = 16;

struct World {
    kv: BlockManager,
    cache: KvCache,
    running: Vec<SeqId>,
    next: u64,
    avg: usize,
    rng: StdRng,
    row: Vec<f32>,
    q: Vec<f32>,
    out: Vec<f32>,
}

impl World {
    fn new(n: usize, avg: usize) -> Self {
        // Room for every sequence at its longest, plus growth over the measured rounds.
        let blocks = n * (avg + 32 + 200).div_ceil(BLOCK) + 64;
        let shape = KvShape {
            num_layers: 1,
            num_kv_heads: HEADS,
            head_dim: DIM,
            dtype: DType::F32,
        };
        let kv = BlockManager::new(
            KvConfig::new(blocks)
                .with_block_size(BLOCK)
                .with_bytes_per_token(shape.bytes_per_token()),
        )
        .expect("valid config");
        let cache = KvCache::new(shape, blocks, BLOCK).expect("cache fits in memory");
        let mut rng = StdRng::seed_from_u64(42);
        let row = (0..HEADS * DIM)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        let mut w = Self {
            kv,
            cache,
            running: Vec::new(),
            next: 0,
            avg,
            rng,
            row,
            q: vec![0.3; n * HEADS * DIM],
            out: vec![0.0; n * HEADS * DIM],
        };
        for _ in 0..n {
            w.arrive();
        }
        w
    }

    /// A new sequence with avg +- 32 tokens already in the cache.
    fn arrive(&mut self) {
        let len = (self.avg + self.rng.random_range(0..=64))
            .saturating_sub(32)
            .max(1);
        let s = SeqId(self.next);
        self.next += 1;
        self.kv.add_sequence(s).expect("new id");
        self.append(s, len);
        self.running.push(s);
    }

    fn append(&mut self, s: SeqId, n: usize) {
        let start = self.kv.tables().len(s).expect("known");
        self.kv
            .append_tokens(s, &vec![1; n])
            .expect("pool sized for the run");
        let slots: Vec<usize> = (start..start + n)
            .map(|t| {
                let (b, off) = self.kv.tables().lookup(s, t).expect("appended");
                b.index() * BLOCK + off
            })
            .collect();
        let k: Vec<f32> = self
            .row
            .iter()
            .copied()
            .cycle()
            .take(n * HEADS * DIM)
            .collect();
        self.cache.write_kv(0, &slots, &k, &k).expect("valid slots");
    }

    /// One serving round: decode one token for everyone, then churn ~5%.
    fn round(&mut self) {
        for i in 0..self.running.len() {
            self.append(self.running[i], 1);
        }
        let seqs: Vec<PagedSeq<'_>> = self
            .running
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let e = self.kv.tables().get(s).expect("running");
                PagedSeq {
                    query_start: i,
                    query_len: 1,
                    context_len: e.num_tokens(),
                    kv: e.blocks(),
                }
            })
            .collect();
        let n = seqs.len();
        paged_attention(
            &AttentionConfig::new(HEADS, DIM),
            &self.cache,
            0,
            &self.q[..n * HEADS * DIM],
            &seqs,
            &mut self.out[..n * HEADS * DIM],
        )
        .expect("valid batch");
        black_box(&self.out);
        for i in (0..self.running.len()).rev() {
            if self.rng.random_range(0..100) < 5 {
                let s = self.running.swap_remove(i);
                self.kv.free_sequence(s).expect("running");
                self.arrive();
            }
        }
    }
}

fn serving_workload(c: &mut Criterion) {
    let mut g = c.benchmark_group("serving_workload");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    for n in [10, 50, 100] {
        for avg in [64, 128, 256] {
            let mut w = World::new(n, avg);
            g.bench_function(
                BenchmarkId::new(format!("SimulateServingWorkload/seqs{n}"), avg),
                |b| {
                    b.iter(|| w.round());
                },
            );
            w.kv.check_invariants().expect("consistent after the run");
        }
    }
    g.finish();
}

criterion_group!(benches, serving_workload);
criterion_main!(benches);
