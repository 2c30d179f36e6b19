//! The pool view agrees with the counters, aggregates large pools into bounded cells, and
//! names the latest copy-on-write targets.

use pagedattn_kv::{BlockManager, KvConfig, PoolView, SeqId, RECENT_COPIES};

fn totals(v: &PoolView) -> (u32, u32, u32, u32) {
    v.cells.iter().fold((0, 0, 0, 0), |t, c| {
        (
            t.0 + c.free,
            t.1 + c.cached_free,
            t.2 + c.used,
            t.3 + c.shared,
        )
    })
}

fn agrees(m: &BlockManager, v: &PoolView) {
    let s = m.stats();
    let (free, cached, used, shared) = totals(v);
    assert_eq!(free as usize + cached as usize, s.free_blocks);
    assert_eq!(cached as usize, s.cached_free_blocks);
    assert_eq!(used as usize + shared as usize, s.used_blocks);
    assert_eq!(v.num_blocks, s.total_blocks);
    assert!(v.cells.len() * v.blocks_per_cell >= v.num_blocks);
}

#[test]
fn every_state_is_counted_once() {
    let mut m = BlockManager::new(
        KvConfig::new(16)
            .with_block_size(4)
            .with_prefix_caching(true),
    )
    .unwrap();
    let (a, b, c) = (SeqId(1), SeqId(2), SeqId(3));
    m.add_sequence(a).unwrap();
    m.append_tokens(a, &[1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap(); // 3 blocks
    m.fork(a, b).unwrap(); // all three shared
    m.append_tokens(b, &[10]).unwrap(); // copy-on-write of the partial block
    m.add_sequence(c).unwrap();
    m.append_tokens(c, &[20, 21, 22, 23, 24]).unwrap(); // 2 blocks
    m.free_sequence(c).unwrap(); // its full block stays cached
    let v = m.pool_view(1000);
    assert_eq!((v.blocks_per_cell, v.cells.len()), (1, 16));
    assert_eq!(totals(&v), (16 - 4 - 1, 1, 2, 2));
    agrees(&m, &v);
    let shared: Vec<_> = v.cells.iter().filter(|c| c.shared == 1).collect();
    assert!(shared.iter().all(|c| c.max_refs == 2 && c.owner.is_some()));
    // The copy went to b's new last block.
    let last = *m.tables().blocks(b).unwrap().last().unwrap();
    assert_eq!(v.cow_copies, 1);
    assert_eq!(v.recent_copies, vec![(1, last.0)]);
    assert_eq!(v.cells[last.index()].owner, Some(2));
}

#[test]
fn a_large_pool_is_aggregated_into_bounded_cells() {
    let mut m = BlockManager::new(KvConfig::new(100_000).with_block_size(16)).unwrap();
    for s in 0..50u64 {
        m.add_sequence(SeqId(s)).unwrap();
        m.allocate_blocks(SeqId(s), 900).unwrap();
    }
    let v = m.pool_view(4096);
    assert!(v.cells.len() <= 4096, "{} cells", v.cells.len());
    assert_eq!(v.blocks_per_cell, 25);
    agrees(&m, &v);
    assert_eq!(totals(&v).2, 45_000);
    // A JSON view of 100,000 blocks stays small.
    let json = serde_json::to_string(&v).unwrap();
    assert!(json.len() < 400_000, "{} bytes", json.len());
}

#[test]
fn only_the_latest_copies_are_kept() {
    let mut m = BlockManager::new(KvConfig::new(256).with_block_size(4)).unwrap();
    let root = SeqId(0);
    m.add_sequence(root).unwrap();
    m.append_tokens(root, &[1, 2]).unwrap();
    for s in 1..=40u64 {
        m.fork(root, SeqId(s)).unwrap();
        m.append_tokens(SeqId(s), &[3]).unwrap(); // copies the shared partial block
    }
    let v = m.pool_view(64);
    assert_eq!(v.cow_copies, 40);
    assert_eq!(v.recent_copies.len(), RECENT_COPIES);
    assert_eq!(
        v.recent_copies.first().unwrap().0,
        40 - RECENT_COPIES as u64 + 1
    );
    for (k, b) in &v.recent_copies {
        let seq = SeqId(*k);
        assert_eq!(m.tables().blocks(seq).unwrap()[0].0, *b, "copy {k}");
    }
    agrees(&m, &v);
}
