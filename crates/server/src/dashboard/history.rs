//! The dashboard's time series: a sample of the engine's counters every half second, the
//! last two minutes, kept in the server's state and sampled by `sample_history`.

use serde::Serialize;
use std::time::Duration;

/// Samples of the counters kept for the page's time series: one per [`SAMPLE_EVERY`],
/// the last two minutes.
pub const HISTORY: usize = 240;
/// How often the counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// One sample of the counters.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the Unix epoch.
    pub(crate) t: f64,
    pub(crate) generation_tokens: u64,
    pub(crate) num_requests_running: usize,
    pub(crate) num_requests_waiting: usize,
    pub(crate) kv_cache_usage_perc: f64,
    pub(crate) prefix_cache_hits: u64,
    pub(crate) prefix_cache_queries: u64,
    pub(crate) num_preemptions: u64,
}

/// The last [`HISTORY`] samples, oldest first.
#[derive(Debug, Default)]
pub struct History(std::sync::Mutex<std::collections::VecDeque<Sample>>);

impl History {
    pub(crate) fn push(&self, s: Sample) {
        let mut h = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(s);
    }

    pub(crate) fn snapshot(&self) -> Vec<Sample> {
        let h = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.iter().copied().collect()
    }
}

pub(crate) fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
