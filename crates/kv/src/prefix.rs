//! Prefix cache: full blocks addressable by the tokens that lead up to them.
//!
//! A full block is keyed by a chained hash `h_i = H(h_{i-1}, tokens of block i)`, so equal
//! keys mean (almost surely) equal prefixes. "Almost" is not good enough for KV data, so a
//! hit is also verified:
//! - the block's stored tokens must equal the prompt's tokens for that block, and
//! - the entry must have been registered under the *exact cache entry* matched for the
//!   previous block: every registration gets a fresh, never reused `generation`, and an
//!   entry remembers its parent's generation.
//!
//! By induction a verified chain of hits holds exactly the prompt's prefix, so a hash
//! collision (or a stale entry whose parent was evicted and recomputed) is a miss, never
//! another prompt's KV. When a key is taken by an entry that does not verify, the newer
//! block replaces it ("latest wins"), so stale entries cannot block caching.
//!
//! Cached blocks whose ref count drops to 0 stay in the free queue, in LRU order, and keep
//! their entry until the queue hands them out again (lazy eviction).

use crate::block_table::ChainLink;
use crate::ids::TokenId;
use rustc_hash::FxHashMap;
use std::hash::{Hash, Hasher};

/// The link every chain starts from (generation 0 is never given to an entry).
pub(crate) const ROOT: ChainLink = ChainLink {
    hash: 0x9e37_79b9_7f4a_7c15,
    generation: 0,
};

/// The chained hash of one full block.
pub(crate) fn chain_hash(parent: u64, tokens: &[TokenId]) -> u64 {
    // SipHash with fixed keys: deterministic across runs, well mixed. Collisions are
    // harmless (hits are verified) but rare collisions keep the hit rate up.
    let mut h = std::hash::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// Cache entry of one block (`generation == 0`: not cached).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Entry {
    pub(crate) hash: u64,
    pub(crate) parent_hash: u64,
    pub(crate) generation: u64,
    pub(crate) parent_generation: u64,
}

/// Token contents and cache entries of every block, plus the hash -> block map.
#[derive(Clone, Debug)]
pub(crate) struct PrefixCache {
    block_size: usize,
    /// `tokens[b * block_size + i]`: token in slot `i` of block `b`.
    tokens: Vec<TokenId>,
    entries: Vec<Entry>,
    map: FxHashMap<u64, u32>,
    next_generation: u64,
    pub(crate) queries: u64,
    pub(crate) hits: u64,
    pub(crate) evictions: u64,
}

impl PrefixCache {
    pub(crate) fn new(num_blocks: usize, block_size: usize) -> Self {
        Self {
            block_size,
            tokens: vec![0; num_blocks * block_size],
            entries: vec![Entry::default(); num_blocks],
            map: FxHashMap::default(),
            next_generation: 1,
            queries: 0,
            hits: 0,
            evictions: 0,
        }
    }

    #[inline]
    pub(crate) fn block_tokens(&self, b: u32) -> &[TokenId] {
        let s = b as usize * self.block_size;
        &self.tokens[s..s + self.block_size]
    }

    #[inline]
    pub(crate) fn set_token(&mut self, b: u32, slot: usize, t: TokenId) {
        self.tokens[b as usize * self.block_size + slot] = t;
    }

    /// Copies the token contents of `src` to `dst` (copy-on-write).
    pub(crate) fn copy_tokens(&mut self, src: u32, dst: u32) {
        let bs = self.block_size;
        self.tokens.copy_within(
            src as usize * bs..(src as usize + 1) * bs,
            dst as usize * bs,
        );
    }

    #[inline]
    pub(crate) fn is_cached(&self, b: u32) -> bool {
        self.entries[b as usize].generation != 0
    }

    /// The block caching the block after `parent` with these tokens, verified.
    pub(crate) fn lookup(&self, parent: ChainLink, tokens: &[TokenId]) -> Option<(u32, ChainLink)> {
        let h = chain_hash(parent.hash, tokens);
        let &b = self.map.get(&h)?;
        let e = self.entries[b as usize];
        (e.parent_generation == parent.generation && self.block_tokens(b) == tokens).then_some((
            b,
            ChainLink {
                hash: h,
                generation: e.generation,
            },
        ))
    }

