//! Invalid calls return typed errors and touch nothing; none of them panics or reads out
//! of bounds.

mod common;

use common::{Scenario, Shape};
use pagedattn_kernels::{
    contiguous_attention, paged_attention, AttentionConfig, AttentionKernel, AttentionPhase,
    ContiguousKv, ContiguousRun, Cpu, DType, Isa, KernelError, KvCache, KvShape, PagedAttention,
    PagedSeq,
};
use pagedattn_kv::{BlockCopy, BlockId};

fn scenario() -> Scenario {
    let shape = Shape {
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        block_size: 4,
        dtype: DType::F32,
    };
    Scenario::new(shape, &[(10, 1), (7, 3)], 5)
}

fn paged(
    sc: &Scenario,
    cfg: &AttentionConfig,
    seqs: &[PagedSeq<'_>],
) -> Result<Vec<f32>, KernelError> {
    let mut out = vec![0.0; sc.q.len()];
    paged_attention(cfg, &sc.cache, 1, &sc.q, seqs, &mut out).map(|()| out)
}

#[test]
fn head_dim_mismatch() {
    let sc = scenario();
    let cfg = AttentionConfig::new(4, 32);
    assert_eq!(
        paged(&sc, &cfg, &sc.paged_seqs()),
        Err(KernelError::HeadDimMismatch {
            store: 16,
            call: 32
        })
    );
}

#[test]
fn heads_not_a_multiple_of_kv_heads() {
    let sc = scenario();
    let cfg = AttentionConfig::new(3, 16);
    assert!(matches!(
        paged(&sc, &cfg, &sc.paged_seqs()),
        Err(KernelError::HeadMismatch { .. })
    ));
}

#[test]
fn context_longer_than_the_table() {
    let sc = scenario();
    let mut seqs = sc.paged_seqs();
    seqs[0].context_len = 13; // 3 blocks of 4 cover only 12
    let err = paged(&sc, &sc.config(), &seqs).unwrap_err();
    assert_eq!(
        err,
        KernelError::TableTooShort {
            seq: 0,
            context_len: 13,
            needed: 4,
            have: 3
        }
    );
}

#[test]
fn block_id_out_of_range() {
    let sc = scenario();
    let bad = [BlockId(0), BlockId(999), BlockId(1)];
    let mut seqs = sc.paged_seqs();
    seqs[0].kv = &bad;
    assert!(matches!(
        paged(&sc, &sc.config(), &seqs),
        Err(KernelError::BlockOutOfRange { block: 999, .. })
    ));
}

#[test]
fn query_rows_inconsistent() {
    let sc = scenario();
    let cfg = sc.config();
    let mut seqs = sc.paged_seqs();
    seqs[1].query_start = 0; // overlaps sequence 0
    assert!(matches!(
        paged(&sc, &cfg, &seqs),
        Err(KernelError::InvalidSequence { .. })
    ));
    let mut seqs = sc.paged_seqs();
    seqs[1].query_len = 8; // more new tokens than context
    assert!(matches!(
        paged(&sc, &cfg, &seqs),
        Err(KernelError::InvalidSequence { seq: 1, .. })
    ));
    let mut seqs = sc.paged_seqs();
    seqs[1].query_start = 3; // runs past q
    assert!(matches!(
        paged(&sc, &cfg, &seqs),
        Err(KernelError::InvalidSequence { seq: 1, .. })
    ));
    let mut seqs = sc.paged_seqs();
    seqs[0].query_len = 0;
    assert!(matches!(
        paged(&sc, &cfg, &seqs),
        Err(KernelError::InvalidSequence { seq: 0, .. })
    ));
}

#[test]
fn output_and_query_shapes() {
    let sc = scenario();
    let mut short = vec![0.0; sc.q.len() - 1];
    let err = paged_attention(
        &sc.config(),
        &sc.cache,
        1,
        &sc.q,
        &sc.paged_seqs(),
        &mut short,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        KernelError::LengthMismatch { what: "out", .. }
    ));
    let mut out = vec![0.0; sc.q.len() - 3];
    let err = paged_attention(
        &sc.config(),
        &sc.cache,
        1,
        &sc.q[3..],
        &sc.paged_seqs(),
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(err, KernelError::InvalidShape(_)));
    let err = paged_attention(
        &sc.config(),
        &sc.cache,
        9,
        &sc.q,
        &sc.paged_seqs(),
        &mut vec![0.0; sc.q.len()],
    );
    assert_eq!(
        err,
        Err(KernelError::LayerOutOfRange {
            layer: 9,
            num_layers: 2
        })
    );
}

#[test]
fn contiguous_run_past_the_arena() {
    let sc = scenario();
    let mut seqs = sc.contiguous_seqs();
    seqs[1].kv = ContiguousRun {
        offset: seqs[1].kv.offset + 1000 * 16,
        head_stride: seqs[1].kv.head_stride,
    };
    let mut out = vec![0.0; sc.q.len()];
    let err = contiguous_attention(&sc.config(), &sc.arena, 1, &sc.q, &seqs, &mut out).unwrap_err();
    assert!(matches!(err, KernelError::RunOutOfRange { seq: 1, .. }));
    // An absurd stride must not overflow into a small number.
    seqs[1].kv = ContiguousRun {
        offset: 0,
        head_stride: usize::MAX / 2,
    };
    let err = contiguous_attention(&sc.config(), &sc.arena, 1, &sc.q, &seqs, &mut out).unwrap_err();
    assert!(matches!(err, KernelError::RunOutOfRange { seq: 1, .. }));
}

