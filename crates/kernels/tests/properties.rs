//! Property tests: random shapes, lengths, block placements and split policies; every
//! available instruction set matches the reference, and paged equals contiguous bit for bit.

mod common;

use common::{max_rel_error, Scenario, Shape};
use pagedattn_kernels::{Cpu, DType, Isa, SplitPolicy};
use proptest::prelude::*;

fn lens_strategy() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec(
        (1usize..700, 0usize..3).prop_flat_map(|(ctx, kind)| {
            let q = match kind {
                0 => Just(1).boxed(),
                _ => (1..=ctx.min(24)).boxed(),
            };
            (Just(ctx), q)
        }),
        1..5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn kernels_match_reference(
        kv_heads in 1usize..3,
        ratio in prop::sample::select(vec![1usize, 2, 3, 4, 8]),
        head_dim in prop::sample::select(vec![8usize, 16, 40, 64, 72, 128]),
        block_size in prop::sample::select(vec![1usize, 3, 8, 16, 32]),
        dtype in prop::sample::select(vec![DType::F32, DType::F16, DType::Bf16]),
        split in prop::sample::select(vec![SplitPolicy::Auto, SplitPolicy::Off, SplitPolicy::Fixed(3)]),
        lens in lens_strategy(),
        seed in any::<u64>(),
    ) {
        let shape = Shape { num_heads: kv_heads * ratio, num_kv_heads: kv_heads, head_dim, block_size, dtype };
        let sc = Scenario::new(shape, &lens, seed);
        let reference = sc.reference(sc.config().scale);
        // Every instruction set this CPU has (the accuracy tests report the ones it lacks).
        for isa in Isa::available() {
            let cfg = sc.config().with_cpu(Cpu::new(isa).unwrap()).with_split(split);
            let paged = sc.run_paged(&cfg);
            let err = max_rel_error(&paged, &reference, head_dim);
            prop_assert!(err < 1e-5, "{} rel error {:e}", isa, err);
            let contiguous = sc.run_contiguous(&cfg);
            prop_assert!(paged.iter().zip(&contiguous).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
