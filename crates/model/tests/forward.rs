//! Forward-pass behaviour on small random models (no files needed): incremental decoding
//! through a shuffled paged cache equals one prefill, batching does not change results,
//! paged and contiguous stores agree, and bad batches are errors.

mod common;

use common::{chunked_logits, max_diff, paged_cache, prefill_all, shuffled_table, step};
use pagedattn_kernels::{Batch, ContiguousKv, DType, KvLocation, LogitsFor};
use pagedattn_kv::BlockId;
use pagedattn_model::{Model, ModelError, WeightDType};
use proptest::prelude::*;

fn tiny() -> Model {
    Model::random_named("tiny", 42, WeightDType::F32).unwrap()
}

fn tokens(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97) >> 7) % 256)
        .collect()
}

#[test]
fn incremental_decode_through_shuffled_blocks_equals_one_prefill() {
    let model = tiny();
    let toks = tokens(53, 1);
    let full = prefill_all(&model, &toks, 4);
    // A 5-token prompt, then one token at a time.
    let inc = chunked_logits(&model, &toks, &[5], 4, 3);
    assert_eq!(inc.len(), toks.len());
    for (p, row) in inc.iter().enumerate() {
        assert!(
            max_diff(row, full.row(p)) < 1e-4,
            "position {p}: {}",
            max_diff(row, full.row(p))
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn any_chunking_and_block_placement_gives_the_same_logits(
        len in 1usize..40, chunks in proptest::collection::vec(1usize..12, 1..8),
        block_size in prop_oneof![Just(1usize), Just(3), Just(16)], seed in 0usize..1000,
    ) {
        let model = tiny();
        let toks = tokens(len, seed as u32);
        let full = prefill_all(&model, &toks, block_size);
        let inc = chunked_logits(&model, &toks, &chunks, block_size, seed);
        for (p, row) in inc.iter().enumerate() {
            prop_assert!(max_diff(row, full.row(p)) < 1e-4);
        }
    }
}

#[test]
fn one_mixed_batch_equals_each_sequence_alone() {
    let model = tiny();
    let bs = 4;
    let (a, b, c) = (tokens(9, 1), tokens(14, 2), tokens(6, 3));
    // Sequences a and b have their prompts cached already; c arrives now.
    let mut cache = paged_cache(model.config(), 24, bs);
    let (ta, tb, tc) = (
        shuffled_table(3, 24, 1),
        vec![BlockId(20), BlockId(5), BlockId(9), BlockId(2)],
        vec![BlockId(0), BlockId(13)],
    );
    assert!(ta.iter().all(|x| !tb.contains(x) && !tc.contains(x)));
    step(&model, &mut cache, &ta, &a[..8], 0, LogitsFor::None);
    step(&model, &mut cache, &tb, &b[..10], 0, LogitsFor::None);
    let mut batch = Batch::paged(bs);
    batch
        .push(&a[8..], 8, KvLocation::Paged(&ta), LogitsFor::Last)
        .unwrap()
        .push(&b[10..], 10, KvLocation::Paged(&tb), LogitsFor::All)
        .unwrap()
        .push(&c, 0, KvLocation::Paged(&tc), LogitsFor::Last)
        .unwrap();
    let got = model.forward(&batch, &mut cache).unwrap();
    assert_eq!(got.len(), 1 + 4 + 1);
    let expect = [
        (0, &a, 8),
        (1, &b, 10),
        (1, &b, 11),
        (1, &b, 12),
        (1, &b, 13),
        (2, &c, 5),
    ];
    for (i, &(seq, toks, pos)) in expect.iter().enumerate() {
        assert_eq!((got.rows[i].seq, got.rows[i].position), (seq, pos));
        let alone = prefill_all(&model, &toks[..=pos], bs);
        assert!(max_diff(got.row(i), alone.row(pos)) < 1e-4, "row {i}");
    }
    assert_eq!(got.last_for_seq(1), Some(got.row(4)));
}

#[test]
fn paged_and_contiguous_stores_give_the_same_logits() {
    let model = tiny();
    let c = model.config();
    let toks = tokens(20, 5);
    let paged = prefill_all(&model, &toks, 16);
    let mut store = ContiguousKv::new(c.kv_shape(DType::F32), 64).unwrap();
    // The sequence owns arena slots 30..50; prefill 12 tokens, then decode the rest.
    let mut rows = Vec::new();
    for (start, end) in [(0, 12)].into_iter().chain((12..20).map(|p| (p, p + 1))) {
        let mut batch = Batch::contiguous();
        let at = KvLocation::Contiguous { start_slot: 30 };
        batch
            .push(&toks[start..end], start, at, LogitsFor::All)
            .unwrap();
        assert_eq!(batch.slots(), (30 + start..30 + end).collect::<Vec<_>>());
        let l = model.forward(&batch, &mut store).unwrap();
        rows.extend((0..l.len()).map(|i| l.row(i).to_vec()));
    }
    for (p, row) in rows.iter().enumerate() {
        assert!(max_diff(row, paged.row(p)) < 1e-4, "position {p}");
    }
}

#[test]
fn bf16_weights_track_f32() {
    let (f, b) = (
        tiny(),
        Model::random_named("tiny", 42, WeightDType::Bf16).unwrap(),
    );
    assert!(b.weight_bytes() < f.weight_bytes() * 6 / 10);
    let toks = tokens(10, 9);
    let (lf, lb) = (prefill_all(&f, &toks, 4), prefill_all(&b, &toks, 4));
    assert!(
        max_diff(&lf.data, &lb.data) < 2e-2,
        "{}",
        max_diff(&lf.data, &lb.data)
    );
}

#[test]
fn bad_batches_are_errors_and_write_nothing() {
    let model = tiny();
    let max = model.config().max_context;
    let mut cache = paged_cache(model.config(), 4, 4);
    let table = [BlockId(1)];
    // A batch refuses what it cannot describe: no new tokens, a table too short.
    let mut batch = Batch::paged(4);
    assert!(batch
        .push(&[], 0, KvLocation::Paged(&table), LogitsFor::Last)
        .is_err());
    assert!(batch
        .push(&[1, 2], 3, KvLocation::Paged(&table), LogitsFor::Last)
        .is_err());
    assert!(batch.is_empty());
    // The model refuses what its own limits exclude, before writing anything: a token
    // outside the vocabulary, positions past its context.
    let long = vec![BlockId(1); (max + 1).div_ceil(4)];
    let cases: [(&[u32], usize, &[BlockId]); 2] = [(&[300], 0, &table), (&[1], max, &long)];
    for (toks, start, t) in cases {
        let mut batch = Batch::paged(4);
        batch
            .push(toks, start, KvLocation::Paged(t), LogitsFor::Last)
            .unwrap();
        assert!(
            matches!(
                model.forward(&batch, &mut cache),
                Err(ModelError::InvalidBatch(_))
            ),
            "{toks:?} {start}"
        );
    }
    for l in 0..model.config().num_layers {
        assert!(cache.read_slot(l, 4).unwrap().0.iter().all(|&x| x == 0.0));
    }
    // A contiguous batch on a paged store, and a block past the cache, are kernel errors.
    let mut batch = Batch::contiguous();
    let at = KvLocation::Contiguous { start_slot: 0 };
    batch.push(&[1], 0, at, LogitsFor::Last).unwrap();
    assert!(matches!(
        model.forward(&batch, &mut cache),
        Err(ModelError::Kernel(_))
    ));
    let mut batch = Batch::paged(4);
    let past = [BlockId(99)];
    batch
        .push(&[1], 0, KvLocation::Paged(&past), LogitsFor::Last)
        .unwrap();
    assert!(matches!(
        model.forward(&batch, &mut cache),
        Err(ModelError::Kernel(_))
    ));
    // An empty batch is fine and returns no rows.
    assert!(model
        .forward(&Batch::paged(4), &mut cache)
        .unwrap()
        .is_empty());
}

#[test]
fn model_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Model>();
}
