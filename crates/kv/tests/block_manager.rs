//! Unit tests of the block manager's operations and errors, through the public API.

use pagedattn_kv::{BlockId, BlockManager, KvConfig, KvError, SeqId};

fn manager(blocks: usize) -> BlockManager {
    BlockManager::new(KvConfig::new(blocks).with_block_size(4)).unwrap()
}

fn cached(blocks: usize) -> BlockManager {
    BlockManager::new(
        KvConfig::new(blocks)
            .with_block_size(4)
            .with_prefix_caching(true),
    )
    .unwrap()
}

/// Everything observable, to show a failed call changed nothing.
fn snapshot(m: &BlockManager) -> String {
    let mut seqs: Vec<_> = m
        .tables()
        .iter()
        .map(|(s, e)| (s, e.blocks().to_vec(), e.num_tokens()))
        .collect();
    seqs.sort();
    format!("{:?} {:?}", m.stats(), seqs)
}

fn ok(m: &BlockManager) {
    m.check_invariants().unwrap();
}

#[test]
fn rejects_invalid_configs() {
    for cfg in [
        KvConfig::new(0),
        KvConfig::new(4).with_block_size(0),
        KvConfig::new(4).with_block_size(1 << 16),
        KvConfig::new(4).with_bytes_per_token(0),
        KvConfig::new(usize::MAX / 2),
        KvConfig::new(1 << 30).with_bytes_per_token(1 << 40),
    ] {
        assert!(matches!(
            BlockManager::new(cfg),
            Err(KvError::InvalidConfig(_))
        ));
    }
}

#[test]
fn allocate_and_free_single_blocks() {
    let mut m = manager(3);
    let s = SeqId(7);
    m.add_sequence(s).unwrap();
    let a = m.allocate_block(s).unwrap();
    let b = m.allocate_block(s).unwrap();
    assert_ne!(a, b);
    assert_eq!(m.num_free_blocks(), 1);
    assert_eq!(m.ref_count(a).unwrap(), 1);
    assert_eq!(m.tables().blocks(s).unwrap(), &[a, b]);
    ok(&m);
    m.free_block(s, b).unwrap();
    assert_eq!(m.ref_count(b).unwrap(), 0);
    assert_eq!(m.num_free_blocks(), 2);
    // The freed, contentless block is handed out first again.
    assert_eq!(m.allocate_block(s).unwrap(), b);
    let st = m.stats();
    assert_eq!((st.allocations, st.frees, st.reused_allocations), (3, 1, 1));
    ok(&m);
}

#[test]
fn allocate_n_is_all_or_nothing() {
    let mut m = manager(5);
    m.add_sequence(SeqId(1)).unwrap();
    assert_eq!(m.allocate_blocks(SeqId(1), 3).unwrap().len(), 3);
    let before = snapshot(&m);
    assert_eq!(
        m.allocate_blocks(SeqId(1), 3),
        Err(KvError::OutOfBlocks {
            requested: 3,
            free: 2
        })
    );
    assert_eq!(snapshot(&m), before);
    assert_eq!(m.allocate_blocks(SeqId(1), 2).unwrap().len(), 2);
    assert!(matches!(
        m.allocate_block(SeqId(1)),
        Err(KvError::OutOfBlocks { .. })
    ));
    ok(&m);
}

