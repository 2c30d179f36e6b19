//! The HTTP load generator against a small mock OpenAI-compatible server on 127.0.0.1
//! (port 0): every request is streamed and measured, the report's figures agree with the
//! tokens the server reported, and failures (an error status, a broken or unfinished
//! stream, a stalled server, nobody listening) are counted or reported without hanging.
//!
//! The mock serves one thread per connection, HTTP/1.1 keep-alive, chunked streams. The
//! first prompt token picks its behaviour for a completion request (see `Behaviour`). It
//! accepts connections for at most 30 s and stops when the test drops it.

use pagedattn_bench::openai::{run_openai, run_openai_detailed, OpenAiBackend};
use pagedattn_bench::report::table;
use pagedattn_bench::workload::WorkloadRequest;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const MODEL: &str = "mock-model";
/// The mock's pause before each token event.
const TOKEN_DELAY: Duration = Duration::from_millis(4);

/// What the mock does with a completion request, chosen by the prompt's first token.
const NORMAL: u32 = 101;
const BAD_REQUEST: u32 = 102;
const CLOSE_MID_STREAM: u32 = 103;
const NO_DONE: u32 = 104;
const STALL: u32 = 105;

struct Mock {
    url: String,
    stop: Arc<AtomicBool>,
    /// Bodies of the completion requests received.
    bodies: Arc<Mutex<Vec<Value>>>,
    /// `GET /v1/models` requests received.
    model_lists: Arc<AtomicUsize>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn mock() -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let model_lists = Arc::new(AtomicUsize::new(0));
    let (s, b, m) = (stop.clone(), bodies.clone(), model_lists.clone());
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut connections = 0;
        while !s.load(Ordering::Relaxed) && Instant::now() < deadline && connections < 200 {
            match listener.accept() {
                Ok((conn, _)) => {
                    connections += 1;
                    let (b, m) = (b.clone(), m.clone());
                    thread::spawn(move || serve(conn, &b, &m));
                }
                Err(_) => thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    Mock {
        url,
        stop,
        bodies,
        model_lists,
    }
}

/// One connection: requests until the client closes it (or 10 s of silence).
fn serve(conn: TcpStream, bodies: &Mutex<Vec<Value>>, model_lists: &AtomicUsize) {
    conn.set_nonblocking(false).unwrap();
    conn.set_nodelay(true).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    while let Some((method, path, body, session)) = read_request(&mut r) {
        let ok = match (method.as_str(), path.as_str()) {
            ("GET", "/v1/models") => {
                model_lists.fetch_add(1, Ordering::Relaxed);
                let list = json!({"object": "list", "data": [{"id": MODEL, "object": "model"}]});
                respond(&mut w, "200 OK", &list.to_string())
            }
            ("POST", "/v1/completions") => {
                let req: Value = serde_json::from_slice(&body).unwrap();
                let mut seen = req.clone();
                if let Some(s) = session {
                    seen["_session_header"] = s.into();
                }
                bodies.lock().unwrap().push(seen);
                complete(&mut w, &req)
            }
            _ => respond(&mut w, "404 Not Found", r#"{"error":"no such route"}"#),
        };
        if ok.is_err() {
            return;
        }
    }
}

/// The session-affinity header the tests send.
const SESSION_HEADER: &str = "X-Session-Id";

/// Method, path, body and session header of the next request; `None` at the end of the
/// connection.
#[allow(clippy::type_complexity)]
fn read_request(r: &mut BufReader<TcpStream>) -> Option<(String, String, Vec<u8>, Option<String>)> {
    let mut line = String::new();
    r.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut length = 0;
    let mut session = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok().filter(|&n| n > 0)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
            if name.eq_ignore_ascii_case(SESSION_HEADER) {
                session = Some(value.trim().to_string());
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    Some((method, path, body, session))
}

fn respond(w: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

/// One HTTP chunk.
fn chunk(w: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    write!(w, "{:x}\r\n", bytes.len())?;
    w.write_all(bytes)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

fn event(text: &str, finish: Option<&str>) -> String {
    let c = json!({"id": "cmpl-1", "object": "text_completion", "model": MODEL,
        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
        "usage": null});
    format!("data: {c}\n\n")
}

/// A streaming completion, as the prompt's first token says.
fn complete(w: &mut TcpStream, req: &Value) -> std::io::Result<()> {
    let prompt_len = req["prompt"].as_array().unwrap().len();
    let behaviour = req["prompt"][0].as_u64().unwrap() as u32;
    let n = req["max_tokens"].as_u64().unwrap() as usize;
    if req["model"] != MODEL {
        let msg = format!(
            "The model `{}` does not exist.",
            req["model"].as_str().unwrap()
        );
        let body = json!({"object": "error", "message": msg, "type": "NotFoundError", "code": 404});
        return respond(w, "404 Not Found", &body.to_string());
    }
    if behaviour == BAD_REQUEST {
        return respond(
            w,
            "400 Bad Request",
            r#"{"error":{"message":"prompt too long","type":"invalid_request_error"}}"#,
        );
    }
    w.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    chunk(w, b": ping\n\n")?;
    // Requests with an even prompt length get their last two tokens in one event, as a
    // server that batches tokens per event would send them.
    let batched = prompt_len.is_multiple_of(2) && n >= 2;
    let events = if batched { n - 1 } else { n };
    for k in 0..events {
        thread::sleep(TOKEN_DELAY);
        let last = k + 1 == events;
        let text = match k {
            1 => "", // a held-back partial character: still a token
            _ if last && batched => "yz",
            _ => "x",
        };
        let e = event(text, last.then_some("length"));
        match k {
            // One event split across two network chunks.
            0 => {
                let (a, b) = e.as_bytes().split_at(e.len() / 2);
                chunk(w, a)?;
                thread::sleep(Duration::from_millis(2));
                chunk(w, b)?;
            }
            // One with \r\n line ends.
            2 => chunk(w, e.replace('\n', "\r\n").as_bytes())?,
            _ => chunk(w, e.as_bytes())?,
        }
        if k == 1 {
            match behaviour {
                CLOSE_MID_STREAM => return w.shutdown(std::net::Shutdown::Both),
                STALL => {
                    thread::sleep(Duration::from_secs(3));
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                _ => {}
            }
        }
    }
    if behaviour != NO_DONE {
        let usage = json!({"id": "cmpl-1", "object": "text_completion", "model": MODEL, "choices": [],
            "usage": {"prompt_tokens": prompt_len, "completion_tokens": n, "total_tokens": prompt_len + n}});
        chunk(w, format!("data: {usage}\n\ndata: [DONE]\n\n").as_bytes())?;
    }
    chunk(w, b"")
}

fn request(arrival: f64, behaviour: u32, prompt_len: usize, output_len: usize) -> WorkloadRequest {
    let mut prompt = vec![behaviour];
    prompt.extend((1..prompt_len).map(|i| 2 + i as u32));
    WorkloadRequest {
        arrival,
        prompt,
        output_len,
        session: None,
    }
}

fn backend(url: &str, model: Option<&str>, timeout: Duration) -> OpenAiBackend {
    OpenAiBackend {
        url: url.to_string(),
        model: model.map(str::to_string),
        timeout,
        session_header: None,
    }
}

#[test]
fn streams_every_request_and_reports_like_the_engine() {
    let m = mock();
    // Twelve requests over 0.22 s, prompts of 3..=14 tokens, 3..=14 output tokens.
    let reqs: Vec<WorkloadRequest> = (0..12)
        .map(|i| request(0.02 * i as f64, NORMAL, 3 + i, 3 + (i * 5) % 12))
        .collect();
    let mut seen = Vec::new();
    let t0 = Instant::now();
    let r = run_openai(
        &backend(&format!("{}/v1/", m.url), None, Duration::from_secs(20)),
        &reqs,
        |n| seen.push(n),
    )
    .unwrap();
    let wall = t0.elapsed().as_secs_f64();
    assert_eq!(
        seen,
        (1..=12).collect::<Vec<_>>(),
        "one call per finished request"
    );
    assert_eq!(
        m.model_lists.load(Ordering::Relaxed),
        1,
        "the model is asked once"
    );
    let bodies = m.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 12);
    for b in &bodies {
        let i = reqs
            .iter()
            .position(|r| json!(r.prompt) == b["prompt"])
            .expect("a workload prompt");
        assert_eq!(b["max_tokens"], reqs[i].output_len);
        assert_eq!(
            (
                &b["model"],
                &b["stream"],
                &b["ignore_eos"],
                &b["temperature"]
            ),
            (&json!(MODEL), &json!(true), &json!(true), &json!(0))
        );
        assert_eq!(b["stream_options"]["include_usage"], true);
    }

    assert_eq!(
        (r.policy.as_str(), r.requests, r.failed_requests),
        ("openai", 12, 0)
    );
    // Token counts are the usage events' (batched events included), prompt counts too.
    let out: usize = reqs.iter().map(|r| r.output_len).sum();
    let prompt: usize = reqs.iter().map(|r| r.prompt.len()).sum();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(
        close(r.output_tokens_per_s * r.duration_s, out as f64),
        "{r:?}"
    );
    assert!(close(
        r.total_tokens_per_s * r.duration_s,
        (out + prompt) as f64
    ));
    assert!(close(r.requests_per_s * r.duration_s, 12.0));
    // Arrivals are honoured: the last request is sent at 0.22 s and takes >= 3 tokens.
    let floor = 0.22 + 3.0 * TOKEN_DELAY.as_secs_f64();
    assert!(
        r.duration_s >= floor && r.duration_s <= wall,
        "{} vs {floor}..{wall}",
        r.duration_s
    );
    // Latencies are consistent with the mock's pacing.
    let d_ms = TOKEN_DELAY.as_secs_f64() * 1e3;
    assert!(r.ttft_ms.p50 >= d_ms, "TTFT {:?}", r.ttft_ms);
    for (t, e) in [
        (r.ttft_ms.p50, r.e2e_ms.p50),
        (r.ttft_ms.p90, r.e2e_ms.p90),
        (r.ttft_ms.p99, r.e2e_ms.p99),
    ] {
        assert!(t <= e, "TTFT {t} > E2E {e}");
    }
    assert!(r.e2e_ms.p50 >= 3.0 * d_ms);
    assert!(r.tpot_ms.p50 > 0.0 && r.itl_ms.p99 >= r.itl_ms.p50);
    assert!((r.steps, r.peak_kv_bytes, r.preemptions) == (0, 0, 0));
    assert!(r.e2e_s.len() == 12 && r.e2e_s.windows(2).all(|w| w[0] <= w[1]));

    let t = table(std::slice::from_ref(&r));
    assert!(!t.contains("NaN") && !t.contains("inf"), "{t}");
    assert!(t.lines().nth(1).unwrap().starts_with("openai "), "{t}");
    assert!(!t.contains("failed requests"), "{t}");
}

#[test]
fn failed_requests_are_counted_and_nothing_hangs() {
    let m = mock();
    let reqs = [
        request(0.0, NORMAL, 4, 5),
        request(0.0, BAD_REQUEST, 4, 5),
        request(0.0, CLOSE_MID_STREAM, 5, 6),
        request(0.0, NORMAL, 5, 3),
        request(0.01, NO_DONE, 3, 4),
        request(0.01, STALL, 3, 4),
        request(0.02, NORMAL, 7, 8),
    ];
    let t0 = Instant::now();
    let run = run_openai_detailed(
        &backend(&m.url, Some(MODEL), Duration::from_millis(1500)),
        &reqs,
        |_| {},
    )
    .unwrap();
    let wall = t0.elapsed();
    assert!(wall < Duration::from_secs(3), "took {wall:?}");
    assert_eq!(
        m.model_lists.load(Ordering::Relaxed),
        0,
        "a named model is not looked up"
    );
    assert_eq!(run.model, MODEL);
    let r = &run.report;
    assert_eq!((r.requests, r.failed_requests), (3, 4));
    assert!((r.output_tokens_per_s * r.duration_s - 16.0).abs() < 1e-6);
    let why = |i: usize| {
        run.errors
            .iter()
            .find(|e| e.0 == i)
            .unwrap_or_else(|| panic!("request {i} did not fail: {:?}", run.errors))
            .1
            .clone()
    };
    assert_eq!(run.errors.len(), 4);
    assert_eq!(why(1), "HTTP 400 Bad Request: prompt too long");
    assert!(why(2).starts_with("the stream broke"), "{}", why(2));
    assert!(
        why(4).starts_with("the stream ended before data: [DONE] (4 token events"),
        "{}",
        why(4)
    );
    assert!(why(5).contains("1.5 s request timeout"), "{}", why(5));
    let t = table(std::slice::from_ref(r));
    assert!(
        t.contains("failed requests (not in any figure above): openai 4"),
        "{t}"
    );
}

#[test]
fn unusable_servers_are_clear_errors() {
    // Nobody listening: the port of a listener just closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let reqs = [request(0.0, NORMAL, 3, 2), request(0.0, NORMAL, 4, 2)];
    let quick = Duration::from_secs(5);
    let e = run_openai(&backend(&url, None, quick), &reqs, |_| {})
        .unwrap_err()
        .to_string();
    assert_eq!(e, format!("cannot connect to {url}: connection refused"));
    let e = run_openai(&backend(&url, Some(MODEL), quick), &reqs, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("all 2 requests to "), "{e}");
    assert!(
        e.ends_with(&format!("cannot connect to {url}: connection refused")),
        "{e}"
    );
    // A server that does not know the model.
    let m = mock();
    let e = run_openai(&backend(&m.url, Some("nope"), quick), &reqs, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HTTP 404 Not Found: The model `nope` does not exist."),
        "{e}"
    );
    // Not a plain-http URL.
    let e = run_openai(&backend("https://127.0.0.1:1", None, quick), &reqs, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("https is not supported"), "{e}");
}

/// With a session header set, each request of a conversation carries it (a load
/// balancer's affinity key); requests without a conversation, and runs without the
/// header, send none. A name that is not a header name is refused.
#[test]
fn conversations_travel_in_the_session_header() {
    let m = mock();
    let mut reqs: Vec<WorkloadRequest> = (0..4)
        .map(|i| WorkloadRequest {
            session: (i < 3).then_some(i as u64 % 2),
            ..request(0.0, NORMAL, 5, 3)
        })
        .collect();
    reqs[0].prompt[1] = 0; // tell the bodies apart
    let mut backend = OpenAiBackend::new(&m.url).unwrap();
    backend.set_session_header(Some(SESSION_HEADER)).unwrap();
    run_openai(&backend, &reqs, |_| {}).unwrap();
    let mut seen: Vec<Option<String>> = m
        .bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| b["_session_header"].as_str().map(str::to_string))
        .collect();
    seen.sort();
    let want = |s: &str| Some(s.to_string());
    assert_eq!(
        seen,
        [
            None,
            want("conversation-0"),
            want("conversation-0"),
            want("conversation-1")
        ]
    );
    let plain = OpenAiBackend::new(&m.url).unwrap();
    m.bodies.lock().unwrap().clear();
    run_openai(&plain, &reqs, |_| {}).unwrap();
    assert!(m
        .bodies
        .lock()
        .unwrap()
        .iter()
        .all(|b| b.get("_session_header").is_none()));
    let err = backend.set_session_header(Some("bad header")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"bad header\" is not a valid HTTP header name"
    );
}
