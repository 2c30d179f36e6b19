//! Unit tests of the load generator: stream accounting, errors, URLs, request bodies.

use super::*;
use crate::sse::tests::VLLM_LIKE;

/// Feeds a whole stream to a [`Stream`], event i received at time i.
fn follow(text: &str) -> Stream {
    let mut p = SseParser::default();
    let mut s = Stream::default();
    let mut t = 0.0;
    p.feed(text.as_bytes(), |d| {
        t += 1.0;
        s.on_data(d, t);
    });
    s
}

fn request(prompt_len: usize, output_len: usize) -> WorkloadRequest {
    WorkloadRequest {
        arrival: 0.5,
        prompt: vec![7; prompt_len],
        output_len,
        session: None,
    }
}

#[test]
fn empty_text_counts_and_usage_sets_the_counts() {
    // The comment is no event: the token events are the 1st to 3rd.
    let s = follow(VLLM_LIKE);
    assert_eq!(s.token_times, [1.0, 2.0, 3.0]);
    assert_eq!(s.done, Some(5.0));
    assert!(s.error.is_none());
    let m = s.into_metrics(3, &request(4, 3));
    assert_eq!(m.request, RequestId(3));
    assert_eq!(m.prompt_len, 5, "the server's prompt count wins");
    assert_eq!(m.token_times, [1.0, 2.0, 3.0]);
    assert_eq!((m.arrival, m.finished), (0.5, Some(5.0)));
    assert_eq!(m.finish_reason, Some(FinishReason::Length));
}

#[test]
fn batched_tokens_repeat_the_last_time_and_extra_events_are_dropped() {
    // Two events for five tokens: the three missing ones arrived with the last event.
    let batched = concat!(
        "data: {\"choices\":[{\"text\":\"ab\"}]}\n\n",
        "data: {\"choices\":[{\"text\":\"cde\",\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    );
    let m = follow(batched).into_metrics(0, &request(4, 8));
    assert_eq!(m.token_times, [1.0, 2.0, 2.0, 2.0, 2.0]);
    assert_eq!(m.finish_reason, Some(FinishReason::Stop));
    // Three events for two tokens (a last event with only the finish reason).
    let extra = concat!(
        "data: {\"choices\":[{\"text\":\"a\"}]}\n\n",
        "data: {\"choices\":[{\"text\":\"b\"}]}\n\n",
        "data: {\"choices\":[{\"text\":\"\",\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n",
        "data: [DONE]\n\n",
    );
    let m = follow(extra).into_metrics(0, &request(4, 2));
    assert_eq!(m.token_times, [1.0, 2.0]);
    // No usage event: every event is a token.
    let m = follow("data: {\"choices\":[{}]}\n\ndata: {\"choices\":[{}]}\n\ndata: [DONE]\n\n")
        .into_metrics(0, &request(3, 2));
    assert_eq!((m.token_times.len(), m.prompt_len), (2, 3));
}

#[test]
fn error_events_and_bodies_fail_the_request() {
    let s = follow(concat!(
        "data: {\"choices\":[{\"text\":\"a\"}]}\n\n",
        "data: {\"error\":{\"object\":\"error\",\"message\":\"out of memory\",\"code\":500}}\n\n",
        "data: [DONE]\n\n",
    ));
    assert_eq!(
        s.error.as_deref(),
        Some("the server reported an error: out of memory")
    );
    assert!(s.done.is_none(), "nothing after the error counts");
    let s = follow("data: {\"error\":\"busy\"}\n\n");
    assert_eq!(
        s.error.as_deref(),
        Some("the server reported an error: busy")
    );
    let s = follow("data: {not json\n\n");
    assert!(s.error.unwrap().starts_with("an event is not JSON"));
    // A stream without [DONE] is not done.
    assert!(follow("data: {\"choices\":[{}]}\n\n").done.is_none());
    // Error bodies of non-2xx answers.
    assert_eq!(
        error_message(
            br#"{"error":{"message":"max_tokens is too large","type":"invalid_request_error"}}"#
        ),
        "max_tokens is too large"
    );
    assert_eq!(
        error_message(br#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","code":404}"#),
        "The model `x` does not exist."
    );
    assert_eq!(error_message(b"Bad Gateway\n"), "Bad Gateway");
    assert_eq!(error_message(b""), "(empty body)");
    assert_eq!(error_message(&[b'x'; 1000]).len(), 303);
}

#[test]
fn urls_are_checked_and_normalized() {
    let b = |u: &str| base_url(u);
    assert_eq!(b("http://127.0.0.1:8000").unwrap(), "http://127.0.0.1:8000");
    assert_eq!(
        b("http://127.0.0.1:8000/").unwrap(),
        "http://127.0.0.1:8000"
    );
    assert_eq!(
        b("http://localhost:8000/v1/").unwrap(),
        "http://localhost:8000"
    );
    assert_eq!(b("http://h/proxy/v1").unwrap(), "http://h/proxy");
    let e = b("https://api.example.com").unwrap_err().to_string();
    assert!(e.contains("https is not supported"), "{e}");
    let e = b("127.0.0.1:8000").unwrap_err().to_string();
    assert!(e.contains("must start with http://"), "{e}");
    assert!(b("http://").is_err());
    assert!(b("http://:80").is_err());
    assert!(OpenAiBackend::new("ftp://x").is_err());
}

#[test]
fn request_body_is_the_streaming_completion() {
    let v: Value = serde_json::from_slice(&request_body("m", &request(3, 9))).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "model": "m", "prompt": [7, 7, 7], "max_tokens": 9, "temperature": 0,
            "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true},
        })
    );
}