#[test]
fn a_path_this_cpu_lacks_cannot_be_named() {
    // Every CPU lacks one of these (x86 has no NEON, aarch64 no AVX): a kernel can only be
    // handed a `Cpu` this machine runs.
    let mut missing = 0;
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Neon] {
        match Cpu::new(isa) {
            Ok(cpu) => assert!(isa.is_available() && cpu.isa() == isa),
            Err(e) => {
                missing += 1;
                assert!(!isa.is_available());
                assert_eq!(e, KernelError::IsaUnavailable(isa.name()));
                assert!(Cpu::parse(isa.name()).is_err());
            }
        }
    }
    assert!(missing >= 1);
}

#[test]
fn decode_phase_checks_query_lengths() {
    let sc = scenario();
    let kernel = PagedAttention::new(sc.config());
    let mut out = vec![0.0; sc.q.len()];
    let err = kernel.compute(
        AttentionPhase::Decode,
        &sc.cache,
        1,
        &sc.q,
        &sc.paged_seqs(),
        &mut out,
    );
    assert!(matches!(
        err,
        Err(KernelError::InvalidSequence { seq: 1, .. })
    ));
    kernel
        .compute(
            AttentionPhase::Prefill,
            &sc.cache,
            1,
            &sc.q,
            &sc.paged_seqs(),
            &mut out,
        )
        .unwrap();
    assert_eq!(kernel.name(), "paged");
}

#[test]
fn write_kv_validates_before_writing() {
    let shape = KvShape {
        num_layers: 1,
        num_kv_heads: 2,
        head_dim: 8,
        dtype: DType::Bf16,
    };
    let mut cache = KvCache::new(shape, 4, 4).unwrap();
    let row = vec![1.0f32; 2 * 8];
    // Slot 16 is one past the end; slot 3 before it must not be written either.
    let two = [row.clone(), row.clone()].concat();
    let err = cache.write_kv(0, &[3, 16], &two, &two).unwrap_err();
    assert_eq!(
        err,
        KernelError::SlotOutOfRange {
            slot: 16,
            capacity: 16
        }
    );
    assert_eq!(cache.read_slot(0, 3).unwrap().0, vec![0.0; 16]);
    let err = cache.write_kv(0, &[3], &row[1..], &row[1..]).unwrap_err();
    assert!(matches!(err, KernelError::LengthMismatch { what: "k", .. }));
    let err = cache.write_kv(1, &[3], &row, &row).unwrap_err();
    assert!(matches!(err, KernelError::LayerOutOfRange { .. }));
    assert!(matches!(
        cache.read_slot(0, 99),
        Err(KernelError::SlotOutOfRange { .. })
    ));

    let shape = KvShape {
        dtype: DType::F16,
        ..shape
    };
    let mut arena = ContiguousKv::new(shape, 5).unwrap();
    assert_eq!(
        arena.write_kv(0, &[5], &row, &row),
        Err(KernelError::SlotOutOfRange {
            slot: 5,
            capacity: 5
        })
    );
}

#[test]
fn zero_and_overflowing_shapes() {
    let base = KvShape {
        num_layers: 1,
        num_kv_heads: 2,
        head_dim: 8,
        dtype: DType::F32,
    };
    let zero_dim = KvShape {
        head_dim: 0,
        ..base
    };
    for (shape, blocks, block_size) in [
        (zero_dim, 4, 4),
        (base, usize::MAX / 2, 4),
        (base, 0, 4),
        (base, 4, 0),
        (base, 1 << 40, 1 << 30),
    ] {
        assert!(matches!(
            KvCache::new(shape, blocks, block_size),
            Err(KernelError::InvalidShape(_))
        ));
    }
    assert!(matches!(
        ContiguousKv::new(zero_dim, 4),
        Err(KernelError::InvalidShape(_))
    ));
    assert!(matches!(
        ContiguousKv::new(base, usize::MAX / 8),
        Err(KernelError::InvalidShape(_))
    ));
    assert!(ContiguousKv::standalone(2, 8, DType::F32, &[0.0; 15], &[0.0; 15]).is_err());
}

#[test]
fn copy_blocks_checks_ids_first() {
    let shape = KvShape {
        num_layers: 2,
        num_kv_heads: 1,
        head_dim: 4,
        dtype: DType::F32,
    };
    let mut cache = KvCache::new(shape, 4, 2).unwrap();
    cache.write_kv(1, &[2], &[1.0; 4], &[2.0; 4]).unwrap();
    let copy = |src, dst| BlockCopy {
        src: BlockId(src),
        dst: BlockId(dst),
    };
    let err = cache.copy_blocks(&[copy(1, 0), copy(2, 4)]).unwrap_err();
    assert_eq!(
        err,
        KernelError::BlockOutOfRange {
            block: 4,
            num_blocks: 4
        }
    );
    // The valid copy before the bad one did not happen either.
    assert_eq!(cache.read_slot(1, 0).unwrap(), (vec![0.0; 4], vec![0.0; 4]));
    cache.copy_blocks(&[copy(1, 0)]).unwrap();
    assert_eq!(cache.read_slot(1, 0).unwrap(), (vec![1.0; 4], vec![2.0; 4]));
}
