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
    assert!(one_line_error(&out).contains("'--no-such-flag'"));
    let out = pagedattn(&["bench", "serve", "--exec", "fast"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("possible values: real, simulated"));
    let out = pagedattn(&["bench", "serve", "--gpu", "tpu"]);
    assert!(one_line_error(&out).contains("cpu-2c:smollm2-135m-q4_1"));
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
fn serve_and_generate_errors_are_one_line_and_exit_1() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
    );
    for (args, says) in [
        (
            vec!["serve", "--model", "/nonexistent/model.gguf"],
            "cannot load model",
        ),
        (
            vec!["serve", "--model", model, "--kv-dtype", "f8"],
            "--kv-dtype",
        ),
        (
            vec!["serve", "--model", model, "--weights", "q2"],
            "--weights",
        ),
        (
            vec!["serve", "--model", model, "--kv-budget", "lots"],
            "--kv-budget",
        ),
        (
            vec!["serve", "--model", model, "--shutdown-grace", "inf"],
            "--shutdown-grace",
        ),
        (
            vec!["serve", "--model", model, "--threads", "0"],
            "--threads must be >= 1",
        ),
        (
            vec!["serve", "--model", model, "--max-model-len", "100000"],
            "max_model_len",
        ),
        (
            vec!["serve", "--model", model, "--kv-budget", "1MiB"],
            "KV budget",
        ),
        // `generate` takes its KV memory under the same flag, in the same units.
        (
            vec![
                "generate",
                "--model",
                model,
                "--prompt",
                "hi",
                "--kv-budget",
                "9 parsecs",
            ],
            "--kv-budget",
        ),
        (
            vec![
                "generate",
                "--model",
                model,
                "--prompt",
                "hi",
                "--kv-budget",
                "1KiB",
            ],
            "KV budget",
        ),
        (
            vec![
                "serve",
                "--model",
                model,
                "--host",
                "256.0.0.1",
                "--port",
                "0",
            ],
            "cannot listen",
        ),
    ] {
        let out = pagedattn(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = one_line_error(&out);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn serve_says_it_fetches_a_missing_default_model_and_fails_clearly_when_it_cannot() {
    // An empty working directory (no models/) and a `pip3` that always fails.
    let dir = std::env::temp_dir().join(format!("pa-cli-fetch-{}", std::process::id()));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let pip = bin.join("pip3");
    std::fs::write(&pip, "#!/bin/sh\necho 'no network here' >&2\nexit 1\n").unwrap();
    let mut perms = std::fs::metadata(&pip).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&pip, perms).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pagedattn"))
        .args(["serve", "--port", "0"])
        .current_dir(&dir)
        .env("PATH", path)
        .env_remove("PAGEDATTN_WHEEL_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is missing; fetching it"), "{err}");
    assert!(
        err.lines()
            .last()
            .unwrap_or("")
            .starts_with("error: could not fetch"),
        "{err}"
    );
    assert!(!dir.join("models/SmolLM2-135M-Instruct.Q4_1.gguf").exists());
    std::fs::remove_dir_all(&dir).unwrap();
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
#[allow(clippy::float_cmp)] // zero shares are exactly zero
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
    // The configuration: what was asked, and the simulated defaults (a 12 GB KV budget of
    // an A100-40GB serving OPT-13B, blocks of 16, ShareGPT-like lengths, seed 0).
    let config = &doc["config"];
    assert_eq!(config["workload"], "sharegpt-like");
    assert_eq!(config["requests"], 60);
    assert_eq!(config["kv_budget_bytes"], 12_000_000_000u64);
    assert_eq!(config["block_size"], 16);
    assert_eq!(config["exec"], "simulated");
    assert_eq!(config["model"], "a100-40gb:opt-13b");
    assert_eq!(config["seed"], 0);
    assert_eq!(config["max_model_len"], 2048);
    let policies = doc["policies"].as_array().unwrap();
    let names: Vec<&str> = policies
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "paged",
            "contiguous-max",
            "contiguous-pow2",
            "contiguous-oracle"
        ]
    );
    // The values agree with each other, not just exist.
    let f = |p: &serde_json::Value, k: &str| p[k].as_f64().unwrap_or_else(|| panic!("{k}"));
    let paged = f(&policies[0], "output_tokens_per_s");
    assert_eq!(policies[0]["policy"], "paged");
    for p in policies {
        let name = p["policy"].as_str().unwrap();
        assert_eq!(p["requests"], 60, "{name}");
        // Throughput is work over time.
        let dur = f(p, "duration_s");
        assert!(dur > 0.0, "{name}");
        assert!((f(p, "requests_per_s") * dur - 60.0).abs() < 1e-6, "{name}");
        assert!(
            f(p, "total_tokens_per_s") > f(p, "output_tokens_per_s"),
            "{name}"
        );
        // Ratios are relative to the paged run.
        let ratio = f(p, "throughput_vs_paged");
        assert!(
            (ratio - f(p, "output_tokens_per_s") / paged).abs() < 1e-9,
            "{name}"
        );
        for lat in ["ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"] {
            let (p50, p90, p99) = (f(&p[lat], "p50"), f(&p[lat], "p90"), f(&p[lat], "p99"));
            assert!(0.0 <= p50 && p50 <= p90 && p90 <= p99, "{name} {lat}");
        }
        // A request's first token comes before its last.
        assert!(f(&p["ttft_ms"], "p50") <= f(&p["e2e_ms"], "p99"), "{name}");
        for share in [
            "utilization_mean",
            "utilization_peak",
            "block_reuse",
            "prefix_hit_rate",
            "internal_fragmentation",
            "external_fragmentation",
        ] {
            assert!((0.0..=1.0).contains(&f(p, share)), "{name} {share}");
        }
        // Memory: the K/V held never exceeds the budget; bookkeeping is a sliver of it.
        let peak_kv = f(p, "peak_kv_bytes");
        assert!(peak_kv > 0.0 && peak_kv <= 12e9, "{name}: {peak_kv}");
        assert!(f(p, "peak_rss_bytes") > 0.0, "{name}");
        assert!((0.0..1e-3).contains(&f(p, "metadata_overhead")), "{name}");
        let batch = f(p, "mean_batch_size");
        assert!((1.0..=60.0).contains(&batch), "{name}: {batch}");
        if name == "paged" {
            // Blocks are handed out again after sequences end; a paged cache wastes at
            // most a partly filled last block per sequence.
            assert!(f(p, "block_reuse") > 0.0);
            assert!(f(p, "internal_fragmentation") < 0.05);
            assert_eq!(f(p, "external_fragmentation"), 0.0);
        } else {
            // A contiguous cache reserves ahead and never preempts or reuses blocks.
            assert_eq!(p["preemptions"], 0, "{name}");
            assert_eq!(f(p, "block_reuse"), 0.0, "{name}");
            assert!(f(p, "internal_fragmentation") > 0.0, "{name}");
        }
        assert_eq!(f(p, "prefix_hit_rate"), 0.0, "{name}: no prefix caching");
    }
    // Paging's point: more sequences share the same bytes than max-length reservations.
    assert!(f(&policies[0], "mean_batch_size") > f(&policies[1], "mean_batch_size"));
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

