//! Shared test scenario: random sequences stored both paged (shuffled blocks) and
//! contiguous (runs in one arena), plus the f64 reference on the stored values.

#![allow(dead_code)]

use pagedattn_kernels::{
    reference_attention, AttentionConfig, ContiguousKv, ContiguousSeq, DType, KvCache, KvShape,
    PagedSeq, RefKv, RefSeq, RefShape,
};
use pagedattn_kv::BlockId;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug)]
pub struct Shape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub dtype: DType,
}

/// (context_len, query_len) per sequence.
pub struct Scenario {
    pub shape: Shape,
    pub q: Vec<f32>,
    pub cache: KvCache,
    pub tables: Vec<Vec<BlockId>>,
    pub arena: ContiguousKv,
    pub starts: Vec<usize>,
    pub lens: Vec<(usize, usize)>,
    pub query_starts: Vec<usize>,
    /// K and V per sequence as stored (rounded), `[ctx, kv_heads, head_dim]`.
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub tokens: usize,
}

impl Scenario {
    pub fn new(shape: Shape, lens: &[(usize, usize)], seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let (kvh, d, bs) = (shape.num_kv_heads, shape.head_dim, shape.block_size);
        let row = kvh * d;
        let blocks_needed: usize = lens.iter().map(|&(c, _)| c.div_ceil(bs)).sum();
        let num_blocks = blocks_needed + 7;
        let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
        ids.shuffle(&mut rng);
        let mut cache = KvCache::new(
            KvShape {
                num_layers: 2,
                num_kv_heads: kvh,
                head_dim: d,
                dtype: shape.dtype,
            },
            num_blocks,
            bs,
        )
        .unwrap();
        let capacity: usize = lens.iter().map(|&(c, _)| c + 3).sum();
        let mut arena = ContiguousKv::new(
            KvShape {
                num_layers: 2,
                num_kv_heads: kvh,
                head_dim: d,
                dtype: shape.dtype,
            },
            capacity,
        )
        .unwrap();
        let (mut tables, mut starts, mut ks, mut vs, mut query_starts) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut next_id, mut next_slot, mut tokens) = (0, 2, 0);
        for &(ctx, qlen) in lens {
            let nb = ctx.div_ceil(bs);
            let table: Vec<BlockId> = ids[next_id..next_id + nb]
                .iter()
                .map(|&i| BlockId(i))
                .collect();
            next_id += nb;
            let k: Vec<f32> = (0..ctx * row)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let v: Vec<f32> = (0..ctx * row)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let slots: Vec<usize> = (0..ctx)
                .map(|t| table[t / bs].index() * bs + t % bs)
                .collect();
            cache.write_kv(1, &slots, &k, &v).unwrap();
            let arena_slots: Vec<usize> = (next_slot..next_slot + ctx).collect();
            arena.write_kv(1, &arena_slots, &k, &v).unwrap();
            starts.push(next_slot);
            next_slot += ctx + 1;
            ks.push(k.iter().map(|&x| shape.dtype.round(x)).collect());
            vs.push(v.iter().map(|&x| shape.dtype.round(x)).collect());
            tables.push(table);
            query_starts.push(tokens);
            tokens += qlen;
        }
        let q: Vec<f32> = (0..tokens * shape.num_heads * d)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        Self {
            shape,
            q,
            cache,
            tables,
            arena,
            starts,
            lens: lens.to_vec(),
            query_starts,
            k: ks,
            v: vs,
            tokens,
        }
    }

    pub fn paged_seqs(&self) -> Vec<PagedSeq<'_>> {
        self.lens
            .iter()
            .enumerate()
            .map(|(i, &(ctx, qlen))| PagedSeq {
                query_start: self.query_starts[i],
                query_len: qlen,
                context_len: ctx,
                kv: &self.tables[i][..],
            })
            .collect()
    }

    pub fn contiguous_seqs(&self) -> Vec<ContiguousSeq> {
        self.lens
            .iter()
            .enumerate()
            .map(|(i, &(ctx, qlen))| ContiguousSeq {
                query_start: self.query_starts[i],
                query_len: qlen,
                context_len: ctx,
                kv: self.arena.run(self.starts[i]),
            })
            .collect()
    }

    pub fn config(&self) -> AttentionConfig {
        AttentionConfig::new(self.shape.num_heads, self.shape.head_dim)
            .with_tile_size(self.shape.block_size)
    }

    pub fn reference(&self, scale: f32) -> Vec<f64> {
        let seqs: Vec<RefSeq<'_>> = self
            .lens
            .iter()
            .enumerate()
            .map(|(i, &(ctx, qlen))| RefSeq {
                query_start: self.query_starts[i],
                query_len: qlen,
                context_len: ctx,
                kv: RefKv {
                    k: &self.k[i],
                    v: &self.v[i],
                },
            })
            .collect();
        let shape = RefShape {
            num_heads: self.shape.num_heads,
            num_kv_heads: self.shape.num_kv_heads,
            head_dim: self.shape.head_dim,
            scale: f64::from(scale),
        };
        reference_attention(shape, &self.q, &seqs).unwrap()
    }

    pub fn run_paged(&self, cfg: &AttentionConfig) -> Vec<f32> {
        let mut out = vec![0.0; self.q.len()];
        pagedattn_kernels::paged_attention(
            cfg,
            &self.cache,
            1,
            &self.q,
            &self.paged_seqs(),
            &mut out,
        )
        .unwrap();
        out
    }

    pub fn run_contiguous(&self, cfg: &AttentionConfig) -> Vec<f32> {
        let mut out = vec![0.0; self.q.len()];
        pagedattn_kernels::contiguous_attention(
            cfg,
            &self.arena,
            1,
            &self.q,
            &self.contiguous_seqs(),
            &mut out,
        )
        .unwrap();
        out
    }
}

/// The error norm of the tests: per output row (one token, one head), the largest absolute
/// difference divided by the largest absolute reference value of that row; the maximum
/// over rows.
pub fn max_rel_error(out: &[f32], reference: &[f64], head_dim: usize) -> f64 {
    out.chunks(head_dim)
        .zip(reference.chunks(head_dim))
        .map(|(o, r)| {
            let scale = r.iter().fold(0.0f64, |a, &x| a.max(x.abs())).max(1e-30);
            let diff = o
                .iter()
                .zip(r)
                .fold(0.0f64, |a, (&x, &y)| a.max((f64::from(x) - y).abs()));
            diff / scale
        })
        .fold(0.0, f64::max)
}
