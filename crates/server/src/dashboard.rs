//! `GET /dashboard`: a page that shows the paged KV cache live, and `GET /dashboard/state`,
//! the JSON it polls (documented in docs/SERVER.md, for machines too).
//!
//! The page is one file embedded in the binary (HTML, CSS and script; no CDN, no build
//! step). The state is a picture the engine thread takes between two steps
//! ([`EngineHandle::pool_picture`]: one pass over the blocks, aggregated into at most
//! `cells` cells), the engine's counters under the names `/metrics` uses, and what a
//! contiguous cache of the same bytes would reserve for the same running sequences. One
//! picture serves every request for [`PICTURE_TTL`]: however many pages are open, the
//! engine thread takes at most a few pictures a second.

use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use pagedattn_engine::core::EngineStats;
use pagedattn_engine::{PictureState, PoolPicture};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// How long one picture answers every state request.
pub const PICTURE_TTL: Duration = Duration::from_millis(400);

/// Cells per picture unless asked: 4,096.
const DEFAULT_CELLS: usize = 4096;
/// Cells per picture at most.
const MAX_CELLS: usize = 16_384;

/// Samples of the counters kept for the page's time series: one per [`SAMPLE_EVERY`],
/// the last two minutes.
pub const HISTORY: usize = 240;
/// How often the counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// One sample of the counters.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    t: f64,
    generation_tokens: u64,
    num_requests_running: usize,
    num_requests_waiting: usize,
    kv_cache_usage_perc: f64,
    prefix_cache_hits: u64,
    prefix_cache_queries: u64,
    num_preemptions: u64,
}

/// The last [`HISTORY`] samples, oldest first.
#[derive(Debug, Default)]
pub struct History(std::sync::Mutex<std::collections::VecDeque<Sample>>);

impl History {
    fn push(&self, s: Sample) {
        let mut h = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(s);
    }

    fn snapshot(&self) -> Vec<Sample> {
        let h = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.iter().copied().collect()
    }
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Samples the engine's published counters every [`SAMPLE_EVERY`] until aborted (the
/// server aborts it when it stops). A lock and a copy per sample: nothing the engine waits on.
pub(crate) async fn sample_history(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let c = Counters::of(&state.engine.stats());
        state.history.push(Sample {
            t: now_s(),
            generation_tokens: c.generation_tokens,
            num_requests_running: c.num_requests_running,
            num_requests_waiting: c.num_requests_waiting,
            kv_cache_usage_perc: c.kv_cache_usage_perc,
            prefix_cache_hits: c.prefix_cache_hits,
            prefix_cache_queries: c.prefix_cache_queries,
            num_preemptions: c.num_preemptions,
        });
    }
}

/// The latest picture and when it was taken.
#[derive(Debug, Default)]
pub struct PictureCache(tokio::sync::Mutex<Option<(Instant, usize, Arc<DashboardState>)>>);

/// The engine's counters, named as `/metrics` names them (without the `vllm:` or
/// `pagedattn:` prefix and the `_total` suffix).
#[derive(Clone, Debug, Serialize)]
pub struct Counters {
    num_requests_running: usize,
    num_requests_waiting: usize,
    kv_cache_usage_perc: f64,
    kv_block_utilization: f64,
    kv_blocks_total: usize,
    kv_blocks_used: usize,
    kv_blocks_cached_free: usize,
    kv_cow_copies: u64,
    prefix_cache_queries: u64,
    prefix_cache_hits: u64,
    num_preemptions: u64,
    prompt_tokens: u64,
    generation_tokens: u64,
    engine_steps: u64,
}

impl Counters {
    /// The counters of the engine's published stats.
    fn of(s: &EngineStats) -> Self {
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

pub(crate) async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)).into_response()
}

/// The `cells` parameter of a query string: cells to aggregate the pool into
/// (1..=16384; default 4096). Other parameters are ignored.
fn cells_param(query: Option<&str>) -> Result<usize, crate::error::ApiError> {
    let value = query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == "cells")
        .map(|(_, v)| v);
    match value {
        None => Ok(DEFAULT_CELLS),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|c| (1..=MAX_CELLS).contains(c))
            .ok_or_else(|| {
                crate::error::ApiError::bad_request(
                    format!("cells must be a whole number from 1 to {MAX_CELLS}, not {v:?}"),
                    Some("cells"),
                )
            }),
    }
}

pub(crate) async fn state(State(s): State<Arc<AppState>>, RawQuery(query): RawQuery) -> Response {
    let cells = match cells_param(query.as_deref()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let mut cache = s.dashboard.0.lock().await;
    if let Some((at, c, state)) = cache.as_ref() {
        if *c == cells && at.elapsed() < PICTURE_TTL {
            return axum::Json(state.as_ref().clone()).into_response();
        }
    }
    let Some(picture) = s.engine.pool_picture(cells).await else {
        return crate::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the engine has no paged pool to show, or has stopped",
        )
        .into_response();
    };
    let state = Arc::new(build(
        &s.model_name,
        &s.engine.stats(),
        picture,
        s.history.snapshot(),
    ));
    *cache = Some((Instant::now(), cells, state.clone()));
    drop(cache);
    axum::Json(state.as_ref().clone()).into_response()
}

fn build(
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