#[test]
fn openai_backend_errors_are_one_line() {
    let bad = |args: &[&str], says: &str| {
        let mut all = vec!["bench", "serve", "--quiet"];
        all.extend_from_slice(args);
        let out = pagedattn(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = one_line_error(&out);
        assert!(err.contains(says), "{args:?}: {err}");
    };
    bad(
        &["--backend", "grpc"],
        "invalid value 'grpc' for '--backend <BACKEND>' (possible values: in-process, openai)",
    );
    bad(
        &["--backend", "openai", "--exec", "simulated"],
        "cannot be combined with --backend openai",
    );
    bad(
        &["--backend", "openai", "--url", "127.0.0.1:8000"],
        "must start with http://",
    );
    bad(
        &["--backend", "openai", "--url", "https://127.0.0.1:8000"],
        "https is not supported",
    );
    bad(
        &["--backend", "openai", "--request-timeout", "0"],
        "--request-timeout",
    );
    bad(
        &["--vocab-size", "1000"],
        "--vocab-size applies to --backend openai",
    );
    // Nobody listening: the port of a listener just closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    bad(
        &["--backend", "openai", "--url", &url, "--requests", "2"],
        &format!("cannot connect to {url}: connection refused"),
    );
}

/// A minimal OpenAI-compatible server on 127.0.0.1 for `connections` connections (one
/// request each, answered and closed; at most 20 s): one model, every completion streamed
/// as one event per token and a usage event.
fn tiny_openai_server(connections: usize) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().take(connections) {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                    .unwrap();
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                let (mut line, mut length) = (String::new(), 0);
                r.read_line(&mut line).unwrap();
                let get = line.starts_with("GET ");
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                r.read_exact(&mut body).unwrap();
                let mut out = String::from("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                if get {
                    out.push_str(r#"{"object":"list","data":[{"id":"tiny","object":"model"}]}"#);
                } else {
                    let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let n = req["max_tokens"].as_u64().unwrap();
                    let p = req["prompt"].as_array().unwrap().len();
                    for _ in 0..n {
                        out.push_str("data: {\"choices\":[{\"index\":0,\"text\":\"x\"}]}\n\n");
                    }
                    let usage = serde_json::json!({"choices": [],
                        "usage": {"prompt_tokens": p, "completion_tokens": n}});
                    out.push_str("data: ");
                    out.push_str(&usage.to_string());
                    out.push_str("\n\ndata: [DONE]\n\n");
                }
                let _ = w.write_all(out.as_bytes());
            });
        }
    });
    url
}

