//! What a serving run measured, per policy: the seed's five metrics and what serving
//! people read, as a struct (JSON) and a terminal table.

use pagedattn_engine::{EngineTotals, KvUsage, SeqMetrics, StepMetrics};
use serde::{Deserialize, Serialize};

/// p50 / p90 / p99 of a latency, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `v` (seconds), reported in milliseconds.
    pub fn of_seconds(mut v: Vec<f64>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| 1e3 * v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
        }
    }
}

/// One policy's results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyReport {
    /// Policy name.
    pub policy: String,
    /// Requests completed.
    pub requests: usize,
    /// Requests that failed (an HTTP backend's errors, timeouts or broken streams; the
    /// in-process engine has none). Not counted in `requests` or in any latency.
    #[serde(default)]
    pub failed_requests: usize,
    /// First arrival to last completion, seconds.
    pub duration_s: f64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Output tokens per second.
    pub output_tokens_per_s: f64,
    /// (Prompt + output) tokens per second.
    pub total_tokens_per_s: f64,
    /// Time to first token.
    pub ttft_ms: Percentiles,
    /// Time per output token after the first, per request.
    pub tpot_ms: Percentiles,
    /// Inter-token latency, all gaps.
    pub itl_ms: Percentiles,
    /// End-to-end latency per request.
    pub e2e_ms: Percentiles,
    /// Mean end-to-end latency / output tokens, seconds per token (the vLLM paper's
    /// normalized latency).
    pub normalized_latency_s: f64,
    /// Most KV bytes held by sequences at once.
    pub peak_kv_bytes: u64,
    /// Peak resident memory of the process during the run (real execution only).
    pub peak_rss_bytes: u64,
    /// Tokens stored / slots held, averaged over time.
    pub utilization_mean: f64,
    /// Tokens stored / slots held at the moment of peak KV use.
    pub utilization_peak: f64,
    /// Held-but-empty slots as a share of capacity, averaged over time.
    pub internal_fragmentation: f64,
    /// Free slots outside the largest free run as a share of capacity, averaged over time.
    pub external_fragmentation: f64,
    /// Share of block allocations served by previously freed blocks.
    pub block_reuse: f64,
    /// Prompt tokens found in the prefix cache / prompt tokens looked up.
    pub prefix_hit_rate: f64,
    /// Bookkeeping bytes / KV bytes.
    pub metadata_overhead: f64,
    /// Preemptions.
    pub preemptions: u64,
    /// Recomputed tokens / all computed tokens.
    pub recompute_tax: f64,
    /// Sequences per step, averaged over steps.
    pub mean_batch_size: f64,
    /// Steps run.
    pub steps: u64,
    /// This policy's output tokens/s over the paged policy's (1.0 for paged itself).
    pub throughput_vs_paged: f64,
    /// (time, utilization, share of capacity held) per step, at most ~1000 points; for plots.
    #[serde(skip)]
    pub timeline: Vec<(f64, f64, f64)>,
    /// End-to-end latencies in seconds, sorted; for plots.
    #[serde(skip)]
    pub e2e_s: Vec<f64>,
}

/// Inputs to [`PolicyReport::build`].
#[derive(Debug)]
pub struct RunRecord<'a> {
    /// Policy name.
    pub policy: &'a str,
    /// Finished sequences.
    pub seqs: &'a [SeqMetrics],
    /// Every step.
    pub steps: &'a [StepMetrics],
    /// Engine totals.
    pub totals: &'a EngineTotals,
    /// KV use at the end (cumulative counters).
    pub kv: KvUsage,
    /// Bytes per KV slot.
    pub kv_bytes_per_token: u64,
    /// Peak RSS, if measured.
    pub peak_rss_bytes: u64,
}

impl PolicyReport {
    /// Summarizes a run.
    pub fn build(r: &RunRecord<'_>) -> Self {
        let seqs = r.seqs;
        let start = seqs.iter().map(|s| s.arrival).fold(f64::INFINITY, f64::min);
        let end = seqs.iter().filter_map(|s| s.finished).fold(0.0, f64::max);
        let duration = if seqs.is_empty() {
            0.0
        } else {
            (end - start).max(1e-9)
        };
        let out_tokens: usize = seqs.iter().map(|s| s.token_times.len()).sum();
        let prompt_tokens: usize = seqs.iter().map(|s| s.prompt_len).sum();
        let weight: f64 = r.steps.iter().map(|s| s.duration).sum::<f64>().max(1e-12);
        let cap = r.kv.capacity_slots.max(1) as f64;
        let tavg = |f: &dyn Fn(&StepMetrics) -> f64| {
            r.steps.iter().map(|s| f(s) * s.duration).sum::<f64>() / weight
        };
        let peak = r.steps.iter().max_by_key(|s| s.kv_held_slots);
        let mut e2e: Vec<f64> = seqs.iter().filter_map(SeqMetrics::e2e).collect();
        e2e.sort_by(f64::total_cmp);
        let every = r.steps.len().div_ceil(1000).max(1);
        let timeline = r
            .steps
            .iter()
            .step_by(every)
            .map(|s| (s.time, s.utilization, s.kv_held_slots as f64 / cap))
            .collect();
        let norm: Vec<f64> = seqs
            .iter()
            .filter_map(|s| s.e2e().map(|e| e / s.token_times.len().max(1) as f64))
            .collect();
        Self {
            policy: r.policy.to_string(),
            requests: seqs.len(),
            failed_requests: 0,
            duration_s: duration,
            requests_per_s: seqs.len() as f64 / duration,
            output_tokens_per_s: out_tokens as f64 / duration,
            total_tokens_per_s: (out_tokens + prompt_tokens) as f64 / duration,
            ttft_ms: Percentiles::of_seconds(seqs.iter().filter_map(SeqMetrics::ttft).collect()),
            tpot_ms: Percentiles::of_seconds(seqs.iter().filter_map(SeqMetrics::tpot).collect()),
            itl_ms: Percentiles::of_seconds(seqs.iter().flat_map(SeqMetrics::itl).collect()),
            e2e_ms: Percentiles::of_seconds(e2e.clone()),
            normalized_latency_s: norm.iter().sum::<f64>() / norm.len().max(1) as f64,
            peak_kv_bytes: peak.map_or(0, |s| s.kv_held_slots as u64 * r.kv_bytes_per_token),
            peak_rss_bytes: r.peak_rss_bytes,
            utilization_mean: tavg(&|s| s.utilization),
            // 0 when no step was recorded (a run against an HTTP server measures no KV).
            utilization_peak: peak.map_or(0.0, |s| s.utilization),
            internal_fragmentation: tavg(&|s| s.internal_fragmentation_slots as f64 / cap),
            external_fragmentation: tavg(&|s| s.external_fragmentation_slots as f64 / cap),
            block_reuse: r.kv.block_reuse,
            prefix_hit_rate: r.kv.prefix_hit_rate,
            metadata_overhead: r.kv.metadata_overhead,
            preemptions: r.totals.preemptions,
            recompute_tax: r.totals.recompute_tax(),
            mean_batch_size: r.steps.iter().map(|s| s.batch_size as f64).sum::<f64>()
                / r.steps.len().max(1) as f64,
            steps: r.totals.steps,
            throughput_vs_paged: 0.0,
            timeline,
            e2e_s: e2e,
        }
    }
}

