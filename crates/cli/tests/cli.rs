//! The binary end to end: exit codes, one-line errors, and the JSON report's keys.

use std::process::Command;

fn pagedattn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pagedattn"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn one_line_error(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error:"), "{err}");
    err
}

#[test]
fn bad_input_is_one_line_and_exit_2_for_benchmarks() {
    let out = pagedattn(&[
        "bench",
        "serve",
        "--exec",
        "simulated",
        "--kv-budget",
        "1MiB",
        "--quiet",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("KV budget"));
    let out = pagedattn(&[
        "bench",
        "serve",
        "--policies",
        "paged,fancy",
        "--exec",
        "simulated",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("unknown KV policy"));
    let out = pagedattn(&["bench", "serve", "--weights", "f8"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("--weights"));
    let out = pagedattn(&["bench", "serve", "--kv-budget", "12 parsecs"]);
    assert_eq!(out.status.code(), Some(2));
    one_line_error(&out);
    let out = pagedattn(&["bench", "serve", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = pagedattn(&[
        "bench",
        "serve",
        "--exec",
        "simulated",
        "--flops-efficiency",
        "1.5",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("--flops-efficiency"));
}

#[test]
fn generate_errors_exit_1() {
    let out = pagedattn(&[
        "generate",
        "--model",
        "/nonexistent/model.gguf",
        "--prompt",
        "hi",
    ]);
    assert_eq!(out.status.code(), Some(1));
    one_line_error(&out);
    let out = pagedattn(&[
        "generate",
        "--model",
        env!("CARGO_MANIFEST_PATH"),
        "--prompt",
        "hi",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out).contains("GGUF"));
}

#[test]
fn simulated_serve_writes_the_report() {
    let dir = std::env::temp_dir().join(format!("pa-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let out = pagedattn(&[
        "bench",
        "serve",
        "--exec",
        "simulated",
        "--requests",
        "60",
        "--rate",
        "2,4",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for k in [
        "workload",
        "requests",
        "kv_budget_bytes",
        "block_size",
        "exec",
        "model",
        "seed",
    ] {
        assert!(doc["config"].get(k).is_some(), "config.{k}");
    }
    let policies = doc["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 4);
    for key in [
        "policy",
        "requests_per_s",
        "output_tokens_per_s",
        "total_tokens_per_s",
        "ttft_ms",
        "tpot_ms",
        "itl_ms",
        "e2e_ms",
        "peak_kv_bytes",
        "peak_rss_bytes",
        "utilization_mean",
        "utilization_peak",
        "internal_fragmentation",
        "external_fragmentation",
        "block_reuse",
        "prefix_hit_rate",
        "metadata_overhead",
        "preemptions",
        "mean_batch_size",
        "throughput_vs_paged",
    ] {
        assert!(policies[0].get(key).is_some(), "policies[].{key}");
    }
    assert!(policies[0]["ttft_ms"].get("p99").is_some());
    assert_eq!(doc["sweep"].as_array().unwrap().len(), 2);
    for f in [
        "kv_utilization.svg",
        "latency_cdf.svg",
        "throughput_vs_rate.svg",
    ] {
        assert!(std::fs::metadata(dir.join(f)).unwrap().len() > 1000, "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_kv_runs() {
    let out = pagedattn(&["bench", "kv", "--requests", "50"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for p in [
        "paged",
        "contiguous-max",
        "contiguous-pow2",
        "contiguous-oracle",
    ] {
        assert!(text.contains(p), "{p} missing:\n{text}");
    }
}
