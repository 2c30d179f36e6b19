//! KV-cache memory management for PagedAttention, without tensors.
//!
//! This crate decides *where* each token's keys and values live; the `pagedattn-kernels`
//! crate stores the data and computes attention over it.
//!
//! - [`BlockManager`] (seed: `KVCacheBlockManager`): a fixed pool of blocks of
//!   `block_size` tokens, an O(1) free queue, ref counts, copy-on-write for forked
//!   sequences, and an optional prefix cache that reuses full blocks of earlier prompts.
//! - [`BlockTable`] (seed: `BlockTable`): for each sequence its blocks, in order, and its
//!   length; token -> (block, offset) in O(1).
//! - [`ContiguousAllocator`]: the baseline — one contiguous run of slots per sequence,
//!   reserved at admission (max length, next power of two, or the exact final length).
//!
//! Every fallible operation returns [`KvError`] and leaves all state unchanged on error;
//! [`BlockManager::check_invariants`] recounts everything for tests.
//!
//! ```
//! use pagedattn_kv::{BlockManager, KvConfig, SeqId};
//!
//! let mut kv = BlockManager::new(KvConfig::new(64).with_prefix_caching(true))?;
//! let prompt: Vec<u32> = (0..40).collect();
//!
//! // First request: nothing cached; its 40 tokens take 3 blocks of 16.
//! kv.add_sequence(SeqId(1))?;
//! let out = kv.append_tokens(SeqId(1), &prompt)?;
//! assert_eq!(out.new_blocks, 3);
//! assert_eq!(kv.tables().lookup(SeqId(1), 17)?.1, 1); // token 17: second block, offset 1
//!
//! // Parallel sampling: fork shares all three blocks.
//! kv.fork(SeqId(1), SeqId(2))?;
//! // Appending to the fork copies the shared, partially filled last block first.
//! let out = kv.append_tokens(SeqId(2), &[99])?;
//! assert!(out.copy.is_some());
//!
//! // A later request with the same prompt reuses the two full blocks.
//! let cached = kv.add_sequence_with_prefix(SeqId(3), &prompt)?;
//! assert_eq!(cached, 32);
//!
//! for s in [1, 2, 3] {
//!     kv.free_sequence(SeqId(s))?;
//! }
//! let stats = kv.stats();
//! assert_eq!(stats.free_blocks, stats.total_blocks);
//! assert_eq!(kv.check_invariants(), Ok(()));
//! # Ok::<(), pagedattn_kv::KvError>(())
//! ```

// Unsafe code lives in the kernels crate only (its SIMD and allocation paths).
#![forbid(unsafe_code)]

mod block_manager;
mod block_table;
mod config;
mod contiguous;
mod error;
mod free_queue;
mod ids;
mod invariants;
mod pool;
mod prefix;
mod stats;
mod view;

pub use block_manager::{AppendOutcome, BlockManager, PrefixMatch};
pub use block_table::{BlockTable, BlockTableStats, SeqBlocks};
pub use config::{KvConfig, DEFAULT_BLOCK_SIZE, SEED_KV_BYTES_PER_TOKEN};
pub use contiguous::{ContiguousAllocator, ContiguousSizing, ContiguousStats, Reservation};
pub use error::{KvError, Result};
pub use ids::{BlockCopy, BlockId, SeqId, TokenId};
pub use pool::RECENT_COPIES;
pub use stats::BlockManagerStats;
pub use view::{PoolCell, PoolView};
