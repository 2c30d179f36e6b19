//! The block manager (seed: `KVCacheBlockManager`): hands blocks to sequences, grows their
//! block tables as tokens arrive, shares blocks between forks with copy-on-write, and
//! reuses cached prefix blocks.
//!
//! Every operation is all-or-nothing: it first checks everything that can fail (unknown
//! ids, enough free blocks), then changes state. A returned error means nothing changed.

use crate::block_table::{BlockTable, SeqBlocks};
use crate::config::KvConfig;
use crate::error::{KvError, Result};
use crate::ids::{BlockCopy, BlockId, SeqId, TokenId};
use crate::pool::Pool;
use crate::prefix::ROOT;
use crate::stats::{ratio, BlockManagerStats};

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AppendOutcome {
    /// Blocks added to the sequence's table (a copy-on-write block is not counted here).
    pub new_blocks: usize,
    /// A copy the data layer must perform before writing the new tokens' K/V: the
    /// sequence's partially filled last block was shared, so it got a private copy.
    pub copy: Option<BlockCopy>,
}

/// What the prefix cache holds for a prompt (see [`BlockManager::cached_prefix`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PrefixMatch {
    /// Prompt tokens whose KV is cached (a multiple of the block size).
    pub tokens: usize,
    /// Hit blocks that are free now (cached, ref count 0): admitting takes them out of the
    /// free queue.
    pub revived_blocks: usize,
}

/// Fixed-size KV block pool with per-sequence block tables.
#[derive(Clone, Debug)]
pub struct BlockManager {
    pub(crate) config: KvConfig,
    pub(crate) pool: Pool,
    pub(crate) tables: BlockTable,
    /// `config.kv_bytes()` and its reciprocal, fixed at construction so `stats()` does
    /// no division it can avoid.
    kv_bytes: u64,
    inv_kv_bytes: f64,
}

