//! `/dashboard` and `/dashboard/state` on the tiny model: the pool picture agrees with the
//! counters and with `/metrics`, shows running sequences and their blocks while they run,
//! forks and copies-on-write, bounded cells, one picture per interval for every caller,
//! and bad queries answered as OpenAI-style errors. The page itself is checked in a real
//! browser by `scripts/dashboard-test.sh`.

mod common;

use common::{client, post, tiny};
use pagedattn_server::{ServerOptions, PICTURE_TTL};
use serde_json::{json, Value};
use std::time::Duration;

fn opts() -> ServerOptions {
    ServerOptions {
        model_name: "tiny".into(),
        ..ServerOptions::default()
    }
}

async fn state(url: &str, query: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{url}/dashboard/state{query}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Blocks per state over all cells: (free, cached free, used, shared).
fn totals(s: &Value) -> (u64, u64, u64, u64) {
    let cells = s["pool"]["cells"].as_array().unwrap();
    cells.iter().fold((0, 0, 0, 0), |t, c| {
        let n = |k: &str| c[k].as_u64().unwrap();
        (
            t.0 + n("free"),
            t.1 + n("cached_free"),
            t.2 + n("used"),
            t.3 + n("shared"),
        )
    })
}

/// A sample of `/metrics` (label sets summed).
async fn metric(url: &str, name: &str) -> f64 {
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_picture_agrees_with_the_counters_and_the_metrics() {
    let srv = tiny(opts()).await;
    let prompt = "the same prompt prefix, long enough to fill a few blocks of sixteen tokens";
    for seed in 0..3 {
        // Two samples per request: a fork sharing the prompt's blocks, then diverging.
        let (status, _) = post(
            &srv.url,
            "/v1/completions",
            &json!({"prompt": prompt, "max_tokens": 12, "n": 2, "seed": seed, "temperature": 1.0}),
        )
        .await;
        assert_eq!(status, 200);
    }
    srv.wait_idle().await;
    tokio::time::sleep(PICTURE_TTL).await;
    let (status, s) = state(&srv.url, "?cells=64").await;
    assert_eq!(status, 200, "{s}");
    let c = &s["counters"];
    let n = |v: &Value| v.as_u64().unwrap();
    let (free, cached, used, shared) = totals(&s);
    let blocks = n(&s["pool"]["num_blocks"]);
    assert_eq!(free + cached + used + shared, blocks);
    assert_eq!(n(&c["kv_blocks_total"]), blocks);
    assert_eq!(used + shared, n(&c["kv_blocks_used"]));
    assert_eq!(cached, n(&c["kv_blocks_cached_free"]));
    assert!(cached > 0, "finished prompts stay cached: {s}");
    assert!(s["pool"]["cells"].as_array().unwrap().len() <= 64);
    // Forks that diverged copied their shared last block.
    assert!(n(&s["pool"]["cow_copies"]) >= 1, "{s}");
    assert_eq!(n(&s["pool"]["cow_copies"]), n(&c["kv_cow_copies"]));
    assert!(!s["pool"]["recent_copies"].as_array().unwrap().is_empty());
    // The counters are /metrics' figures.
    for (key, name) in [
        ("generation_tokens", "vllm:generation_tokens_total"),
        ("prompt_tokens", "vllm:prompt_tokens_total"),
        ("prefix_cache_hits", "vllm:prefix_cache_hits_total"),
        ("prefix_cache_queries", "vllm:prefix_cache_queries_total"),
        ("kv_blocks_used", "pagedattn:kv_blocks_used"),
        ("kv_blocks_cached_free", "pagedattn:kv_blocks_cached_free"),
        ("num_requests_running", "vllm:num_requests_running"),
    ] {
        // Counts, exact in f64.
        let (ours, theirs) = (c[key].as_f64().unwrap(), metric(&srv.url, name).await);
        assert!(
            (ours - theirs).abs() < 0.5,
            "{key} {ours} vs {name} {theirs}"
        );
    }
    assert!(n(&c["prefix_cache_hits"]) > 0);
    // The time series: a sample per half second, none ahead of the counters.
    let history = s["history"].as_array().unwrap();
    assert!(!history.is_empty());
    assert!(history
        .windows(2)
        .all(|w| w[0]["t"].as_f64() < w[1]["t"].as_f64()));
    assert!(n(&history.last().unwrap()["generation_tokens"]) <= n(&c["generation_tokens"]));
    assert!(s["sequences"].as_array().unwrap().is_empty());
    assert_eq!(s["model"], "tiny");
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_sequences_show_with_their_blocks_and_contiguous_reservations() {
    let srv = tiny(opts()).await;
    let url = srv.url.clone();
    let work = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                post(
                    &url,
                    "/v1/completions",
                    &json!({"prompt": format!("request {i} asks for a long answer"), "max_tokens": 900, "ignore_eos": true}),
                )
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().0, 200);
        }
    });
    // Wait (bounded) for a picture with running sequences. Each query asks for a different
    // number of cells, so each gets a fresh picture rather than the one cached for 400 ms
    // (the tiny model finishes these requests in well under a second in a release build);
    // every number is above the pool's 8,192 blocks, so each cell is one block.
    let mut seen = None;
    for i in 0..2000 {
        let (_, s) = state(&srv.url, &format!("?cells={}", 16_384 - i)).await;
        if s["contiguous"]["running"].as_u64().unwrap() >= 2 {
            seen = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let s = seen.expect("no picture showed two running sequences");
    assert_eq!(s["pool"]["blocks_per_cell"], 1);
    let running: Vec<&Value> = s["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["state"] == "running")
        .collect();
    assert!(running.len() >= 2);
    let block = s["pool"]["block_size"].as_u64().unwrap();
    for q in &running {
        let len = q["prompt_tokens"].as_u64().unwrap() + q["output_tokens"].as_u64().unwrap();
        let blocks = q["blocks"].as_u64().unwrap();
        // Blocks hold every token but the newest, whose K/V the next step writes.
        assert!(blocks * block + 1 >= len && blocks >= 1, "{q}");
    }
    // A cell names the sequence holding it.
    let owners: Vec<u64> = s["pool"]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["owner"].as_u64())
        .collect();
    assert!(running
        .iter()
        .all(|q| owners.contains(&q["seq"].as_u64().unwrap())));
    let c = &s["contiguous"];
    let max_len = s["max_model_len"].as_u64().unwrap();
    let k = running.len() as u64;
    assert_eq!(c["max"]["reserved_tokens"].as_u64().unwrap(), k * max_len);
    // The newest token of each sequence is not in a block yet.
    assert!(
        c["oracle"]["reserved_tokens"].as_u64().unwrap() <= c["paged_tokens"].as_u64().unwrap() + k,
        "{c}"
    );
    assert!(
        c["pow2"]["reserved_tokens"].as_u64().unwrap()
            >= c["oracle"]["reserved_tokens"].as_u64().unwrap()
    );
    tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("the requests did not finish")
        .unwrap();
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_picture_serves_every_caller_within_its_interval() {
    let srv = tiny(opts()).await;
    let calls = (0..20).map(|_| state(&srv.url, "?cells=128"));
    let answers = futures_util::future::join_all(calls).await;
    let times: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, s)| {
            assert_eq!(*status, 200);
            s["time_s"].to_string()
        })
        .collect();
    // 20 concurrent callers within a fraction of a second: one or two pictures.
    assert!(times.len() <= 2, "{} pictures", times.len());
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_are_openai_style_errors() {
    let srv = tiny(opts()).await;
    for q in ["?cells=0", "?cells=16385", "?cells=-3", "?cells=lots"] {
        let r = client()
            .get(format!("{}/dashboard/state{q}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{q}");
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(body["error"]["message"].is_string(), "{q}: {body}");
    }
    srv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_self_contained() {
    let srv = tiny(opts()).await;
    let r = client()
        .get(format!("{}/dashboard", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(page.contains("<canvas id=\"pool\""));
    assert!(page.contains("dashboard/state"));
    // Nothing loaded from elsewhere: no CDN, works offline.
    for bad in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!page.contains(bad), "{bad}");
    }
    srv.shutdown().await.unwrap();
}
