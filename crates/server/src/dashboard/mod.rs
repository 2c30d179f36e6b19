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

pub(crate) mod history;
pub(crate) mod picture;

use crate::dashboard::history::{now_s, Sample, SAMPLE_EVERY};
use crate::dashboard::picture::{build, Counters};
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
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
    let mut cache = s.dashboard.lock().await;
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