#[test]
fn every_misuse_is_an_error_and_changes_nothing() {
    let mut m = manager(4);
    let (s, t) = (SeqId(1), SeqId(2));
    m.add_sequence(s).unwrap();
    m.add_sequence(t).unwrap();
    let blocks = m.allocate_blocks(s, 2).unwrap().to_vec();
    let other = m.allocate_block(t).unwrap();
    let before = snapshot(&m);
    let free_block = (0..4)
        .map(BlockId)
        .find(|b| m.ref_count(*b).unwrap() == 0)
        .unwrap();
    assert_eq!(m.add_sequence(s), Err(KvError::SequenceExists(s)));
    assert_eq!(
        m.allocate_block(SeqId(9)),
        Err(KvError::UnknownSequence(SeqId(9)))
    );
    assert_eq!(
        m.free_block(s, BlockId(4)),
        Err(KvError::UnknownBlock(BlockId(4), 4))
    );
    assert_eq!(
        m.free_block(SeqId(9), blocks[0]),
        Err(KvError::UnknownSequence(SeqId(9)))
    );
    assert_eq!(
        m.free_block(s, free_block),
        Err(KvError::DoubleFree(free_block))
    );
    assert_eq!(
        m.free_block(s, other),
        Err(KvError::BlockNotOwned {
            block: other,
            seq: s
        })
    );
    assert_eq!(
        m.free_block(s, blocks[0]),
        Err(KvError::NotLastBlock {
            block: blocks[0],
            seq: s
        })
    );
    assert_eq!(
        m.free_sequence(SeqId(9)),
        Err(KvError::UnknownSequence(SeqId(9)))
    );
    assert_eq!(
        m.fork(SeqId(9), SeqId(10)),
        Err(KvError::UnknownSequence(SeqId(9)))
    );
    assert_eq!(m.fork(s, t), Err(KvError::SequenceExists(t)));
    assert_eq!(
        m.append_tokens(SeqId(9), &[1]),
        Err(KvError::UnknownSequence(SeqId(9)))
    );
    assert!(matches!(
        m.append_tokens(s, &[0; 13]),
        Err(KvError::OutOfBlocks {
            requested: 2,
            free: 1
        })
    ));
    assert_eq!(
        m.ref_count(BlockId(99)),
        Err(KvError::UnknownBlock(BlockId(99), 4))
    );
    assert!(matches!(
        m.tables().lookup(s, 0),
        Err(KvError::TokenOutOfRange { .. })
    ));
    assert_eq!(snapshot(&m), before);
    ok(&m);
}

#[test]
fn append_fills_blocks_and_lookup_is_exact() {
    let mut m = manager(8);
    let s = SeqId(3);
    m.add_sequence(s).unwrap();
    assert_eq!(m.blocks_needed(s, 9).unwrap(), 3);
    let out = m.append_tokens(s, &(0..9).collect::<Vec<_>>()).unwrap();
    assert_eq!((out.new_blocks, out.copy), (3, None));
    assert_eq!(m.tables().len(s).unwrap(), 9);
    let blocks = m.tables().blocks(s).unwrap().to_vec();
    for t in 0..9 {
        assert_eq!(m.tables().lookup(s, t).unwrap(), (blocks[t / 4], t % 4));
    }
    // Three more fit the last block's free slots; the fourth needs a new block.
    assert_eq!(m.blocks_needed(s, 3).unwrap(), 0);
    assert_eq!(m.blocks_needed(s, 4).unwrap(), 1);
    let st = m.stats();
    assert_eq!(st.tokens_stored, 9);
    assert!((st.utilization - 9.0 / 12.0).abs() < 1e-12);
    // Raw blocks appended first are filled before new ones are taken.
    m.allocate_block(s).unwrap();
    assert_eq!(m.append_tokens(s, &[1; 7]).unwrap().new_blocks, 0);
    assert_eq!(m.tables().len(s).unwrap(), 16);
    ok(&m);
    assert_eq!(m.free_sequence(s).unwrap(), 4);
    assert!(!m.tables().contains(s));
    assert_eq!(m.num_free_blocks(), 8);
    ok(&m);
}

#[test]
fn fork_shares_blocks_and_copies_on_write() {
    let mut m = manager(8);
    let (p, c) = (SeqId(1), SeqId(2));
    m.add_sequence(p).unwrap();
    m.append_tokens(p, &[1, 2, 3, 4, 5, 6]).unwrap();
    m.allocate_block(p).unwrap(); // a reserved empty block is not shared
    m.fork(p, c).unwrap();
    let shared = m.tables().blocks(c).unwrap().to_vec();
    assert_eq!(shared.len(), 2);
    for b in &shared {
        assert_eq!(m.ref_count(*b).unwrap(), 2);
    }
    assert_eq!(m.stats().tokens_stored, 6, "shared tokens are stored once");
    ok(&m);
    // The child's write goes to a private copy of the shared partial block.
    assert_eq!(m.blocks_needed(c, 1).unwrap(), 1);
    let out = m.append_tokens(c, &[70]).unwrap();
    let copy = out.copy.expect("copy-on-write");
    assert_eq!(copy.src, shared[1]);
    assert_eq!(m.tables().blocks(c).unwrap(), &[shared[0], copy.dst]);
    assert_eq!(m.ref_count(shared[1]).unwrap(), 1);
    assert_eq!(m.stats().cow_copies, 1);
    // The parent now owns its block alone: no copy.
    assert_eq!(m.append_tokens(p, &[60]).unwrap().copy, None);
    assert_eq!(m.stats().tokens_stored, 6 + 2 + 2);
    ok(&m);
    // A fork at a block boundary needs no copy at all.
    m.append_tokens(p, &[61]).unwrap();
    m.fork(p, SeqId(3)).unwrap();
    assert_eq!(m.append_tokens(SeqId(3), &[1]).unwrap().copy, None);
    ok(&m);
    for s in [1, 2, 3] {
        m.free_sequence(SeqId(s)).unwrap();
    }
    assert_eq!(m.num_free_blocks(), 8);
    ok(&m);
}