impl BlockManager {
    /// A manager for a validated `config`, every block free.
    pub fn new(config: KvConfig) -> Result<Self> {
        config.validate()?;
        let kv_bytes = config.kv_bytes();
        Ok(Self {
            kv_bytes,
            inv_kv_bytes: 1.0 / kv_bytes as f64,
            pool: Pool::new(
                config.num_blocks,
                config.block_size,
                config.enable_prefix_caching,
            ),
            tables: BlockTable::new(config.block_size),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// Tokens per block.
    #[inline]
    pub fn block_size(&self) -> usize {
        self.config.block_size
    }

    /// Blocks in the free queue (cached free blocks included: they can be evicted).
    #[inline]
    pub fn num_free_blocks(&self) -> usize {
        self.pool.free.len()
    }

    /// The block tables (read-only; change them through the manager).
    #[inline]
    pub fn tables(&self) -> &BlockTable {
        &self.tables
    }

    /// Number of sequences holding `block`.
    pub fn ref_count(&self, block: BlockId) -> Result<u32> {
        self.check_block(block)?;
        Ok(self.pool.meta(block.0).ref_count)
    }

    fn check_block(&self, block: BlockId) -> Result<()> {
        if block.index() < self.pool.num_blocks() {
            Ok(())
        } else {
            Err(KvError::UnknownBlock(block, self.pool.num_blocks()))
        }
    }

    fn ensure_free(&self, requested: usize) -> Result<()> {
        let free = self.pool.free.len();
        if requested > free {
            Err(KvError::OutOfBlocks { requested, free })
        } else {
            Ok(())
        }
    }

    /// Creates an empty block table for `seq`.
    pub fn add_sequence(&mut self, seq: SeqId) -> Result<()> {
        let chain = self.pool.cache.is_some().then_some(ROOT);
        self.tables.insert(
            seq,
            SeqBlocks {
                blocks: Vec::new(),
                num_tokens: 0,
                chain,
            },
        )
    }

    /// Tokens at the start of `prompt` whose KV the prefix cache holds (whole blocks, at
    /// most `prompt.len() - 1` tokens: the last token is always computed, because its
    /// logits are needed). Read-only: no counters move.
    pub fn cached_prefix_len(&self, prompt: &[TokenId]) -> usize {
        self.cached_prefix(prompt).tokens
    }

    /// What admitting `prompt` with [`add_sequence_with_prefix`](Self::add_sequence_with_prefix)
    /// would reuse: the cached tokens, and how many of the hit blocks sit in the free queue
    /// now (reviving them takes them out of it). Read-only.
    pub fn cached_prefix(&self, prompt: &[TokenId]) -> PrefixMatch {
        let mut m = PrefixMatch::default();
        self.walk_prefix(prompt, |b, _| {
            m.tokens += self.block_size();
            m.revived_blocks += usize::from(self.pool.meta(b).ref_count == 0);
        });
        m
    }

    fn walk_prefix(
        &self,
        prompt: &[TokenId],
        mut hit: impl FnMut(u32, crate::block_table::ChainLink),
    ) {
        let Some(cache) = &self.pool.cache else {
            return;
        };
        let bs = self.block_size();
        let max_blocks = prompt.len().saturating_sub(1) / bs;
        let mut link = ROOT;
        for chunk in prompt.chunks_exact(bs).take(max_blocks) {
            match cache.lookup(link, chunk) {
                Some((b, next)) => {
                    hit(b, next);
                    link = next;
                }
                None => break,
            }
        }
    }

    /// Creates a block table for `seq` whose first blocks are the cached blocks matching
    /// the start of `prompt` (see [`cached_prefix_len`](Self::cached_prefix_len)); returns
    /// how many tokens they cover. The rest of the prompt is appended with
    /// [`append_tokens`](Self::append_tokens) as it is computed. With prefix caching off
    /// this is [`add_sequence`](Self::add_sequence) and returns 0.
    pub fn add_sequence_with_prefix(&mut self, seq: SeqId, prompt: &[TokenId]) -> Result<usize> {
        if self.tables.contains(seq) {
            return Err(KvError::SequenceExists(seq));
        }
        if self.pool.cache.is_none() {
            self.add_sequence(seq)?;
            return Ok(0);
        }
        let mut hits = Vec::new();
        let mut chain = ROOT;
        self.walk_prefix(prompt, |b, link| {
            hits.push(BlockId(b));
            chain = link;
        });
        for b in &hits {
            self.pool.share(b.0);
        }
        let num_tokens = hits.len() * self.block_size();
        if let Some(c) = &mut self.pool.cache {
            c.queries += prompt.len() as u64;
            c.hits += num_tokens as u64;
        }
        self.tables.insert(
            seq,
            SeqBlocks {
                blocks: hits,
                num_tokens,
                chain: Some(chain),
            },
        )?;
        Ok(num_tokens)
    }

    /// Appends one empty block to `seq` (seed: `AllocateBlock`).
    pub fn allocate_block(&mut self, seq: SeqId) -> Result<BlockId> {
        Ok(self.allocate_blocks(seq, 1)?[0])
    }

    /// Appends `n` empty blocks to `seq`, all or none (seed: `AllocateBlocks`). Returns
    /// the new blocks.
    pub fn allocate_blocks(&mut self, seq: SeqId, n: usize) -> Result<&[BlockId]> {
        self.tables.get(seq)?;
        self.ensure_free(n)?;
        let e = self.tables.get_mut(seq)?;
        let start = e.blocks.len();
        e.blocks.reserve(n);
        for _ in 0..n {
            e.blocks.push(BlockId(self.pool.take()));
        }
        self.tables.account(n as isize, 0);
        Ok(&self.tables.get(seq)?.blocks[start..])
    }

    /// Releases `seq`'s hold on its last block `block` (seed: `FreeBlock`). Tokens in it
    /// are dropped from the sequence. Only the last block can be released on its own.
    pub fn free_block(&mut self, seq: SeqId, block: BlockId) -> Result<()> {
        self.check_block(block)?;
        let e = self.tables.get(seq)?;
        if self.pool.meta(block.0).ref_count == 0 {
            return Err(KvError::DoubleFree(block));
        }
        if e.blocks.last() != Some(&block) {
            return Err(if e.blocks.contains(&block) {
                KvError::NotLastBlock { block, seq }
            } else {
                KvError::BlockNotOwned { block, seq }
            });
        }
        let bs = self.block_size();
        let e = self.tables.get_mut(seq)?;
        e.blocks.pop();
        let kept = e.num_tokens.min(e.blocks.len() * bs);
        let dropped = e.num_tokens - kept;
        if dropped == bs {
            // The chain ended in the dropped (full) block and cannot be rolled back.
            e.chain = None;
        }
        e.num_tokens = kept;
        self.tables.account(-1, -(dropped as isize));
        self.pool.release(block.0);
        Ok(())
    }

    /// Releases all blocks of `seq` and removes its table (seed: `FreeSequenceBlocks`,
    /// `BlockTable.RemoveSequence`). Full blocks that are prefix-cached stay cached in the
    /// free queue until evicted. Returns how many blocks the sequence held.
    pub fn free_sequence(&mut self, seq: SeqId) -> Result<usize> {
        let e = self.tables.remove(seq)?;
        // Back to front, so a chain's tail is nearer the queue's front and evicted first.
        for b in e.blocks.iter().rev() {
            self.pool.release(b.0);
        }
        Ok(e.blocks.len())
    }

    /// Like [`Self::free_sequence`], for a sequence whose latest K/V were never computed
    /// (its step failed): blocks it alone holds lose their prefix-cache entries, so no
    /// later prompt reuses contents that were never written. Returns how many blocks it held.
    pub fn discard_sequence(&mut self, seq: SeqId) -> Result<usize> {
        let e = self.tables.remove(seq)?;
        for b in e.blocks.iter().rev() {
            self.pool.release_discarded(b.0);
        }
        Ok(e.blocks.len())
    }

    /// Blocks that appending `num_new_tokens` to `seq` takes from the free queue,
    /// including a copy-on-write of a shared, partially filled last block.
    pub fn blocks_needed(&self, seq: SeqId, num_new_tokens: usize) -> Result<usize> {
        let e = self.tables.get(seq)?;
        let grow = self.tables.new_blocks_for(seq, num_new_tokens)?;
        Ok(grow + usize::from(num_new_tokens > 0 && self.needs_copy(e)))
    }

    /// Whether the next token of `e` goes into a block that holds tokens of other
    /// sequences too.
    fn needs_copy(&self, e: &SeqBlocks) -> bool {
        let bs = self.block_size();
        !e.num_tokens.is_multiple_of(bs)
            && self.pool.meta(e.blocks[e.num_tokens / bs].0).ref_count > 1
    }

    /// Appends `tokens` to `seq`, allocating blocks as needed (all or none). With prefix
    /// caching on, every block that becomes full is registered in the cache.
    pub fn append_tokens(&mut self, seq: SeqId, tokens: &[TokenId]) -> Result<AppendOutcome> {
        let needed = self.blocks_needed(seq, tokens.len())?;
        self.ensure_free(needed)?;
        let bs = self.block_size();
        let copy = self.needs_copy(self.tables.get(seq)?) && !tokens.is_empty();
        let e = self.tables.get_mut(seq)?;
        let pool = &mut self.pool;
        let mut outcome = AppendOutcome::default();
        if copy {
            let i = e.num_tokens / bs;
            let src = e.blocks[i];
            let dst = BlockId(pool.take());
            pool.copy(src.0, dst.0);
            pool.release(src.0);
            e.blocks[i] = dst;
            outcome.copy = Some(BlockCopy { src, dst });
        }
        let grow = (e.num_tokens + tokens.len())
            .div_ceil(bs)
            .saturating_sub(e.blocks.len());
        e.blocks.reserve(grow);
        for _ in 0..grow {
            e.blocks.push(BlockId(pool.take()));
        }
        outcome.new_blocks = grow;
        for (pos, &t) in (e.num_tokens..).zip(tokens) {
            let (i, slot) = (pos / bs, pos % bs);
            let b = e.blocks[i].0;
            pool.write(b, slot, t);
            if slot == bs - 1 {
                if let Some(link) = e.chain {
                    e.chain = pool.register(b, link);
                }
            }
        }
        e.num_tokens += tokens.len();
        self.tables.account(grow as isize, tokens.len() as isize);
        Ok(outcome)
    }

    /// Makes `child` a fork of `parent`: it shares every block that holds the parent's
    /// tokens (ref count + 1 each); the first write into a shared partial block copies it.
    /// Empty blocks the parent reserved beyond its tokens are not shared.
    pub fn fork(&mut self, parent: SeqId, child: SeqId) -> Result<()> {
        if self.tables.contains(child) {
            return Err(KvError::SequenceExists(child));
        }
        let p = self.tables.get(parent)?;
        let held = p.num_tokens.div_ceil(self.block_size());
        let entry = SeqBlocks {
            blocks: p.blocks[..held].to_vec(),
            num_tokens: p.num_tokens,
            chain: p.chain,
        };
        for b in &entry.blocks {
            self.pool.share(b.0);
        }
        self.tables.insert(child, entry)
    }

    /// A snapshot of the counters (seed: `GetStats`). O(1).
    #[inline]
    pub fn stats(&self) -> BlockManagerStats {
        let p = &self.pool;
        let used = p.used();
        let bs = self.config.block_size;
        let (queries, hits, evictions) = p
            .cache
            .as_ref()
            .map_or((0, 0, 0), |c| (c.queries, c.hits, c.evictions));
        let kv_bytes = self.kv_bytes;
        let metadata_bytes = self.metadata_bytes();
        BlockManagerStats {
            block_size: bs,
            total_blocks: p.num_blocks(),
            free_blocks: p.free.len(),
            used_blocks: used,
            cached_free_blocks: p.cached_free,
            num_sequences: self.tables.num_sequences(),
            tokens_stored: p.tokens_stored,
            utilization: ratio(p.tokens_stored as f64, (used * bs) as f64, 1.0),
            peak_used_blocks: p.peak_used,
            allocations: p.allocations,
            frees: p.frees,
            reused_allocations: p.reused_allocations,
            block_reuse_rate: ratio(p.reused_allocations as f64, p.allocations as f64, 0.0),
            cow_copies: p.cow_copies,
            prefix_queries: queries,
            prefix_hits: hits,
            prefix_hit_rate: ratio(hits as f64, queries as f64, 0.0),
            prefix_evictions: evictions,
            kv_bytes,
            metadata_bytes,
            metadata_overhead: metadata_bytes as f64 * self.inv_kv_bytes,
        }
    }

    /// Bytes of bookkeeping: the pool's per-block state, free queue and prefix cache, and
    /// the block tables. O(1).
    #[inline]
    pub fn metadata_bytes(&self) -> u64 {
        (std::mem::size_of::<Self>() + self.pool.heap_bytes() + self.tables.metadata_bytes()) as u64
    }

    /// Recounts everything and checks the invariants the fast paths rely on. O(pool +
    /// tables); for tests and debugging.
    pub fn check_invariants(&self) -> Result<(), String> {
        crate::invariants::check(&self.config, &self.pool, &self.tables)
    }
}