    /// Block `b` (holding a full block of tokens) just filled after `parent`. Returns the
    /// link the sequence's chain continues from (an existing verified entry for the same
    /// content, or `b` itself, newly registered) and the block whose entry `b` displaced,
    /// if any.
    pub(crate) fn register(&mut self, b: u32, parent: ChainLink) -> (ChainLink, Option<u32>) {
        let h = chain_hash(parent.hash, self.block_tokens(b));
        let mut displaced = None;
        if let Some(&other) = self.map.get(&h) {
            let e = self.entries[other as usize];
            if e.parent_generation == parent.generation
                && self.block_tokens(other) == self.block_tokens(b)
            {
                let link = ChainLink {
                    hash: h,
                    generation: e.generation,
                };
                return (link, None);
            }
            // A collision or a stale entry (its parent was evicted): latest wins.
            self.entries[other as usize] = Entry::default();
            displaced = Some(other);
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.entries[b as usize] = Entry {
            hash: h,
            parent_hash: parent.hash,
            generation,
            parent_generation: parent.generation,
        };
        self.map.insert(h, b);
        (
            ChainLink {
                hash: h,
                generation,
            },
            displaced,
        )
    }

    /// Drops `b`'s entry (it is being reused for other data).
    pub(crate) fn evict(&mut self, b: u32) {
        let e = std::mem::take(&mut self.entries[b as usize]);
        if e.generation != 0 {
            if self.map.get(&e.hash) == Some(&b) {
                self.map.remove(&e.hash);
            }
            self.evictions += 1;
        }
    }

    /// Checks that every map entry points at a block registered under that key whose
    /// tokens hash to it, and that every registered block is in the map.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (&h, &b) in &self.map {
            let e = self.entries[b as usize];
            if e.generation == 0 || e.hash != h {
                return Err(format!("hash map points at block {b} not cached under it"));
            }
            if chain_hash(e.parent_hash, self.block_tokens(b)) != h {
                return Err(format!("block {b} no longer holds the tokens of its hash"));
            }
        }
        let registered = self.entries.iter().filter(|e| e.generation != 0).count();
        if registered != self.map.len() {
            return Err(format!(
                "{registered} blocks registered, {} in the hash map",
                self.map.len()
            ));
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.tokens.capacity() * std::mem::size_of::<TokenId>()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.map.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(tokens: &[&[TokenId]]) -> PrefixCache {
        let mut c = PrefixCache::new(tokens.len(), 2);
        for (b, t) in tokens.iter().enumerate() {
            for (i, &x) in t.iter().enumerate() {
                c.set_token(b as u32, i, x);
            }
        }
        c
    }

    #[test]
    fn a_hash_collision_is_a_miss() {
        let mut c = cache_with(&[&[1, 2], &[3, 4]]);
        let (link, _) = c.register(0, ROOT);
        assert_eq!(c.lookup(ROOT, &[1, 2]).map(|x| x.0), Some(0));
        // Forge a collision: the key of prompt [7, 8] points at block 0, which holds [1, 2].
        c.map.insert(chain_hash(ROOT.hash, &[7, 8]), 0);
        assert_eq!(c.lookup(ROOT, &[7, 8]), None);
        // A child registered under a parent generation that is not the one matched is a
        // miss as well, even with equal tokens and hash.
        let stale = ChainLink {
            hash: link.hash,
            generation: link.generation + 100,
        };
        c.register(1, stale);
        assert_eq!(c.lookup(link, &[3, 4]), None);
        assert_eq!(c.lookup(stale, &[3, 4]).map(|x| x.0), Some(1));
    }

    #[test]
    fn latest_wins_over_an_entry_that_does_not_verify() {
        let mut c = cache_with(&[&[3, 4], &[3, 4]]);
        let parent_a = ChainLink {
            hash: 5,
            generation: 10,
        };
        c.register(0, parent_a);
        // Same parent hash and tokens, different parent generation (the parent was
        // recomputed): block 1 replaces block 0's entry.
        let parent_b = ChainLink {
            hash: 5,
            generation: 11,
        };
        let (link, displaced) = c.register(1, parent_b);
        assert_eq!(displaced, Some(0));
        assert!(!c.is_cached(0));
        assert_eq!(c.lookup(parent_b, &[3, 4]), Some((1, link)));
        c.check().unwrap();
    }
}
