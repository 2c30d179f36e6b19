//! Criterion mirror of the seed's `PagedAttentionBenchmarks`: {paged, contiguous} x
//! {single token (decode), prefill} x sequence length x batch size, 32 heads x 128,
//! blocks of 16. Paged block ids come from the block manager after allocation churn.
//! Measurement times are short so the whole grid runs in a few minutes; the roofline
//! numbers (working sets beyond the LLC, GB/s) come from `pagedattn bench kernels`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pagedattn_kernels::{
    contiguous_attention, paged_attention, AttentionConfig, ContiguousKv, ContiguousSeq, DType,
    KvCache, KvShape, PagedSeq,
};
use pagedattn_kv::{BlockId, BlockManager, KvConfig, SeqId};
use std::hint::black_box;
use std::time::Duration;

const NUM_HEADS: usize = 32;
const HEAD_DIM: usize = 128;
const BLOCK_SIZE: usize = 16;
const SEQ_LENS: [usize; 7] = [16, 32, 64, 128, 256, 512, 1024];
const BATCHES: [usize; 4] = [1, 4, 8, 16];

/// Deterministic values in [-1, 1) (a 64-bit LCG; the data only has to be non-trivial).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Block tables for `batch` sequences of `len` tokens, after filling the pool with
/// random-length sequences and freeing every other one.
fn churned_tables(batch: usize, len: usize) -> (usize, Vec<Vec<BlockId>>) {
    let needed = batch * len.div_ceil(BLOCK_SIZE);
    let num_blocks = 2 * needed + 64;
    let mut bm = BlockManager::new(KvConfig::new(num_blocks).with_block_size(BLOCK_SIZE))
        .expect("valid config");
    let mut rng = Lcg(7);
    let mut id = 1_000;
    let mut fillers = Vec::new();
    while bm.num_free_blocks() > 0 {
        let blocks = ((rng.next() + 1.0) * 8.0) as usize + 1;
        let tokens = (blocks * BLOCK_SIZE).min(bm.num_free_blocks() * BLOCK_SIZE);
        bm.add_sequence(SeqId(id)).expect("fresh id");
        bm.append_tokens(SeqId(id), &vec![0; tokens]).expect("fits");
        fillers.push(SeqId(id));
        id += 1;
    }
    for (i, s) in fillers.iter().enumerate() {
        if i % 2 == 0 || bm.num_free_blocks() < needed {
            bm.free_sequence(*s).expect("live sequence");
        }
    }
    let tables = (0..batch)
        .map(|b| {
            let seq = SeqId(b as u64);
            bm.add_sequence(seq).expect("fresh id");
            bm.append_tokens(seq, &vec![0; len]).expect("fits");
            bm.tables().blocks(seq).expect("live sequence").to_vec()
        })
        .collect();
    (num_blocks, tables)
}

struct Setup {
    cache: KvCache,
    tables: Vec<Vec<BlockId>>,
    arena: ContiguousKv,
}

fn setup(batch: usize, len: usize) -> Setup {
    let (num_blocks, tables) = churned_tables(batch, len);
    let dtype = DType::F32;
    let mut cache = KvCache::new(
        KvShape {
            num_layers: 1,
            num_kv_heads: NUM_HEADS,
            head_dim: HEAD_DIM,
            dtype,
        },
        num_blocks,
        BLOCK_SIZE,
    )
    .expect("valid cache");
    let mut arena = ContiguousKv::new(
        KvShape {
            num_layers: 1,
            num_kv_heads: NUM_HEADS,
            head_dim: HEAD_DIM,
            dtype,
        },
        batch * len,
    )
    .expect("valid arena");
    let mut rng = Lcg(42);
    let row = NUM_HEADS * HEAD_DIM;
    for (b, table) in tables.iter().enumerate() {
        let k: Vec<f32> = (0..len * row).map(|_| rng.next()).collect();
        let v: Vec<f32> = (0..len * row).map(|_| rng.next()).collect();
        let slots: Vec<usize> = (0..len)
            .map(|t| table[t / BLOCK_SIZE].index() * BLOCK_SIZE + t % BLOCK_SIZE)
            .collect();
        cache.write_kv(0, &slots, &k, &v).expect("slots in range");
        let runs: Vec<usize> = (b * len..(b + 1) * len).collect();
        arena.write_kv(0, &runs, &k, &v).expect("slots in range");
    }
    Setup {
        cache,
        tables,
        arena,
    }
}

fn bench(c: &mut Criterion) {
    let cfg = AttentionConfig::new(NUM_HEADS, HEAD_DIM).with_tile_size(BLOCK_SIZE);
    for (phase, prefill) in [("single_token", false), ("prefill", true)] {
        let mut group = c.benchmark_group(format!("paged_attention/{phase}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(800));
        for &len in &SEQ_LENS {
            for &batch in &BATCHES {
                let s = setup(batch, len);
                let q_len = if prefill { len } else { 1 };
                let mut rng = Lcg(3);
                let q: Vec<f32> = (0..batch * q_len * NUM_HEADS * HEAD_DIM)
                    .map(|_| rng.next())
                    .collect();
                let mut out = vec![0.0f32; q.len()];
                let paged: Vec<PagedSeq<'_>> = (0..batch)
                    .map(|b| PagedSeq {
                        query_start: b * q_len,
                        query_len: q_len,
                        context_len: len,
                        kv: &s.tables[b][..],
                    })
                    .collect();
                let contiguous: Vec<ContiguousSeq> = (0..batch)
                    .map(|b| ContiguousSeq {
                        query_start: b * q_len,
                        query_len: q_len,
                        context_len: len,
                        kv: s.arena.run(b * len),
                    })
                    .collect();
                group.throughput(Throughput::Bytes(
                    (2 * batch * len * NUM_HEADS * HEAD_DIM * 4) as u64,
                ));
                let id = format!("len{len}_batch{batch}");
                group.bench_function(BenchmarkId::new("paged", &id), |b| {
                    b.iter(|| {
                        paged_attention(&cfg, &s.cache, 0, black_box(&q), &paged, &mut out)
                            .expect("valid call");
                    });
                });
                group.bench_function(BenchmarkId::new("contiguous", &id), |b| {
                    b.iter(|| {
                        contiguous_attention(
                            &cfg,
                            &s.arena,
                            0,
                            black_box(&q),
                            &contiguous,
                            &mut out,
                        )
                        .expect("valid call");
                    });
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
