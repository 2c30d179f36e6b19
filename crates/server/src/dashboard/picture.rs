//! `GET /dashboard/state`'s body: the engine's counters under the names `/metrics` uses,
//! the pool picture, what a contiguous cache of the same bytes would reserve for the same
//! running sequences, and the recent time series; and the cache that lets one picture serve
//! every request for a while.

use crate::dashboard::history::{now_s, Sample};
use pagedattn_engine::core::EngineStats;
use pagedattn_engine::{PictureState, PoolPicture};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// The latest picture and when it was taken.
#[derive(Debug, Default)]
pub struct PictureCache(tokio::sync::Mutex<Option<(Instant, usize, Arc<DashboardState>)>>);

impl PictureCache {
    /// The cache, locked: the latest picture, its cell count and when it was taken.
    pub(crate) async fn lock(
        &self,
    ) -> tokio::sync::MutexGuard<'_, Option<(Instant, usize, Arc<DashboardState>)>> {
        self.0.lock().await
    }
}

/// The engine's counters, named as `/metrics` names them (without the `vllm:` or
/// `pagedattn:` prefix and the `_total` suffix).
#[derive(Clone, Debug, Serialize)]
pub struct Counters {
    pub(crate) num_requests_running: usize,
    pub(crate) num_requests_waiting: usize,
    pub(crate) kv_cache_usage_perc: f64,
    kv_block_utilization: f64,
    kv_blocks_total: usize,
    kv_blocks_used: usize,
    kv_blocks_cached_free: usize,
    kv_cow_copies: u64,
    pub(crate) prefix_cache_queries: u64,
    pub(crate) prefix_cache_hits: u64,
    pub(crate) num_preemptions: u64,
    prompt_tokens: u64,
    pub(crate) generation_tokens: u64,
    engine_steps: u64,
}

impl Counters {
    /// The counters of the engine's published stats.
    pub(crate) fn of(s: &EngineStats) -> Self {
        let b = s.blocks.as_ref();
        Self {
            num_requests_running: s.running,
            num_requests_waiting: s.waiting,
            kv_cache_usage_perc: s.kv.held_fraction(),
            kv_block_utilization: s.kv.utilization(),
            kv_blocks_total: b.map_or(0, |b| b.total_blocks),
            kv_blocks_used: b.map_or(0, |b| b.used_blocks),
            kv_blocks_cached_free: b.map_or(0, |b| b.cached_free_blocks),
            kv_cow_copies: b.map_or(0, |b| b.cow_copies),
            prefix_cache_queries: b.map_or(0, |b| b.prefix_queries),
            prefix_cache_hits: b.map_or(0, |b| b.prefix_hits),
            num_preemptions: s.totals.preemptions,
            prompt_tokens: s.totals.prompt_tokens,
            generation_tokens: s.totals.output_tokens,
            engine_steps: s.totals.steps,
        }
    }
}

/// What a contiguous cache of the same bytes would do with the running sequences.
#[derive(Clone, Debug, Serialize)]
pub struct Contiguous {
    /// Token slots of the pool (= of a contiguous cache of the same bytes).
    capacity_tokens: usize,
    /// Sequences running now.
    running: usize,
    /// Slots the paged pool holds for them (their blocks).
    paged_tokens: usize,
    /// Per reservation rule, the slots it would reserve for the running sequences and how
    /// many of them (in admission order) would fit.
    max: Reservation,
    pow2: Reservation,
    oracle: Reservation,
}

/// One reservation rule's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Reservation {
    reserved_tokens: usize,
    fits: usize,
}

/// `GET /dashboard/state`.
#[derive(Clone, Debug, Serialize)]
pub struct DashboardState {
    /// The served model.
    model: String,
    /// Seconds since the Unix epoch when the picture was taken.
    time_s: f64,
    /// The counters.
    counters: Counters,
    /// The pool, the live sequences and `max_model_len`.
    #[serde(flatten)]
    picture: PoolPicture,
    /// The same running sequences in a contiguous cache.
    contiguous: Contiguous,
    /// The counters over the last two minutes, one sample per half second, oldest first.
    history: Vec<Sample>,
}

pub(crate) fn build(
    model: &str,
    s: &EngineStats,
    picture: PoolPicture,
    history: Vec<Sample>,
) -> DashboardState {
    let counters = Counters::of(s);
    let contiguous = contiguous(&picture);
    DashboardState {
        model: model.to_string(),
        time_s: now_s(),
        counters,
        picture,
        contiguous,
        history,
    }
}

/// The running sequences under each contiguous reservation rule, in the same bytes:
/// `max` reserves `max_model_len` per sequence (what a static cache must), `pow2` the
/// length so far rounded up to a power of two, `oracle` exactly the length so far (a
/// lower bound: it would also need the tokens still to come).
fn contiguous(p: &PoolPicture) -> Contiguous {
    let capacity = p.pool.num_blocks * p.pool.block_size;
    let running: Vec<_> = p
        .sequences
        .iter()
        .filter(|s| s.state == PictureState::Running)
        .collect();
    let rule = |size: &dyn Fn(usize) -> usize| {
        let (mut reserved, mut fits) = (0usize, 0usize);
        for s in &running {
            let r = size(s.prompt_tokens + s.output_tokens);
            reserved = reserved.saturating_add(r);
            if reserved <= capacity {
                fits += 1;
            }
        }
        Reservation {
            reserved_tokens: reserved,
            fits,
        }
    };
    Contiguous {
        capacity_tokens: capacity,
        running: running.len(),
        paged_tokens: running.iter().map(|s| s.blocks).sum::<usize>() * p.pool.block_size,
        max: rule(&|_| p.max_model_len),
        pow2: rule(&|len: usize| len.max(1).next_power_of_two().min(p.max_model_len)),
        oracle: rule(&|len| len),
    }
}