#[test]
fn openai_backend_runs_the_real_workload_against_a_server() {
    let url = tiny_openai_server(5);
    let dir = std::env::temp_dir().join(format!("pa-cli-openai-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let saved = dir.join("w.jsonl");
    let out = pagedattn(&[
        "bench",
        "serve",
        "--backend",
        "openai",
        "--url",
        &url,
        "--workload",
        "alpaca-like",
        "--requests",
        "4",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
        "--save-workload",
        saved.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("4 requests (alpaca-like;")
            && text.contains(&format!("server {url}, model tiny")),
        "{text}"
    );
    assert!(
        text.lines().nth(2).unwrap().starts_with("openai "),
        "{text}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["config"]["backend"], "openai");
    assert_eq!(doc["config"]["model"], "tiny");
    assert_eq!(doc["config"]["vocab_size"], 49152);
    let p = &doc["policies"][0];
    assert_eq!(
        (p["requests"].as_u64(), p["failed_requests"].as_u64()),
        (Some(4), Some(0))
    );
    // The report counts the tokens the workload asked for.
    let wl: Vec<serde_json::Value> = std::fs::read_to_string(&saved)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let asked: u64 = wl.iter().map(|r| r["output_len"].as_u64().unwrap()).sum();
    let got = p["output_tokens_per_s"].as_f64().unwrap() * p["duration_s"].as_f64().unwrap();
    assert!(
        (got - asked as f64).abs() < 1e-6 * asked as f64,
        "{got} vs {asked}"
    );
    assert!(wl
        .iter()
        .flat_map(|r| r["prompt"].as_array().unwrap())
        .all(|t| (2..49152).contains(&t.as_u64().unwrap())));
    std::fs::remove_dir_all(&dir).unwrap();
}

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const PROSE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/prose.txt");

#[test]
fn perplexity_of_english_prose_on_the_real_model() {
    // A missing model fails the test (the README's test command fetches it first).
    assert!(
        std::path::Path::new(MODEL).exists(),
        "{MODEL} is missing: run scripts/fetch-model.sh"
    );
    let out = pagedattn(&[
        "perplexity",
        "--model",
        MODEL,
        "--file",
        PROSE,
        "--ctx",
        "64",
        "--threads",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let ppl: f64 = lines
        .last()
        .and_then(|l| l.strip_prefix("perplexity: "))
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no `perplexity: X` last line in {stdout:?}"));
    assert!(ppl.is_finite() && 1.0 < ppl && ppl < 100.0, "{ppl}");
    // Every full window of 64 tokens is run and scores its last 31 next tokens.
    let summary = lines[lines.len() - 2];
    let windows: usize = summary
        .split(", ")
        .nth(1)
        .and_then(|w| w.strip_suffix(" windows of 64"))
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(windows >= 5, "{summary}");
    assert!(
        summary.contains(&format!(", {} tokens scored,", windows * 31)),
        "{summary}"
    );
    // One progress line per window on stderr, the last with the final value.
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(progress.len(), windows, "{stderr}");
    assert_eq!(
        progress.last().unwrap(),
        &format!("[{windows}] {ppl:.4}"),
        "{stderr}"
    );
}

/// `pagedattn perplexity` on the real model with `file` and `more` flags.
fn ppl<'a>(file: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["perplexity", "--model", MODEL, "--file", file];
    v.extend_from_slice(more);
    v
}

#[test]
fn perplexity_errors_are_one_line_and_exit_1() {
    let dir = std::env::temp_dir().join(format!("pa-cli-ppl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let latin1 = dir.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    let short = dir.join("short.txt");
    std::fs::write(
        &short,
        "The lighthouse stood at the end of a narrow spit of rock.",
    )
    .unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let (latin1, short, empty) = (
        latin1.to_str().unwrap(),
        short.to_str().unwrap(),
        empty.to_str().unwrap(),
    );
    let missing = "/nonexistent/text.txt";
    for (args, says) in [
        (ppl(missing, &[]), "cannot read /nonexistent/text.txt"),
        (
            ppl(latin1, &[]),
            "is not UTF-8 text (invalid byte at offset 3)",
        ),
        (
            ppl(short, &["--ctx", "64"]),
            "has 13 tokens, fewer than one window of --ctx 64; --ctx 12 would fit",
        ),
        (
            ppl(empty, &[]),
            "has 0 tokens, fewer than one window of --ctx 512; give a longer text",
        ),
        (
            ppl(PROSE, &["--ctx", "63"]),
            "--ctx must be an even number >= 4, not 63",
        ),
        (
            ppl(PROSE, &["--ctx", "2"]),
            "--ctx must be an even number >= 4, not 2",
        ),
        (
            ppl(PROSE, &["--ctx", "0"]),
            "--ctx must be an even number >= 4, not 0",
        ),
        (
            ppl(PROSE, &["--ctx", "100000"]),
            "beyond the model's context of 8192 tokens",
        ),
        (ppl(PROSE, &["--weights", "q2"]), "--weights"),
        (ppl(PROSE, &["--threads", "0"]), "--threads must be >= 1"),
        (
            vec![
                "perplexity",
                "--model",
                "/nonexistent/m.gguf",
                "--file",
                PROSE,
            ],
            "cannot load model",
        ),
    ] {
        let out = pagedattn(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = one_line_error(&out);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_model_reports_consistent_speeds_for_each_weight_type() {
    let dir = std::env::temp_dir().join(format!("pa-cli-bm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for weights in ["native", "bf16"] {
        let json = dir.join(format!("{weights}.json"));
        let out = pagedattn(&[
            "bench",
            "model",
            "--model",
            MODEL,
            "--weights",
            weights,
            "--batch",
            "1,3",
            "--prefill",
            "16,40",
            "--reps",
            "2",
            "--threads",
            "2",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        for test in ["pp16", "pp40", "tg128", "tg128 x3"] {
            assert!(stdout.lines().any(|l| l.starts_with(test)), "{stdout}");
        }
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(r["weights"], weights);
        assert_eq!(r["machine"]["threads"], 2);
        let decode = r["decode"].as_array().unwrap();
        let prefill = r["prefill"].as_array().unwrap();
        assert_eq!(
            decode
                .iter()
                .map(|d| d["batch"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(
            prefill
                .iter()
                .map(|p| p["tokens"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [16, 40]
        );
        for t in decode.iter().chain(prefill) {
            let (v, sd) = (
                t["tokens_per_s"].as_f64().unwrap(),
                t["stddev"].as_f64().unwrap(),
            );
            assert!(v.is_finite() && v > 0.0 && sd >= 0.0 && sd < v, "{t}");
        }
        // The native file is 92 MiB as stored; bf16 doubles most of it.
        let bytes = r["weight_bytes"].as_f64().unwrap() / f64::from(1 << 20);
        let want = if weights == "native" {
            85.0..100.0
        } else {
            240.0..270.0
        };
        assert!(want.contains(&bytes), "{weights}: {bytes} MiB");
    }
    for (args, says) in [
        (vec!["--reps", "0"], "--reps"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--prefill", "0"], "--prefill"),
        (vec!["--prefill", "9000"], "context"),
        (vec!["--weights", "q4"], "--weights"),
        (vec!["--threads", "0"], "--threads"),
    ] {
        let mut a = vec!["bench", "model", "--model", MODEL];
        a.extend(args.iter().copied());
        let out = pagedattn(&a);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(one_line_error(&out).contains(says), "{args:?}");
    }
}