#[test]
fn copy_on_write_is_all_or_nothing() {
    let mut m = manager(2);
    m.add_sequence(SeqId(1)).unwrap();
    m.append_tokens(SeqId(1), &[1, 2, 3, 4, 5]).unwrap();
    m.fork(SeqId(1), SeqId(2)).unwrap();
    let before = snapshot(&m);
    assert_eq!(
        m.append_tokens(SeqId(2), &[6]),
        Err(KvError::OutOfBlocks {
            requested: 1,
            free: 0
        })
    );
    assert_eq!(snapshot(&m), before);
    ok(&m);
}

#[test]
fn prefix_cache_hits_full_blocks_and_keeps_the_last_token() {
    let mut m = cached(16);
    let prompt: Vec<u32> = (100..112).collect(); // 3 full blocks of 4
    m.add_sequence_with_prefix(SeqId(1), &prompt).unwrap();
    m.append_tokens(SeqId(1), &prompt).unwrap();
    // Same prompt: at most len - 1 = 11 tokens may hit -> 2 blocks.
    assert_eq!(m.cached_prefix_len(&prompt), 8);
    assert_eq!(m.add_sequence_with_prefix(SeqId(2), &prompt).unwrap(), 8);
    assert_eq!(
        m.tables().blocks(SeqId(2)).unwrap(),
        &m.tables().blocks(SeqId(1)).unwrap()[..2]
    );
    // Longer prompt with the same start: all 3 blocks hit.
    let longer: Vec<u32> = (100..115).collect();
    assert_eq!(m.add_sequence_with_prefix(SeqId(3), &longer).unwrap(), 12);
    // Diverging in the second block: only the first hits.
    let mut other = prompt.clone();
    other[5] = 0;
    assert_eq!(m.add_sequence_with_prefix(SeqId(4), &other).unwrap(), 4);
    let st = m.stats();
    assert_eq!(st.prefix_queries, 12 + 12 + 15 + 12);
    assert_eq!(st.prefix_hits, 8 + 12 + 4);
    ok(&m);
    // Finished sequences leave their full blocks cached (ref 0, in the free queue).
    for s in 1..=4 {
        m.free_sequence(SeqId(s)).unwrap();
    }
    assert_eq!(m.stats().cached_free_blocks, 3);
    let hit = m.cached_prefix(&longer);
    assert_eq!((hit.tokens, hit.revived_blocks), (12, 3));
    assert_eq!(m.add_sequence_with_prefix(SeqId(5), &longer).unwrap(), 12);
    assert_eq!(m.cached_prefix(&longer).revived_blocks, 0);
    assert_eq!(m.stats().cached_free_blocks, 0);
    ok(&m);
}

#[test]
fn cached_blocks_are_evicted_lazily_in_lru_order() {
    let mut m = cached(4);
    let a: Vec<u32> = (0..9).collect();
    let b: Vec<u32> = (50..59).collect();
    for (s, p) in [(1, &a), (2, &b)] {
        m.add_sequence_with_prefix(SeqId(s), p).unwrap();
        m.append_tokens(SeqId(s), &p[..8]).unwrap(); // two full blocks each
    }
    m.free_sequence(SeqId(1)).unwrap();
    m.free_sequence(SeqId(2)).unwrap();
    assert_eq!(m.stats().cached_free_blocks, 4);
    // Taking one block evicts the least recently freed: a's tail block first.
    m.add_sequence(SeqId(3)).unwrap();
    m.allocate_block(SeqId(3)).unwrap();
    let st = m.stats();
    assert_eq!((st.cached_free_blocks, st.prefix_evictions), (3, 1));
    assert_eq!(m.cached_prefix_len(&a), 4);
    assert_eq!(m.cached_prefix_len(&b), 8);
    ok(&m);
}

