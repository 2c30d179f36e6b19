//! The simulated serving run end to end: every policy finishes every request without
//! leaking KV, and at equal memory paging batches more sequences than a contiguous cache
//! (modeled time is deterministic, so this is a property, not a timing).

use pagedattn_bench::driver::run_policy;
use pagedattn_bench::sim::{GpuPreset, SimulatedExecutor};
use pagedattn_bench::workload::{Arrivals, Lengths, WorkloadSpec};
use pagedattn_engine::{EngineConfig, KvPolicy};

#[test]
fn every_policy_finishes_and_paging_batches_more() {
    let preset = GpuPreset::by_name("a100-40gb:opt-13b").unwrap();
    let reqs = WorkloadSpec {
        lengths: Lengths::ShareGpt,
        arrivals: Arrivals::Poisson(4.0),
        requests: 120,
        max_len: 2048,
        max_prompt: 1024,
        vocab_size: preset.vocab_size,
        seed: 1,
    }
    .generate()
    .unwrap();
    // A small budget (2 GB: ~2.5K slots) so memory binds.
    let run = |policy| {
        let exec = SimulatedExecutor::new(preset.clone(), 2048);
        run_policy(
            exec,
            &EngineConfig::new(policy, 2_000_000_000),
            &reqs,
            |_| {},
        )
        .unwrap()
    };
    let reports: Vec<_> = KvPolicy::ALL.into_iter().map(run).collect();
    for r in &reports {
        assert_eq!(r.requests, 120, "{}", r.policy);
        assert!(r.duration_s > 0.0 && r.output_tokens_per_s > 0.0);
        assert!(r.ttft_ms.p50 <= r.ttft_ms.p99);
    }
    let batch = |name: &str| {
        reports
            .iter()
            .find(|r| r.policy == name)
            .unwrap()
            .mean_batch_size
    };
    assert!(batch("paged") > batch("contiguous-oracle"));
    assert!(batch("contiguous-oracle") > batch("contiguous-max"));
    assert!(reports[0].utilization_mean > 0.9);
}
