//! The HTTP API on a tiny random model: streaming equals non-streaming, n, stop strings,
//! logprobs, every error with its status and body (and nothing leaked after it), client
//! disconnects, 200 concurrent streams, /metrics, and shutdown with requests in flight.

mod common;

use common::{assemble, client, post, post_stream, tiny};
use pagedattn_server::ServerOptions;
use serde_json::{json, Value};
use std::time::Duration;

fn opts() -> ServerOptions {
    ServerOptions {
        model_name: "tiny".into(),
        ..ServerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_equals_non_streaming_under_greedy() {
    let srv = tiny(opts()).await;
    for (path, body) in [
        (
            "/v1/completions",
            json!({"prompt": "Hello, paged world", "max_tokens": 40, "temperature": 0}),
        ),
        (
            "/v1/completions",
            json!({"prompt": [72, 101, 108, 108, 111], "max_tokens": 33, "temperature": 0, "n": 2}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 25, "temperature": 0}),
        ),
    ] {
        let (status, whole) = post(&srv.url, path, &body).await;
        assert_eq!(status, 200, "{whole}");
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        sbody["stream_options"] = json!({"include_usage": true});
        let (texts, reasons, usage) = assemble(&post_stream(&srv.url, path, &sbody).await);
        let choices = whole["choices"].as_array().unwrap();
        assert_eq!(texts.len(), choices.len());
        for (i, c) in choices.iter().enumerate() {
            let text = c
                .get("text")
                .or_else(|| c["message"].get("content"))
                .unwrap();
            assert_eq!(texts[i], text.as_str().unwrap(), "{path} choice {i}");
            assert_eq!(reasons[i].as_deref(), c["finish_reason"].as_str());
        }
        // Equal but for prefix-cache hits: the second run finds the first one's prompt.
        let usage = usage.unwrap();
        for k in ["prompt_tokens", "completion_tokens", "total_tokens"] {
            assert_eq!(usage[k], whole["usage"][k], "{path} {k}");
        }
    }
    srv.wait_idle().await;
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_samples_share_a_prompt_and_seeds_reproduce() {
    let srv = tiny(opts()).await;
    let body = json!({"prompt": "abc", "max_tokens": 20, "temperature": 1.0, "n": 3, "seed": 11});
    let (s1, a) = post(&srv.url, "/v1/completions", &body).await;
    let (s2, b) = post(&srv.url, "/v1/completions", &body).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(
        a["choices"], b["choices"],
        "the same seed must give the same completions"
    );
    let texts: Vec<&str> = a["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 3);
    assert!(
        texts[0] != texts[1] || texts[1] != texts[2],
        "samples should differ: {texts:?}"
    );
    assert_eq!(a["usage"]["completion_tokens"], 60);
    assert_eq!(a["usage"]["prompt_tokens"], 3);
    srv.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_cut_the_text_streaming_or_not() {
    let srv = tiny(opts()).await;
    let base = json!({"prompt": "The quick brown fox", "max_tokens": 60, "temperature": 0});
    let (_, full) = post(&srv.url, "/v1/completions", &base).await;
    let text = full["choices"][0]["text"].as_str().unwrap().to_string();
    // A stop string from the middle of the greedy output, 3 characters long.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    assert!(chars.len() > 20, "{text:?}");
    let (start, _) = chars[chars.len() / 2];
    let end = chars.get(chars.len() / 2 + 3).map_or(text.len(), |c| c.0);
    let stop = text[start..end].to_string();
    let expect = &text[..text.find(&stop).unwrap()];
    let mut body = base.clone();
    body["stop"] = json!([stop, "\u{1}never"]);
    let (_, cut) = post(&srv.url, "/v1/completions", &body).await;
    assert_eq!(cut["choices"][0]["text"].as_str().unwrap(), expect);
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    assert!(cut["usage"]["completion_tokens"].as_u64().unwrap() < 60);
    body["stream"] = json!(true);
    let events = post_stream(&srv.url, "/v1/completions", &body).await;
    let (texts, reasons, _) = assemble(&events);
    assert_eq!(texts[0], expect);
    assert_eq!(reasons[0].as_deref(), Some("stop"));
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(!v["choices"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains(&stop));
    }
    srv.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_for_completions_and_chat() {
    let srv = tiny(opts()).await;
    let (_, c) = post(
        &srv.url,
        "/v1/completions",
        &json!({"prompt": "xyz", "max_tokens": 8, "temperature": 0, "logprobs": 3}),
    )
    .await;
    let lp = &c["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 8);
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= 3);
        let best = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        let chosen = lp["token_logprobs"][i].as_f64().unwrap();
        assert!(
            chosen <= 0.0 && (chosen - best).abs() < 1e-4,
            "greedy picks the best: {chosen} vs {best}"
        );
    }
    let (_, ch) = post(&srv.url, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "q"}], "max_tokens": 5, "logprobs": true, "top_logprobs": 2})).await;
    let content = ch["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 5);
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
    srv.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors_and_change_nothing() {
    let srv = tiny(ServerOptions {
        max_body_bytes: 4096,
        ..opts()
    })
    .await;
    let url = srv.url.clone();
    let raw = |body: &'static str| {
        let url = url.clone();
        async move {
            let r = client()
                .post(format!("{url}/v1/completions"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, e) = raw("{\"prompt\": ").await;
    assert_eq!(s, 400);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let big = Box::leak(format!("{{\"prompt\": \"{}\"}}", "a".repeat(10_000)).into_boxed_str());
    let (s, e) = raw(big).await;
    assert_eq!(s, 413, "{e}");
    assert_eq!(e["error"]["code"], "request_too_large");
    let cases = [
        (
            json!({"prompt": "x", "max_tokens": "ten"}),
            400,
            Some("max_tokens"),
        ),
        (
            json!({"prompt": "x", "temperature": 7}),
            400,
            Some("temperature"),
        ),
        (json!({"prompt": "x", "top_p": 0}), 400, Some("top_p")),
        (json!({"prompt": "x", "n": 0}), 400, Some("n")),
        (json!({"prompt": "x", "n": 1000}), 400, Some("n")),
        (
            json!({"prompt": "x", "max_tokens": 0}),
            400,
            Some("max_tokens"),
        ),
        (
            json!({"prompt": "x", "max_tokens": 5000}),
            400,
            Some("max_tokens"),
        ),
        (
            json!({"prompt": "x", "max_tokens": u64::MAX}),
            400,
            Some("max_tokens"),
        ),
        (json!({"prompt": ""}), 400, Some("prompt")),
        (json!({"prompt": []}), 400, Some("prompt")),
        (json!({"prompt": [[]]}), 400, Some("prompt")),
        (json!({"prompt": [300]}), 400, Some("prompt")),
        (json!({"max_tokens": 3}), 400, Some("prompt")),
        (
            json!({"prompt": "x", "logprobs": 21}),
            400,
            Some("logprobs"),
        ),
        (json!({"prompt": "x", "stop": [""]}), 400, Some("stop")),
        (
            json!({"prompt": "x", "model": "gpt-4o"}),
            404,
            Some("model"),
        ),
        (json!({"prompt": "x", "echo": true}), 400, Some("echo")),
    ];
    for (body, status, param) in cases {
        let (s, e) = post(&srv.url, "/v1/completions", &body).await;
        assert_eq!(s, status, "{body} -> {e}");
        let err = &e["error"];
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{e}"
        );
        assert!(err["type"].is_string() && err.get("code").is_some(), "{e}");
        assert_eq!(err["param"].as_str(), param, "{body} -> {e}");
    }
    for (body, param) in [
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
            "top_logprobs",
        ),
    ] {
        let (s, e) = post(&srv.url, "/v1/chat/completions", &body).await;
        assert_eq!(s, 400, "{body} -> {e}");
        assert_eq!(e["error"]["param"], param, "{e}");
    }
    let (s, _) = post(&srv.url, "/v1/nothing", &json!({})).await;
    assert_eq!(s, 404);
    let st = srv.state.engine.stats();
    assert_eq!(
        (
            st.totals.prompt_tokens,
            st.kv.held_slots,
            srv.state.engine.num_in_flight()
        ),
        (0, 0, 0)
    );
    // Still serving.
    let (s, _) = post(
        &srv.url,
        "/v1/completions",
        &json!({"prompt": "ok", "max_tokens": 2}),
    )
    .await;
    assert_eq!(s, 200);
    srv.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_and_overload_answers() {
    let srv = tiny(ServerOptions {
        api_key: Some("sekret".into()),
        max_waiting: 0,
        ..opts()
    })
    .await;
    let body = json!({"prompt": "x", "max_tokens": 2});
    let (s, e) = post(&srv.url, "/v1/completions", &body).await;
    assert_eq!(s, 401, "{e}");
    assert_eq!(e["error"]["type"], "authentication_error");
    let r = client()
        .get(format!("{}/v1/models", srv.url))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Health and metrics stay open for load balancers and scrapers.
    assert_eq!(
        client()
            .get(format!("{}/health", srv.url))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        client()
            .get(format!("{}/metrics", srv.url))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // With the key: max_waiting 0 refuses every request with 503 and Retry-After.
    let r = client()
        .post(format!("{}/v1/completions", srv.url))
        .bearer_auth("sekret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "overloaded");
    let models: Value = client()
        .get(format!("{}/v1/models", srv.url))
        .bearer_auth("sekret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");
    assert_eq!(srv.state.engine.stats().totals.prompt_tokens, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_streams_complete_and_the_server_keeps_serving() {
    let srv = tiny(opts()).await;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let url = srv.url.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"prompt": [i % 200 + 1, 7, 9], "max_tokens": 24, "temperature": 0, "stream": true});
            let (texts, reasons, _) = assemble(&post_stream(&url, "/v1/completions", &body).await);
            assert_eq!(reasons[0].as_deref(), Some("length"));
            texts[0].len()
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a stream hung")
            .unwrap();
    }
    srv.wait_idle().await;
    let st = srv.state.engine.stats();
    assert_eq!(st.totals.finished_requests, 200);
    assert_eq!(st.totals.output_tokens, 200 * 24);
    let (s, _) = post(
        &srv.url,
        "/v1/completions",
        &json!({"prompt": "after", "max_tokens": 3}),
    )
    .await;
    assert_eq!(s, 200);
    srv.state.engine.stats();
}

/// Checks the Prometheus text exposition: every sample line is `name{labels} value` with a
/// name declared by a `# TYPE` line (allowing the `_total`, `_sum`, `_count`, `_bucket`
/// suffixes), values parse as numbers, and the document ends with `# EOF`.
fn parse_exposition(text: &str) -> std::collections::HashMap<String, f64> {
    let mut types = std::collections::HashMap::new();
    let mut samples = std::collections::HashMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"));
    for l in &lines {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), kind.to_string());
        } else if !l.starts_with('#') {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{l}"
            );
            let family = ["_total", "_sum", "_count", "_bucket", ""]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
                .unwrap_or_else(|| panic!("{name} has no TYPE line"));
            assert!(types.contains_key(family));
            if series.contains('{') {
                assert!(series.ends_with('}'), "{l}");
            }
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {l}"));
            *samples.entry(series.to_string()).or_insert(0.0) += v;
        }
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_use_vllm_names() {
    let srv = tiny(opts()).await;
    post(
        &srv.url,
        "/v1/completions",
        &json!({"prompt": "abcdefghijklmnopqrstuvwxyz0123456789", "max_tokens": 4}),
    )
    .await;
    post(
        &srv.url,
        "/v1/completions",
        &json!({"prompt": "abcdefghijklmnopqrstuvwxyz0123456789", "max_tokens": 4}),
    )
    .await;
    srv.wait_idle().await;
    let r = client()
        .get(format!("{}/metrics", srv.url))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("openmetrics-text"));
    let text = r.text().await.unwrap();
    let m = parse_exposition(&text);
    let get = |name: &str| {
        let v = *m
            .iter()
            .find(|(k, _)| k.split('{').next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .1;
        // Every figure here is a count.
        assert!(v.fract() == 0.0 && v >= 0.0, "{name} = {v}");
        v as u64
    };
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "pagedattn:kv_block_utilization",
        "pagedattn:kv_internal_fragmentation_perc",
    ] {
        get(name);
    }
    assert_eq!(get("vllm:prompt_tokens_total"), 72);
    assert_eq!(get("vllm:generation_tokens_total"), 8);
    assert_eq!(get("vllm:prefix_cache_queries_total"), 72);
    // The second prompt found its first two full blocks (32 tokens) in the prefix cache.
    assert_eq!(get("vllm:prefix_cache_hits_total"), 32);
    assert_eq!(get("vllm:num_preemptions_total"), 0);
    assert_eq!(get("vllm:time_to_first_token_seconds_count"), 2);
    assert_eq!(get("vllm:e2e_request_latency_seconds_count"), 2);
    assert_eq!(get("vllm:inter_token_latency_seconds_count"), 6);
    assert_eq!(get("vllm:kv_cache_usage_perc"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_requests_in_flight_exits_cleanly() {
    let srv = tiny(ServerOptions {
        shutdown_grace: Duration::from_millis(300),
        ..opts()
    })
    .await;
    let url = srv.url.clone();
    // Many long streams, so some are still running when the signal comes.
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"prompt": [i + 1, 2, 3], "max_tokens": 1000, "ignore_eos": true, "stream": true});
            let events = post_stream(&url, "/v1/completions", &body).await;
            assemble(&events).1[0].clone()
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let state = srv.state.clone();
    srv.shutdown().await.unwrap();
    for t in tasks {
        let reason = t.await.unwrap();
        assert!(
            matches!(reason.as_deref(), Some("length" | "abort")),
            "{reason:?}"
        );
    }
    assert_eq!(state.engine.num_in_flight(), 0);
    assert_eq!(state.engine.stats().kv.held_slots, 0);
    // The listener is closed.
    assert!(client().get(format!("{url}/health")).send().await.is_err());
}
