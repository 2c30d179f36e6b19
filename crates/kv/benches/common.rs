//! Shared set-up for the kv benches: a pool whose free queue is shuffled by churn, as in a
//! serving system that has been running for a while.

use pagedattn_kv::{BlockManager, KvConfig, SeqId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Criterion settings that keep the whole grid to a few minutes.
pub fn config() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(900))
        .sample_size(30)
}

/// A manager of `blocks` blocks (the seed's shape) after random allocation churn.
pub fn churned(blocks: usize) -> BlockManager {
    let mut m = BlockManager::new(KvConfig::new(blocks)).expect("valid config");
    let mut rng = SmallRng::seed_from_u64(42);
    let seqs = 64u64;
    for s in 0..seqs {
        m.add_sequence(SeqId(s)).expect("new sequence");
    }
    for _ in 0..blocks.min(200_000) {
        let s = SeqId(rng.random_range(0..seqs));
        if m.num_free_blocks() > 0 && rng.random_bool(0.6) {
            m.allocate_block(s).expect("free block");
        } else if let Some(&b) = m.tables().blocks(s).expect("known").last() {
            m.free_block(s, b).expect("last block");
        }
    }
    for s in 0..seqs {
        m.free_sequence(SeqId(s)).expect("known");
    }
    m
}
