//! The block manager's invariants, recounted from scratch. Used by tests after every
//! operation; never on a hot path.

use crate::block_table::BlockTable;
use crate::config::KvConfig;
use crate::pool::Pool;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

pub(crate) fn check(config: &KvConfig, pool: &Pool, tables: &BlockTable) -> Result<(), String> {
    let n = pool.num_blocks();
    let bs = config.block_size;
    ensure!(
        n == config.num_blocks,
        "pool has {n} blocks, config {}",
        config.num_blocks
    );

    // Free queue: no duplicates, exactly the blocks with ref count 0.
    let mut queued = vec![false; n];
    let mut len = 0;
    for b in pool.free.iter() {
        ensure!(!queued[b as usize], "block {b} is in the free queue twice");
        queued[b as usize] = true;
        len += 1;
    }
    ensure!(
        len == pool.free.len(),
        "free queue holds {len}, says {}",
        pool.free.len()
    );
    for (b, m) in pool.free.payloads().enumerate() {
        ensure!(
            (m.ref_count == 0) == queued[b],
            "block {b}: ref count {} but queued = {}",
            m.ref_count,
            queued[b]
        );
        ensure!(
            usize::from(m.filled) <= bs,
            "block {b} holds {} > {bs} tokens",
            m.filled
        );
    }

    // Ref counts equal the number of tables holding the block; each table's token count
    // matches what its blocks hold.
    let mut holders = vec![0u32; n];
    let (mut entries, mut tokens) = (0, 0);
    for (seq, e) in tables.iter() {
        ensure!(
            e.blocks.len() >= e.num_tokens.div_ceil(bs),
            "{seq}: {} tokens in {} blocks",
            e.num_tokens,
            e.blocks.len()
        );
        for (i, b) in e.blocks.iter().enumerate() {
            ensure!(b.index() < n, "{seq} holds unknown {b}");
            holders[b.index()] += 1;
            let expect = e.num_tokens.saturating_sub(i * bs).min(bs);
            let filled = usize::from(pool.meta(b.0).filled);
            ensure!(
                filled == expect,
                "{seq}: {b} (logical {i}) holds {filled} tokens, sequence has {expect} there"
            );
        }
        entries += e.blocks.len();
        tokens += e.num_tokens;
    }
    for (b, m) in pool.free.payloads().enumerate() {
        ensure!(
            m.ref_count == holders[b],
            "block {b}: ref count {} but held by {} tables",
            m.ref_count,
            holders[b]
        );
    }
    let st = tables.stats();
    ensure!(
        st.total_entries == entries,
        "tables count {} entries, recount {entries}",
        st.total_entries
    );
    ensure!(
        st.total_tokens == tokens,
        "tables count {} tokens, recount {tokens}",
        st.total_tokens
    );

    // Pool counters.
    let stored: usize = pool
        .free
        .payloads()
        .filter(|m| m.ref_count > 0)
        .map(|m| usize::from(m.filled))
        .sum();
    ensure!(
        stored == pool.tokens_stored,
        "tokens_stored {} but recount {stored}",
        pool.tokens_stored
    );
    ensure!(
        pool.peak_used >= pool.used(),
        "peak {} below used {}",
        pool.peak_used,
        pool.used()
    );
    ensure!(
        pool.reused_allocations <= pool.allocations,
        "more reuses than allocations"
    );

    // Prefix cache: the map points only at blocks holding those tokens; cached-free count.
    match &pool.cache {
        Some(c) => {
            c.check()?;
            let mut cached_free = 0;
            for (b, m) in pool.free.payloads().enumerate() {
                if c.is_cached(b as u32) {
                    ensure!(usize::from(m.filled) == bs, "cached block {b} is not full");
                    cached_free += usize::from(m.ref_count == 0);
                }
            }
            ensure!(
                cached_free == pool.cached_free,
                "cached_free {} but recount {cached_free}",
                pool.cached_free
            );
        }
        None => ensure!(
            pool.cached_free == 0,
            "cached free blocks without a prefix cache"
        ),
    }
    Ok(())
}
