//! KV stores: writes land where the layout says, copy-on-write copies whole blocks in every
//! layer, and storage rounding is what `DType::round` predicts.

use pagedattn_kernels::{
    contiguous_attention, paged_attention, AttentionConfig, ContiguousKv, ContiguousRun,
    ContiguousSeq, DType, KvCache, KvShape, PagedSeq,
};
use pagedattn_kv::{BlockCopy, BlockId};

/// Two layers, 6 blocks of 4 tokens, 2 KV heads of 8.
fn cache(dtype: DType) -> KvCache {
    let shape = KvShape {
        num_layers: 2,
        num_kv_heads: 2,
        head_dim: 8,
        dtype,
    };
    KvCache::new(shape, 6, 4).unwrap()
}

fn rows(n: usize, seed: f32) -> Vec<f32> {
    (0..n * 16)
        .map(|i| ((i as f32 + seed) * 0.37).sin())
        .collect()
}

#[test]
fn write_then_read_back_every_dtype() {
    for dtype in [DType::F32, DType::F16, DType::Bf16] {
        let mut cache = cache(dtype);
        let (k, v) = (rows(3, 1.0), rows(3, 2.0));
        cache.write_kv(1, &[5, 0, 23], &k, &v).unwrap();
        for (i, slot) in [5usize, 0, 23].into_iter().enumerate() {
            let (rk, rv) = cache.read_slot(1, slot).unwrap();
            let want_k: Vec<f32> = k[i * 16..(i + 1) * 16]
                .iter()
                .map(|&x| dtype.round(x))
                .collect();
            let want_v: Vec<f32> = v[i * 16..(i + 1) * 16]
                .iter()
                .map(|&x| dtype.round(x))
                .collect();
            assert_eq!(rk, want_k, "{dtype}");
            assert_eq!(rv, want_v, "{dtype}");
        }
        // The other layer is untouched.
        assert_eq!(cache.read_slot(0, 5).unwrap().0, vec![0.0; 16]);
    }
}

#[test]
fn copy_blocks_copies_all_layers() {
    let mut cache = cache(DType::F32);
    for layer in 0..2 {
        let slots: Vec<usize> = (8..12).collect(); // block 2
        cache
            .write_kv(layer, &slots, &rows(4, layer as f32), &rows(4, 9.0))
            .unwrap();
    }
    cache
        .copy_blocks(&[BlockCopy {
            src: BlockId(2),
            dst: BlockId(5),
        }])
        .unwrap();
    for layer in 0..2 {
        for off in 0..4 {
            assert_eq!(
                cache.read_slot(layer, 8 + off).unwrap(),
                cache.read_slot(layer, 20 + off).unwrap()
            );
        }
    }
}

#[test]
fn standalone_buffer_equals_arena_run_and_paged() {
    // One sequence of 6 tokens, read three ways; same tiles, so bitwise equal.
    let (kvh, d, len) = (2, 8, 6);
    let k_tokens = rows(len, 3.0); // [len, kvh, d]
    let v_tokens = rows(len, 4.0);
    // Standalone layout is [kvh, len, d].
    let to_head_major = |x: &[f32]| -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        for t in 0..len {
            for h in 0..kvh {
                out[(h * len + t) * d..(h * len + t + 1) * d]
                    .copy_from_slice(&x[(t * kvh + h) * d..(t * kvh + h + 1) * d]);
            }
        }
        out
    };
    let standalone = ContiguousKv::standalone(
        kvh,
        d,
        DType::F32,
        &to_head_major(&k_tokens),
        &to_head_major(&v_tokens),
    )
    .unwrap();
    let mut cache = cache(DType::F32);
    let table = [BlockId(4), BlockId(1)];
    let slots: Vec<usize> = (0..len).map(|t| table[t / 4].index() * 4 + t % 4).collect();
    cache.write_kv(0, &slots, &k_tokens, &v_tokens).unwrap();

    let q: Vec<f32> = (0..2 * 4 * d).map(|i| (i as f32 * 0.11).cos()).collect();
    let cfg = AttentionConfig::new(4, d).with_tile_size(4);
    let mut a = vec![0.0; q.len()];
    let mut b = vec![0.0; q.len()];
    paged_attention(
        &cfg,
        &cache,
        0,
        &q,
        &[PagedSeq {
            query_start: 0,
            query_len: 2,
            context_len: len,
            kv: &table,
        }],
        &mut a,
    )
    .unwrap();
    let run = ContiguousRun::standalone(len, d);
    contiguous_attention(
        &cfg,
        &standalone,
        0,
        &q,
        &[ContiguousSeq {
            query_start: 0,
            query_len: 2,
            context_len: len,
            kv: run,
        }],
        &mut b,
    )
    .unwrap();
    assert_eq!(a, b);
}
