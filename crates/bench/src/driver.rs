//! Drives one workload through one engine, feeding requests at their arrival times.

use crate::report::{PolicyReport, RunRecord};
use crate::workload::WorkloadRequest;
use pagedattn_engine::{Engine, EngineConfig, EngineError, Executor, Request, SamplingParams};
use std::time::Duration;

/// Runs `reqs` (sorted by arrival) through a fresh engine over `executor` and summarizes.
/// Output lengths are forced (`ignore_eos`) so every policy does the same work.
/// `on_finish` is called with the number of finished requests after every step.
pub fn run_policy<E: Executor>(
    executor: E,
    config: &EngineConfig,
    reqs: &[WorkloadRequest],
    mut on_finish: impl FnMut(usize),
) -> Result<PolicyReport, EngineError> {
    reset_peak_rss();
    // The report needs every finished sequence and every step.
    let mut engine = Engine::new(executor, config.clone().with_history())?;
    let mut next = 0;
    let mut finished = 0;
    while next < reqs.len() || engine.has_unfinished() {
        let now = engine.now();
        while next < reqs.len() && reqs[next].arrival <= now {
            let r = &reqs[next];
            engine.add_request(Request {
                id: pagedattn_engine::RequestId(next as u64),
                prompt: r.prompt.clone(),
                params: SamplingParams {
                    ignore_eos: true,
                    ..SamplingParams::greedy(r.output_len)
                },
                arrival: r.arrival,
            })?;
            next += 1;
        }
        if !engine.has_unfinished() {
            // Idle until the next arrival.
            let t = reqs[next].arrival;
            engine.advance_clock_to(t);
            // Arrivals are finite (workloads check them); a bad one must not panic here.
            if let Ok(wait) = Duration::try_from_secs_f64(t - engine.now()) {
                std::thread::sleep(wait);
            }
            continue;
        }
        for o in engine.step()? {
            if o.finished.is_some() {
                finished += 1;
            }
        }
        on_finish(finished);
    }
    engine
        .check_invariants()
        .map_err(EngineError::InvalidConfig)?;
    let kv_bytes_per_token = engine.executor().spec().kv_bytes_per_token;
    Ok(PolicyReport::build(&RunRecord {
        policy: config.policy.name(),
        seqs: engine.finished_metrics(),
        steps: engine.step_metrics(),
        totals: &engine.totals(),
        kv: engine.kv_usage(),
        kv_bytes_per_token,
        peak_rss_bytes: peak_rss(),
    }))
}

/// Resets the kernel's peak-RSS counter for this process (Linux; elsewhere a no-op).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size since the last reset, bytes (0 where unknown).
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
