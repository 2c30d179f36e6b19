//! The server on the real SmolLM2-135M-Instruct: chat through the model's own template,
//! streaming equals non-streaming, and a client that disconnects mid-stream frees its
//! blocks.

mod common;

use common::{assemble, client, post, post_stream, smollm2};
use pagedattn_server::ServerOptions;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_goes_through_the_models_template_and_streams_the_same_text() {
    let srv = smollm2(ServerOptions::default()).await;
    let question = "What is the capital of France?";
    let body = json!({
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 24, "temperature": 0,
    });
    let (status, whole) = post(&srv.url, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{whole}");
    // SmolLM2's template adds its default system turn: the prompt is that ChatML text.
    let tok = srv.state.tokenizer.clone();
    let expect = tok.encode(&tok.chat_prompt(question)).unwrap();
    assert_eq!(whole["usage"]["prompt_tokens"], expect.len());
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    assert!(!text.contains("<|im_end|>"));
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let (texts, reasons, _) =
        assemble(&post_stream(&srv.url, "/v1/chat/completions", &sbody).await);
    assert_eq!(texts[0], text);
    assert_eq!(
        reasons[0].as_deref(),
        whole["choices"][0]["finish_reason"].as_str()
    );
    srv.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_frees_its_blocks() {
    let srv = smollm2(ServerOptions::default()).await;
    let body = json!({
        "prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": true,
        "temperature": 0, "stream": true,
    });
    let mut r = client()
        .post(format!("{}/v1/completions", srv.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut seen = 0;
    while seen < 3 {
        let c = r.chunk().await.unwrap().expect("stream ended early");
        seen += String::from_utf8_lossy(&c).matches("data: ").count();
    }
    assert!(srv.state.engine.stats().kv.held_slots > 0);
    drop(r);
    tokio::time::timeout(Duration::from_secs(20), srv.wait_idle())
        .await
        .unwrap();
    let st = srv.state.engine.stats();
    assert!(
        st.totals.output_tokens < 400,
        "the request ran to the end: {:?}",
        st.totals
    );
    assert_eq!(st.running + st.waiting, 0);
    // Keeps serving.
    let (s, _) = post(
        &srv.url,
        "/v1/completions",
        &json!({"prompt": "Hi", "max_tokens": 2}),
    )
    .await;
    assert_eq!(s, 200);
}
