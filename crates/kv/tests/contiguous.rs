//! The contiguous baseline allocator: unit tests and a model-based property test against
//! a slot-by-slot reference arena (first fit = the lowest address with enough free slots
//! in a row, which also proves free runs are coalesced).

use pagedattn_kv::{ContiguousAllocator, ContiguousSizing, KvConfig, KvError, SeqId};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[test]
fn policies_size_reservations() {
    assert_eq!(ContiguousSizing::Max.slots_for(100, 2048), 2048);
    assert_eq!(ContiguousSizing::Pow2.slots_for(100, 2048), 128);
    assert_eq!(ContiguousSizing::Pow2.slots_for(128, 2048), 128);
    assert_eq!(ContiguousSizing::Oracle.slots_for(100, 2048), 100);
    assert_eq!(ContiguousSizing::Oracle.slots_for(0, 2048), 1);
}

#[test]
fn rejects_invalid_arenas() {
    assert!(matches!(
        ContiguousAllocator::new(0, ContiguousSizing::Oracle, 64, 1),
        Err(KvError::InvalidConfig(_))
    ));
    assert!(matches!(
        ContiguousAllocator::new(10, ContiguousSizing::Max, 0, 1),
        Err(KvError::InvalidConfig(_))
    ));
    assert!(matches!(
        ContiguousAllocator::new(1 << 40, ContiguousSizing::Oracle, 64, u64::MAX / 2),
        Err(KvError::InvalidConfig(_))
    ));
}

#[test]
fn external_fragmentation_is_real() {
    let mut a = ContiguousAllocator::new(100, ContiguousSizing::Oracle, 100, 8).unwrap();
    for s in 0..5 {
        a.reserve(SeqId(s), 20).unwrap();
    }
    a.free(SeqId(1)).unwrap();
    a.free(SeqId(3)).unwrap();
    let st = a.stats();
    assert_eq!(
        (st.free_slots, st.largest_free_run, st.free_runs),
        (40, 20, 2)
    );
    assert_eq!(st.external_fragmentation_slots, 20);
    // 40 slots are free, but not 30 in a row.
    assert_eq!(
        a.reserve(SeqId(9), 30),
        Err(KvError::OutOfSlots {
            requested: 30,
            largest_free_run: 20,
            free: 40
        })
    );
    assert_eq!(a.stats().fragmentation_failures, 1);
    // Freeing the middle one coalesces all three into one run.
    a.free(SeqId(2)).unwrap();
    assert_eq!(a.stats().largest_free_run, 60);
    assert_eq!(a.reserve(SeqId(9), 30).unwrap().start, 20);
    a.check_invariants().unwrap();
}

#[test]
fn internal_fragmentation_and_errors() {
    let cfg = KvConfig::new(8)
        .with_block_size(16)
        .with_bytes_per_token(100);
    let mut a = ContiguousAllocator::from_config(&cfg, ContiguousSizing::Max, 64).unwrap();
    assert_eq!(a.capacity(), 128);
    let r = a.reserve(SeqId(1), 10).unwrap();
    assert_eq!((r.start, r.len), (0, 64));
    a.append(SeqId(1), 10).unwrap();
    let st = a.stats();
    assert_eq!(
        (
            st.reserved_slots,
            st.tokens_stored,
            st.internal_fragmentation_slots
        ),
        (64, 10, 54)
    );
    assert!((st.utilization - 10.0 / 64.0).abs() < 1e-12);
    // 128 slots of 100 bytes.
    assert_eq!(st.kv_bytes, 12_800);
    assert_eq!(
        a.reserve(SeqId(1), 5),
        Err(KvError::SequenceExists(SeqId(1)))
    );
    assert_eq!(
        a.append(SeqId(1), 55),
        Err(KvError::ReservationExceeded {
            seq: SeqId(1),
            reserved: 64,
            requested: 65
        })
    );
    assert_eq!(
        a.append(SeqId(2), 1),
        Err(KvError::UnknownSequence(SeqId(2)))
    );
    assert_eq!(a.free(SeqId(2)), Err(KvError::UnknownSequence(SeqId(2))));
    assert!(a.can_reserve(1));
    a.reserve(SeqId(2), 1).unwrap();
    assert!(!a.can_reserve(1));
    a.check_invariants().unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Reserve { seq: u64, final_len: usize },
    Append { seq: u64, n: usize },
    Free(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..8u64, 0..40usize).prop_map(|(seq, final_len)| Op::Reserve { seq, final_len }),
        (0..8u64, 0..12usize).prop_map(|(seq, n)| Op::Append { seq, n }),
        (0..8u64).prop_map(Op::Free),
    ]
}

