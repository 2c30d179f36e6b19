//! Helpers shared by the integration tests: finding the real model, and driving the
//! forward pass over a paged cache the way the engine will.

#![allow(dead_code)]

use pagedattn_kernels::{Batch, DType, KvCache, KvLocation, LogitsFor};
use pagedattn_kv::BlockId;
use pagedattn_model::{Logits, Model, ModelConfig};
use std::path::PathBuf;

pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The real model's path. A missing model fails the test (the README's test command
/// fetches it first): a test that passes without running would prove nothing.
pub fn model_path() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(MODEL_FILE);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-model.sh (the README's test command does)",
        path.display()
    );
    path
}

/// A paged cache for `config` with `num_blocks` blocks of `block_size`.
pub fn paged_cache(config: &ModelConfig, num_blocks: usize, block_size: usize) -> KvCache {
    KvCache::new(config.kv_shape(DType::F32), num_blocks, block_size).unwrap()
}

/// Runs `tokens` (at positions `start..`) of one sequence through the paged cache.
pub fn step(
    model: &Model,
    cache: &mut KvCache,
    table: &[BlockId],
    tokens: &[u32],
    start: usize,
    logits: LogitsFor,
) -> Logits {
    let mut batch = Batch::paged(cache.block_size());
    batch
        .push(tokens, start, KvLocation::Paged(table), logits)
        .unwrap();
    model.forward(&batch, cache).unwrap()
}

/// Logits at every position of `tokens` from one prefill into a fresh cache.
pub fn prefill_all(model: &Model, tokens: &[u32], block_size: usize) -> Logits {
    let blocks = tokens.len().div_ceil(block_size);
    let mut cache = paged_cache(model.config(), blocks, block_size);
    let table: Vec<BlockId> = (0..blocks as u32).map(BlockId).collect();
    step(model, &mut cache, &table, tokens, 0, LogitsFor::All)
}

/// Largest absolute difference between two equally long slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pagedattn-model-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A block table of `n` distinct blocks out of `pool`, in a scrambled order.
pub fn shuffled_table(n: usize, pool: usize, seed: usize) -> Vec<BlockId> {
    let mut ids: Vec<u32> = (0..pool as u32).collect();
    for i in (1..ids.len()).rev() {
        let j = (i * 7919 + seed * 104_729) % (i + 1);
        ids.swap(i, j);
    }
    ids.truncate(n);
    ids.into_iter().map(BlockId).collect()
}

/// Feeds `toks` in chunks of the given sizes through a scrambled paged cache and returns
/// the logits of every position.
pub fn chunked_logits(
    model: &Model,
    toks: &[u32],
    chunks: &[usize],
    block_size: usize,
    seed: usize,
) -> Vec<Vec<f32>> {
    let blocks = toks.len().div_ceil(block_size);
    let mut cache = paged_cache(model.config(), blocks * 3, block_size);
    let table = shuffled_table(blocks, blocks * 3, seed);
    let (mut at, mut out) = (0, Vec::new());
    for &c in chunks.iter().chain(std::iter::repeat(&1)) {
        if at == toks.len() {
            break;
        }
        let c = c.clamp(1, toks.len() - at);
        let l = step(
            model,
            &mut cache,
            &table,
            &toks[at..at + c],
            at,
            LogitsFor::All,
        );
        out.extend((0..l.len()).map(|i| l.row(i).to_vec()));
        at += c;
    }
    out
}
