//! A server on 127.0.0.1, port 0, for one test: a tiny random model with a byte-level
//! tokenizer, or the real SmolLM2 (its file must be fetched: scripts/fetch-model.sh).

#![allow(dead_code)]

use pagedattn_engine::{EngineConfig, KvPolicy};
use pagedattn_kernels::DType;
use pagedattn_model::{LoadOptions, Model, Tokenizer, WeightDType};
use pagedattn_server::{AppState, ServerOptions};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub url: String,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Signals shutdown and waits (bounded) for the server to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("server did not stop within 20 s")
            .expect("server task panicked")
    }

    /// Waits (bounded) until no request is in flight and no KV slot is held.
    pub async fn wait_idle(&self) {
        let t = std::time::Instant::now();
        loop {
            let s = self.state.engine.stats();
            if self.state.engine.num_in_flight() == 0 && s.kv.held_slots == 0 && s.running == 0 {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "not idle after 20 s: {} in flight, {:?}",
                self.state.engine.num_in_flight(),
                s.kv
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub async fn start(
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    options: ServerOptions,
    kv_bytes: u64,
) -> TestServer {
    let mut cfg = EngineConfig::new(KvPolicy::PagedPrefixCache, kv_bytes);
    cfg.max_model_len = Some(model.config().max_context.min(2048));
    let state = pagedattn_server::start(model, tokenizer, DType::F32, cfg, options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(pagedattn_server::serve(listener, state.clone(), async {
        let _ = rx.await;
    }));
    TestServer {
        url,
        state,
        stop: Some(tx),
        task: Some(task),
    }
}

/// The tiny random model (vocabulary 256, 1024 positions) with a byte-level tokenizer.
pub async fn tiny(options: ServerOptions) -> TestServer {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    let model = MODEL
        .get_or_init(|| Arc::new(Model::random_named("tiny", 7, WeightDType::F32).unwrap()))
        .clone();
    start(model, Arc::new(Tokenizer::byte_level()), options, 64 << 20).await
}

/// The real SmolLM2-135M-Instruct (Q4_1 GGUF), loaded once per test binary.
pub async fn smollm2(options: ServerOptions) -> TestServer {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    let model = MODEL
        .get_or_init(|| {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
            assert!(
                path.exists(),
                "{} is missing: run scripts/fetch-model.sh (the README's test command does)",
                path.display()
            );
            Arc::new(
                Model::load(
                    &path,
                    LoadOptions {
                        dtype: WeightDType::Bf16,
                    },
                )
                .unwrap(),
            )
        })
        .clone();
    let tok = Arc::new(model.require_tokenizer().unwrap().clone());
    start(model, tok, options, 256 << 20).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .no_proxy()
        .build()
        .unwrap()
}

/// POSTs `body`; returns the status and the JSON answer.
pub async fn post(url: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("{url}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// POSTs a streaming request and returns the data of every event, `[DONE]` included.
pub async fn post_stream(url: &str, path: &str, body: &Value) -> Vec<String> {
    let mut r = client()
        .post(format!("{url}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    let mut buf = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        buf.extend_from_slice(&c);
    }
    sse_data(&String::from_utf8(buf).unwrap())
}

/// The `data:` payloads of a server-sent events body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// Concatenated text per choice of a stream of completion or chat chunks, the finish
/// reasons, and the usage chunk if any.
pub fn assemble(events: &[String]) -> (Vec<String>, Vec<Option<String>>, Option<Value>) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let mut texts: Vec<String> = Vec::new();
    let mut reasons: Vec<Option<String>> = Vec::new();
    let mut usage = None;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(v.get("error").is_none(), "error event: {e}");
        if let Some(u) = v.get("usage") {
            usage = Some(u.clone());
        }
        for c in v["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            if texts.len() <= i {
                texts.resize(i + 1, String::new());
                reasons.resize(i + 1, None);
            }
            let piece = c
                .get("text")
                .or_else(|| c["delta"].get("content"))
                .and_then(Value::as_str)
                .unwrap_or("");
            texts[i].push_str(piece);
            if let Some(r) = c["finish_reason"].as_str() {
                reasons[i] = Some(r.to_string());
            }
        }
    }
    (texts, reasons, usage)
}