const CAP: usize = 100;

// The reference check reads clearer as "exists? else insert" than through the entry API.
#[allow(clippy::map_entry)]
fn run(sizing: ContiguousSizing, ops: &[Op]) {
    const MAX_LEN: usize = 24;
    let mut a = ContiguousAllocator::new(CAP, sizing, MAX_LEN, 4).unwrap();
    let mut slots = [false; CAP]; // reference arena: slot taken?
    let mut seqs: BTreeMap<u64, (usize, usize, usize)> = BTreeMap::new(); // start, len, used
    for op in ops {
        let mut before = a.stats();
        match *op {
            Op::Reserve { seq, final_len } => {
                let need = sizing.slots_for(final_len, MAX_LEN);
                let first_fit = (0..CAP.saturating_sub(need - 1))
                    .find(|&s| slots[s..s + need].iter().all(|x| !x));
                let r = a.reserve(SeqId(seq), final_len);
                let failed = r.is_err();
                if seqs.contains_key(&seq) {
                    assert_eq!(r, Err(KvError::SequenceExists(SeqId(seq))));
                } else if let Some(start) = first_fit {
                    let r = r.unwrap();
                    assert_eq!((r.start, r.len, r.used), (start, need, 0));
                    slots[start..start + need].fill(true);
                    seqs.insert(seq, (start, need, 0));
                } else {
                    assert!(matches!(r, Err(KvError::OutOfSlots { .. })), "{r:?}");
                    // A refusal is counted; nothing else moves.
                    before.fragmentation_failures = a.stats().fragmentation_failures;
                }
                if failed {
                    assert_eq!(a.stats(), before);
                }
            }
            Op::Append { seq, n } => {
                let r = a.append(SeqId(seq), n);
                match seqs.get_mut(&seq) {
                    Some(e) if e.2 + n <= e.1 => {
                        e.2 += n;
                        assert_eq!(r.unwrap().used, e.2);
                    }
                    _ => {
                        assert!(r.is_err());
                        assert_eq!(a.stats(), before);
                    }
                }
            }
            Op::Free(seq) => {
                let r = a.free(SeqId(seq));
                match seqs.remove(&seq) {
                    Some((start, len, _)) => {
                        r.unwrap();
                        slots[start..start + len].fill(false);
                    }
                    None => assert_eq!(r, Err(KvError::UnknownSequence(SeqId(seq)))),
                }
            }
        }
        a.check_invariants().unwrap();
        let st = a.stats();
        assert_eq!(st.free_slots, slots.iter().filter(|x| !**x).count());
        assert_eq!(st.tokens_stored, seqs.values().map(|e| e.2).sum::<usize>());
    }
    for s in seqs.keys() {
        a.free(SeqId(*s)).unwrap();
    }
    let st = a.stats();
    assert_eq!(
        (st.free_slots, st.free_runs, st.largest_free_run),
        (CAP, 1, CAP)
    );
    a.check_invariants().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn oracle_matches_reference(ops in prop::collection::vec(op(), 1..150)) {
        run(ContiguousSizing::Oracle, &ops);
    }

    #[test]
    fn pow2_matches_reference(ops in prop::collection::vec(op(), 1..150)) {
        run(ContiguousSizing::Pow2, &ops);
    }

    #[test]
    fn max_matches_reference(ops in prop::collection::vec(op(), 1..150)) {
        run(ContiguousSizing::Max, &ops);
    }
}