/// Sets every report's throughput ratio to the first paged policy's output tokens/s.
pub fn relate_to_paged(reports: &mut [PolicyReport]) {
    let base = reports
        .iter()
        .find(|r| r.policy == "paged")
        .or_else(|| reports.first())
        .map_or(0.0, |r| r.output_tokens_per_s);
    for r in reports {
        r.throughput_vs_paged = if base > 0.0 {
            r.output_tokens_per_s / base
        } else {
            0.0
        };
    }
}

/// The terminal table.
pub fn table(reports: &[PolicyReport]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<18} {:>7} {:>8} {:>8} {:>6} {:>18} {:>18} {:>18} {:>9} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7}",
        "policy", "req/s", "out tok/s", "tok/s", "vs pg",
        "TTFT p50/p90/p99", "TPOT p50/p90/p99", "E2E p50/p90/p99 s",
        "peak KV", "util", "@peak", "int fr", "ext fr", "batch", "preempt", "recomp"
    );
    for r in reports {
        let ms = |p: &Percentiles| format!("{:.0}/{:.0}/{:.0}", p.p50, p.p90, p.p99);
        let secs =
            |p: &Percentiles| format!("{:.1}/{:.1}/{:.1}", p.p50 / 1e3, p.p90 / 1e3, p.p99 / 1e3);
        // A run that recorded no engine steps (an HTTP server) measured no KV, batch or
        // preemption figures: those columns show "-" rather than zeros.
        let engine = r.steps > 0;
        let or_dash = |v: String| if engine { v } else { "-".to_string() };
        let pct = |v: f64| or_dash(format!("{:.1}%", 100.0 * v));
        let _ = writeln!(
            s,
            "{:<18} {:>7.3} {:>8.1} {:>8.1} {:>6} {:>18} {:>18} {:>18} {:>9} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7}",
            r.policy,
            r.requests_per_s,
            r.output_tokens_per_s,
            r.total_tokens_per_s,
            or_dash(format!("{:.2}x", r.throughput_vs_paged)),
            ms(&r.ttft_ms),
            ms(&r.tpot_ms),
            secs(&r.e2e_ms),
            or_dash(format!("{:.1}M", r.peak_kv_bytes as f64 / (1024.0 * 1024.0))),
            pct(r.utilization_mean),
            pct(r.utilization_peak),
            pct(r.internal_fragmentation),
            pct(r.external_fragmentation),
            or_dash(format!("{:.1}", r.mean_batch_size)),
            or_dash(r.preemptions.to_string()),
            pct(r.recompute_tax),
        );
    }
    let _ = writeln!(
        s,
        "ITL p50/p90/p99 ms: {}",
        reports
            .iter()
            .map(|r| format!(
                "{} {:.0}/{:.0}/{:.0}",
                r.policy, r.itl_ms.p50, r.itl_ms.p90, r.itl_ms.p99
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let engine: Vec<&PolicyReport> = reports.iter().filter(|r| r.steps > 0).collect();
    if !engine.is_empty() {
        let _ = writeln!(
            s,
            "block reuse / prefix hit / metadata overhead: {}",
            engine
                .iter()
                .map(|r| format!(
                    "{} {:.1}%/{:.1}%/{:.4}%",
                    r.policy,
                    100.0 * r.block_reuse,
                    100.0 * r.prefix_hit_rate,
                    100.0 * r.metadata_overhead
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if reports.iter().any(|r| r.failed_requests > 0) {
        let _ = writeln!(
            s,
            "failed requests (not in any figure above): {}",
            reports
                .iter()
                .map(|r| format!("{} {}", r.policy, r.failed_requests))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of_seconds((1..=100).map(|i| f64::from(i) / 1e3).collect());
        assert_eq!((p.p50, p.p90, p.p99), (50.0, 90.0, 99.0));
        let one = Percentiles::of_seconds(vec![0.002]);
        assert_eq!((one.p50, one.p99), (2.0, 2.0));
        assert_eq!(Percentiles::of_seconds(vec![]), Percentiles::default());
    }
}
