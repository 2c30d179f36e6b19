//! Every kernel path against the f64 reference, on every instruction set this CPU has:
//! head dims, GQA ratios, block sizes, long and partial contexts, shuffled blocks, chunked
//! prefill over a cached prefix, and mixed decode + prefill batches.

mod common;

use common::{max_rel_error, Scenario, Shape};
use pagedattn_kernels::testing::every_isa;
use pagedattn_kernels::{DType, SplitPolicy};

const F32_BOUND: f64 = 1e-5;

fn check(shape: &Shape, lens: &[(usize, usize)], seed: u64, split: SplitPolicy) {
    let sc = Scenario::new(shape.clone(), lens, seed);
    let cfg = sc.config();
    let reference = sc.reference(cfg.scale);
    every_isa(|cpu| {
        let cfg = cfg.with_cpu(cpu).with_split(split);
        let paged = sc.run_paged(&cfg);
        let err = max_rel_error(&paged, &reference, shape.head_dim);
        assert!(
            err < F32_BOUND,
            "{cpu} {shape:?} {lens:?} split {split:?}: rel error {err:e}"
        );
        let contiguous = sc.run_contiguous(&cfg);
        assert!(
            paged
                .iter()
                .zip(&contiguous)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{cpu} {shape:?} {lens:?}: paged and contiguous differ"
        );
    });
}

fn shape(
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    dtype: DType,
) -> Shape {
    Shape {
        num_heads,
        num_kv_heads,
        head_dim,
        block_size,
        dtype,
    }
}

#[test]
fn decode_head_dims_and_gqa() {
    let mut seed = 1;
    for head_dim in [64, 80, 96, 128, 256] {
        for (heads, kv_heads) in [(2, 2), (8, 2), (8, 1)] {
            let bs = [1, 8, 16, 32][seed as usize % 4];
            let lens = [(1, 1), (bs + 3, 1), (517, 1), (2000, 1)];
            check(
                &shape(heads, kv_heads, head_dim, bs, DType::F32),
                &lens,
                seed,
                SplitPolicy::Off,
            );
            seed += 1;
        }
    }
}

#[test]
fn every_block_size_with_partial_blocks() {
    for (i, bs) in [1usize, 8, 16, 32].into_iter().enumerate() {
        let lens = [(bs * 5 + 1, 1), (bs * 3, 1), (bs.max(2) - 1, 1), (97, 4)];
        check(
            &shape(4, 1, 64, bs, DType::F32),
            &lens,
            100 + i as u64,
            SplitPolicy::Auto,
        );
    }
}

#[test]
fn prefill_and_chunked_prefill_over_a_cached_prefix() {
    // A whole prompt, a chunk after a 300-token cached prefix, a chunk that starts
    // mid-block, and decode sequences in the same batch.
    let lens = [(70, 70), (340, 40), (45, 13), (600, 1), (9, 1)];
    for (heads, kv_heads) in [(3, 3), (8, 2), (8, 1)] {
        check(
            &shape(heads, kv_heads, 64, 16, DType::F32),
            &lens,
            7 + heads as u64,
            SplitPolicy::Off,
        );
    }
    check(
        &shape(4, 2, 128, 8, DType::F32),
        &lens,
        21,
        SplitPolicy::Fixed(3),
    );
    check(
        &shape(2, 2, 80, 32, DType::F32),
        &lens,
        22,
        SplitPolicy::Auto,
    );
}

#[test]
fn prefill_with_head_dims_off_the_vector_width() {
    // Head sizes that leave a remainder after every vector and register block of the
    // rows shape (pairs of row groups, 8 value elements per pass), on both the paired
    // and the single-group path (an odd number of 16-row groups).
    let lens = [(75, 75), (40, 17), (3, 3)];
    for (head_dim, heads) in [(36, 3), (20, 4), (13, 2), (100, 1)] {
        for dtype in [DType::F32, DType::Bf16] {
            let seed = 40 + head_dim as u64;
            check(
                &shape(heads, 1, head_dim, 16, dtype),
                &lens,
                seed,
                SplitPolicy::Off,
            );
        }
    }
}

#[test]
fn split_k_merges_to_the_same_result() {
    let lens = [(1999, 1), (1500, 1), (800, 20)];
    for split in [
        SplitPolicy::Fixed(2),
        SplitPolicy::Fixed(7),
        SplitPolicy::Fixed(1000),
    ] {
        check(&shape(9, 3, 64, 16, DType::F32), &lens, 31, split);
    }
}

#[test]
fn half_precision_storage_within_rounding() {
    // The reference sees the stored (rounded) K/V, so only f32 arithmetic error remains.
    for dtype in [DType::F16, DType::Bf16] {
        let lens = [(1200, 1), (333, 1), (150, 30)];
        check(&shape(8, 2, 128, 16, dtype), &lens, 41, SplitPolicy::Auto);
        check(&shape(4, 4, 96, 8, dtype), &lens, 42, SplitPolicy::Fixed(4));
        check(
            &shape(8, 1, 256, 32, dtype),
            &[(77, 1), (40, 40)],
            43,
            SplitPolicy::Off,
        );
    }
}

#[test]
fn padded_baseline_matches_the_reference() {
    let sc = Scenario::new(
        shape(4, 2, 64, 16, DType::F32),
        &[(300, 1), (17, 1), (129, 1)],
        51,
    );
    let cfg = sc.config();
    let reference = sc.reference(cfg.scale);
    // Padded needs every run to hold the longest context: use standalone stores per call
    // is not possible, so lay the runs out with room to spare.
    let max_ctx = 300;
    let mut arena = pagedattn_kernels::ContiguousKv::new(
        pagedattn_kernels::KvShape {
            num_layers: 1,
            num_kv_heads: 2,
            head_dim: 64,
            dtype: DType::F32,
        },
        3 * max_ctx,
    )
    .unwrap();
    let mut seqs = sc.contiguous_seqs();
    for (i, s) in seqs.iter_mut().enumerate() {
        let slots: Vec<usize> = (i * max_ctx..i * max_ctx + s.context_len).collect();
        arena.write_kv(0, &slots, &sc.k[i], &sc.v[i]).unwrap();
        s.kv = arena.run(i * max_ctx);
    }
    every_isa(|cpu| {
        let mut out = vec![0.0; sc.q.len()];
        pagedattn_kernels::padded_attention(&cfg.with_cpu(cpu), &arena, 0, &sc.q, &seqs, &mut out)
            .unwrap();
        let err = max_rel_error(&out, &reference, 64);
        assert!(err < F32_BOUND, "{cpu}: padded rel error {err:e}");
    });
}

#[test]
fn thread_count_does_not_change_results_for_a_fixed_split() {
    // One thread runs the units on the calling thread, more threads on the pool; with the
    // split fixed the arithmetic is the same, so the outputs are bitwise equal.
    let sc = Scenario::new(
        shape(8, 2, 64, 16, DType::Bf16),
        &[(900, 1), (300, 50), (33, 1)],
        61,
    );
    let cfg = sc.config().with_split(SplitPolicy::Fixed(3));
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(|| sc.run_paged(&cfg));
    let two = pool(2).install(|| sc.run_paged(&cfg));
    assert!(one
        .iter()
        .zip(&two)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let err = max_rel_error(&one, &sc.reference(cfg.scale), 64);
    assert!(err < F32_BOUND, "rel error {err:e}");
}