#[test]
fn an_evicted_chain_is_recomputed_and_cached_again() {
    let mut m = cached(3);
    let p: Vec<u32> = (0..9).collect();
    m.add_sequence_with_prefix(SeqId(1), &p).unwrap();
    m.append_tokens(SeqId(1), &p[..8]).unwrap();
    m.free_sequence(SeqId(1)).unwrap();
    // Taking every block evicts the whole chain.
    m.add_sequence(SeqId(2)).unwrap();
    m.allocate_blocks(SeqId(2), 3).unwrap();
    m.free_sequence(SeqId(2)).unwrap();
    assert_eq!(m.cached_prefix_len(&p), 0);
    assert_eq!(m.stats().prefix_evictions, 2);
    // Recompute the chain: both blocks register afresh under new generations.
    m.add_sequence_with_prefix(SeqId(3), &p).unwrap();
    m.append_tokens(SeqId(3), &p[..8]).unwrap();
    assert_eq!(m.cached_prefix_len(&p), 8);
    ok(&m);
}

#[test]
fn duplicate_prompts_computed_together_still_cache_the_whole_chain() {
    let mut m = cached(16);
    let p: Vec<u32> = (0..13).collect();
    for s in [1, 2] {
        m.add_sequence_with_prefix(SeqId(s), &p).unwrap();
    }
    for s in [1, 2] {
        m.append_tokens(SeqId(s), &p).unwrap();
    }
    m.free_sequence(SeqId(1)).unwrap();
    // Sequence 2's blocks were duplicates of 1's; the chain survives through 1's entries.
    assert_eq!(m.add_sequence_with_prefix(SeqId(3), &p).unwrap(), 12);
    ok(&m);
}

#[test]
fn metadata_overhead_is_tiny_for_the_seed_shape() {
    // The seed's model (32 layers, 32 KV heads, head_dim 128, f32) in blocks of 16 tokens:
    // 16 MiB of K/V per block, the pool 1000 of them.
    let mut m = BlockManager::new(KvConfig::new(1000).with_prefix_caching(true)).unwrap();
    for s in 0..50 {
        m.add_sequence(SeqId(s)).unwrap();
        m.append_tokens(SeqId(s), &[1; 300]).unwrap();
    }
    let st = m.stats();
    assert_eq!(st.kv_bytes, 1000 * (16 << 20));
    assert!(st.metadata_bytes > 0);
    eprintln!(
        "seed shape: {} metadata bytes for {} KV bytes, overhead {:e}",
        st.metadata_bytes, st.kv_bytes, st.metadata_overhead
    );
    assert!(st.metadata_overhead < 1e-4, "{}", st.metadata_overhead);
}

#[test]
fn stats_serialize() {
    let mut m = manager(4);
    m.add_sequence(SeqId(1)).unwrap();
    m.append_tokens(SeqId(1), &[1, 2, 3, 4, 5]).unwrap();
    let st = m.stats();
    let json = serde_json::to_value(st).unwrap();
    // Field names are the wire format dashboards and reports read.
    assert_eq!(json["total_blocks"], 4);
    assert_eq!(json["used_blocks"], 2);
    assert_eq!(json["tokens_stored"], 5);
    assert_eq!(json["block_size"], 4);
    let back: pagedattn_kv::BlockManagerStats = serde_json::from_value(json).unwrap();
    assert_eq!(back, st);
    let t = m.tables().stats();
    let json = serde_json::to_string(&t).unwrap();
    let back: pagedattn_kv::BlockTableStats = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t);
    assert_eq!(t.num_sequences, 1);
}

#[test]
fn a_discarded_sequence_leaves_no_prefix_hit_behind() {
    let mut m = cached(16);
    let prompt: Vec<u32> = (100..112).collect(); // 3 full blocks of 4
    m.add_sequence_with_prefix(SeqId(1), &prompt).unwrap();
    m.append_tokens(SeqId(1), &prompt).unwrap();
    // A second sequence shares the first two blocks (a real hit on computed K/V).
    assert_eq!(m.add_sequence_with_prefix(SeqId(2), &prompt).unwrap(), 8);
    m.append_tokens(SeqId(2), &prompt[8..]).unwrap();
    // The first sequence's step failed: its blocks' contents are not trusted. Blocks the
    // second sequence still holds keep their entries; the rest lose theirs.
    assert_eq!(m.discard_sequence(SeqId(1)).unwrap(), 3);
    ok(&m);
    assert_eq!(m.cached_prefix_len(&prompt), 8);
    m.discard_sequence(SeqId(2)).unwrap();
    ok(&m);
    assert_eq!(m.cached_prefix_len(&prompt), 0);
    assert_eq!(m.stats().cached_free_blocks, 0);
    assert_eq!(m.num_free_blocks(), 16);
    assert!(m.discard_sequence(SeqId(2)).is_err());
}
