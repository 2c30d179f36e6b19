//! A load generator for any OpenAI-compatible server (vLLM, llama.cpp's llama-server,
//! ...): the same workload the in-process engine runs, sent over HTTP, measured per token
//! and summarized by the same [`PolicyReport`] code.
//!
//! Each request is sent at its arrival time (seconds from the run's start) as a streaming
//! `POST {url}/v1/completions` with the prompt as token ids, `max_tokens` = the request's
//! output length, greedy sampling and `ignore_eos`, so every server does the same work.
//! The server-sent events are parsed as they arrive:
//!
//! - every event whose JSON has a non-empty `choices` array is one output token, timed when
//!   its bytes were received (an empty `text` still counts: servers hold back partial
//!   UTF-8 characters);
//! - the usage event (`"stream_options": {"include_usage": true}`) gives the true counts.
//!   When it reports more completion tokens than events arrived, the missing tokens are
//!   given the last event's time: a server that sends several tokens in one event
//!   delivers them at that event's time (vLLM's `benchmark_serving` counts the same way).
//!   When it reports fewer (a server that sends a final event carrying only the finish
//!   reason), the trailing events beyond the count are dropped. Its `prompt_tokens`
//!   replaces the prompt length (a server may add a beginning-of-sequence token);
//! - `data: [DONE]` ends a successful request.
//!
//! A non-2xx status, an `{"error": ...}` event, an unparsable event, a stream that ends
//! (or breaks) before `[DONE]`, or no complete answer within the per-request timeout is a
//! failed request: counted in [`PolicyReport::failed_requests`] and left out of every
//! latency and throughput figure. There are no retries. Arrival and token times are
//! seconds since the run's start, so TTFT includes any time the client itself was late.

use crate::report::{PolicyReport, RunRecord};
use crate::sse::SseParser;
use crate::workload::WorkloadRequest;
use crate::BenchError;
use pagedattn_engine::{EngineTotals, FinishReason, KvUsage, RequestId, SeqMetrics};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// Per-request timeout unless told otherwise: 10 minutes.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The label of a run against a server in the report's `policy` column.
pub const POLICY_LABEL: &str = "openai";

/// An OpenAI-compatible server to send a workload to.
#[derive(Clone, Debug)]
pub struct OpenAiBackend {
    /// Base URL, `http://host:port` (a trailing `/` or `/v1` is accepted). Plain http only.
    pub url: String,
    /// Model name to send; `None`: the first model of `GET {url}/v1/models`.
    pub model: Option<String>,
    /// Longest a request may take from sending to `[DONE]`.
    pub timeout: Duration,
    /// Header that carries each request's conversation ([`WorkloadRequest::session`]),
    /// for a load balancer's session affinity; set with
    /// [`OpenAiBackend::set_session_header`].
    pub session_header: Option<reqwest::header::HeaderName>,
}

impl OpenAiBackend {
    /// A backend at `url` with the default timeout and the server's first model. Checks
    /// the URL.
    pub fn new(url: &str) -> Result<Self, BenchError> {
        base_url(url)?;
        Ok(Self {
            url: url.to_string(),
            model: None,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            session_header: None,
        })
    }

    /// Sends each request's conversation in header `name` (value `conversation-<n>`), or
    /// no such header with `None`. An error when `name` is not a valid header name.
    pub fn set_session_header(&mut self, name: Option<&str>) -> Result<(), BenchError> {
        self.session_header = name
            .map(|n| {
                reqwest::header::HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                    BenchError::Invalid(format!("{n:?} is not a valid HTTP header name"))
                })
            })
            .transpose()?;
        Ok(())
    }

    /// The normalized base URL (no trailing `/` or `/v1`), or why `url` is unusable.
    pub fn base_url(&self) -> Result<String, BenchError> {
        base_url(&self.url)
    }
}

/// A run against a server, in full.
#[derive(Clone, Debug)]
pub struct OpenAiRun {
    /// The summary, as for an in-process run (no KV, batch or step figures).
    pub report: PolicyReport,
    /// The model name that was sent.
    pub model: String,
    /// (index in the workload, why) of each failed request, in workload order.
    pub errors: Vec<(usize, String)>,
}

/// Sends `reqs` (sorted by arrival) to `backend` at their arrival times and summarizes, as
/// [`crate::driver::run_policy`] does for the engine. `on_finish` is called with the
/// number of requests finished so far (failed ones included) each time one finishes.
/// Blocks on a runtime of its own: do not call it from inside a tokio runtime.
pub fn run_openai(
    backend: &OpenAiBackend,
    reqs: &[WorkloadRequest],
    on_finish: impl FnMut(usize),
) -> Result<PolicyReport, BenchError> {
    run_openai_detailed(backend, reqs, on_finish).map(|r| r.report)
}

/// [`run_openai`], also returning the model name sent and why each failed request
/// failed. An error when the server cannot be reached or every request failed.
pub fn run_openai_detailed(
    backend: &OpenAiBackend,
    reqs: &[WorkloadRequest],
    mut on_finish: impl FnMut(usize),
) -> Result<OpenAiRun, BenchError> {
    let base = backend.base_url()?;
    if reqs.is_empty() {
        return Err(BenchError::Invalid("no requests to send".into()));
    }
    if let Some(r) = reqs
        .iter()
        .find(|r| !(r.arrival.is_finite() && r.arrival >= 0.0))
    {
        return Err(BenchError::Invalid(format!(
            "arrival time {} is not a time from the start",
            r.arrival
        )));
    }
    if backend.timeout.is_zero() {
        return Err(BenchError::Invalid(
            "the request timeout must be > 0".into(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Http(format!("cannot start the HTTP client's runtime: {e}")))?;
    // Every request may be in flight at once: keep a connection for each.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(reqs.len())
        .connect_timeout(backend.timeout.min(Duration::from_secs(30)))
        // Measure the server, not a proxy from the environment.
        .no_proxy()
        .build()
        .map_err(|e| BenchError::Http(format!("cannot build the HTTP client: {e}")))?;
    runtime.block_on(async {
        let model = match &backend.model {
            Some(m) => m.clone(),
            None => discover_model(&client, &base, backend.timeout).await?,
        };
        // Serialize every body before the clock starts.
        let url = format!("{base}/v1/completions");
        let bodies: Vec<Vec<u8>> = reqs.iter().map(|r| request_body(&model, r)).collect();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (r, body)) in reqs.iter().zip(bodies).enumerate() {
            let (client, url, timeout) = (client.clone(), url.clone(), backend.timeout);
            let at = start + Duration::from_secs_f64(r.arrival);
            let session = backend
                .session_header
                .clone()
                .zip(r.session)
                .map(|(name, s)| (name, format!("conversation-{s}")));
            tasks.spawn(async move {
                tokio::time::sleep_until(at).await;
                let send = stream_one(&client, &url, body, session, start);
                let out = tokio::time::timeout(timeout, send)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "no complete answer within the {} s request timeout",
                            timeout.as_secs_f64()
                        ))
                    });
                (i, out)
            });
        }
        let mut outcomes: Vec<Option<Result<Stream, String>>> = vec![None; reqs.len()];
        let mut done = 0;
        while let Some(joined) = tasks.join_next().await {
            let (i, out) = joined.map_err(|e| BenchError::Http(format!("a request task: {e}")))?;
            outcomes[i] = Some(out);
            done += 1;
            on_finish(done);
        }
        let mut seqs = Vec::with_capacity(reqs.len());
        let mut errors = Vec::new();
        for (i, (out, r)) in outcomes.into_iter().zip(reqs).enumerate() {
            match out.expect("every task reported") {
                Ok(stream) => seqs.push(stream.into_metrics(i, r)),
                Err(why) => errors.push((i, why)),
            }
        }
        if seqs.is_empty() {
            let (i, why) = &errors[0];
            return Err(BenchError::Http(format!(
                "all {} requests to {url} failed; request {i}: {why}",
                reqs.len()
            )));
        }
        let totals = EngineTotals {
            output_tokens: seqs.iter().map(|s| s.token_times.len() as u64).sum(),
            ..EngineTotals::default()
        };
        let mut report = PolicyReport::build(&RunRecord {
            policy: POLICY_LABEL,
            seqs: &seqs,
            steps: &[],
            totals: &totals,
            kv: KvUsage::default(),
            kv_bytes_per_token: 0,
            peak_rss_bytes: 0,
        });
        report.failed_requests = errors.len();
        Ok(OpenAiRun {
            report,
            model,
            errors,
        })
    })
}

/// `url` without a trailing `/` or `/v1`, checked to be a plain-http URL with a host.
fn base_url(url: &str) -> Result<String, BenchError> {
    let u = url.trim();
    let lower = u.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(BenchError::Invalid(format!(
            "{u}: https is not supported (plain http only, e.g. http://127.0.0.1:8000)"
        )));
    }
    if !lower.starts_with("http://") {
        return Err(BenchError::Invalid(format!(
            "the server URL {u:?} must start with http:// (e.g. http://127.0.0.1:8000)"
        )));
    }
    let mut base = u.trim_end_matches('/');
    if let Some(b) = base.strip_suffix("/v1") {
        base = b.trim_end_matches('/');
    }
    match reqwest::Url::parse(base) {
        Ok(p) if p.host_str().is_some_and(|h| !h.is_empty()) => Ok(base.to_string()),
        Ok(_) => Err(BenchError::Invalid(format!(
            "the server URL {u:?} names no host"
        ))),
        Err(e) => Err(BenchError::Invalid(format!("the server URL {u:?}: {e}"))),
    }
}

/// The JSON body of one streaming completion request.
fn request_body(model: &str, r: &WorkloadRequest) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": model,
        "prompt": r.prompt,
        "max_tokens": r.output_len,
        "temperature": 0,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    }))
    .expect("serializable")
}

/// `GET {base}/v1/models` → `data[0].id`.
async fn discover_model(
    client: &reqwest::Client,
    base: &str,
    timeout: Duration,
) -> Result<String, BenchError> {
    let url = format!("{base}/v1/models");
    let fail = |why: String| BenchError::Http(format!("GET {url}: {why}"));
    let resp = client
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| BenchError::Http(describe(&e, base)))?;
    let status = resp.status();
    let body = read_limited(resp, 1 << 20).await.map_err(&fail)?;
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}: {}", error_message(&body))));
    }
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| fail(format!("the answer is not JSON ({e})")))?;
    v.pointer("/data/0/id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            fail("the answer lists no model (data[0].id); name the model explicitly".into())
        })
}

/// Reads at most `limit` bytes of a body.
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e, ""))? {
        body.extend_from_slice(&chunk);
        if body.len() >= limit {
            body.truncate(limit);
            break;
        }
    }
    Ok(body)
}

/// Sends one request and follows its stream to `[DONE]`.
async fn stream_one(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    session: Option<(reqwest::header::HeaderName, String)>,
    start: Instant,
) -> Result<Stream, String> {
    let base = url.trim_end_matches("/v1/completions");
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::ACCEPT, "text/event-stream");
    if let Some((name, value)) = session {
        req = req.header(name, value);
    }
    let mut resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| describe(&e, base))?;
    let status = resp.status();
    if !status.is_success() {
        let body = read_limited(resp, 64 << 10).await.unwrap_or_default();
        return Err(format!("HTTP {status}: {}", error_message(&body)));
    }
    let mut parser = SseParser::default();
    let mut stream = Stream::default();
    loop {
        let chunk = resp
            .chunk()
            .await
            .map_err(|e| format!("the stream broke: {}", describe(&e, base)))?;
        let Some(bytes) = chunk else {
            return Err(format!(
                "the stream ended before data: [DONE] ({} token events received)",
                stream.token_times.len()
            ));
        };
        let t = start.elapsed().as_secs_f64();
        parser.feed(&bytes, |data| stream.on_data(data, t));
        if let Some(e) = stream.error.take() {
            return Err(e);
        }
        if stream.done.is_some() {
            return Ok(stream);
        }
    }
}

/// A reqwest error in words a user can act on.
fn describe(e: &reqwest::Error, base: &str) -> String {
    // The innermost cause says the most ("connection refused"), the outer ones the context.
    let mut cause = None::<String>;
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        cause = Some(match s.downcast_ref::<std::io::Error>() {
            Some(io) if io.raw_os_error().is_some() => io.kind().to_string(),
            _ => s.to_string(),
        });
        src = s.source();
    }
    let cause = cause.unwrap_or_default();
    if e.is_connect() {
        format!("cannot connect to {base}: {cause}")
    } else if e.is_timeout() {
        format!("timed out ({cause})")
    } else if cause == e.to_string() {
        cause
    } else {
        format!("{e}: {cause}")
    }
}

/// The message of an error body: OpenAI's `{"error": {"message": ...}}`, vLLM's older
/// `{"message": ...}`, `{"error": "..."}`, or the text itself, shortened.
fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => message_of(v.get("error").unwrap_or(&v)),
        Err(_) if text.trim().is_empty() => "(empty body)".into(),
        Err(_) => shorten(text.trim()),
    }
}

fn message_of(e: &Value) -> String {
    match e {
        Value::String(s) => shorten(s),
        _ => e
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| shorten(&e.to_string()), shorten),
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// What one request's stream delivered so far.
#[derive(Clone, Debug, Default)]
struct Stream {
    /// Receive time of each event with a non-empty `choices`, seconds since the start.
    token_times: Vec<f64>,
    /// The last `finish_reason` seen.
    finish_reason: Option<String>,
    /// The last usage seen.
    usage: Option<Usage>,
    /// When `[DONE]` arrived.
    done: Option<f64>,
    /// Why the request failed, once it has.
    error: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<usize>,
    completion_tokens: usize,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    finish_reason: Option<String>,
}

impl Stream {
    /// One event's data, received at `t`.
    fn on_data(&mut self, data: &str, t: f64) {
        if self.done.is_some() || self.error.is_some() {
            return;
        }
        let data = data.trim();
        if data.is_empty() {
            return;
        }
        if data == "[DONE]" {
            self.done = Some(t);
            return;
        }
        let chunk: Chunk = match serde_json::from_str(data) {
            Ok(c) => c,
            Err(e) => {
                self.error = Some(format!("an event is not JSON ({e}): {}", shorten(data)));
                return;
            }
        };
        if let Some(e) = chunk.error {
            self.error = Some(format!("the server reported an error: {}", message_of(&e)));
            return;
        }
        if let Some(choices) = chunk.choices.filter(|c| !c.is_empty()) {
            self.token_times.push(t);
            if let Some(r) = choices.into_iter().find_map(|c| c.finish_reason) {
                self.finish_reason = Some(r);
            }
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
    }

    /// The request's metrics, with the token count reconciled with the usage event.
    fn into_metrics(self, i: usize, r: &WorkloadRequest) -> SeqMetrics {
        let finished = self
            .done
            .unwrap_or_else(|| self.token_times.last().copied().unwrap_or(0.0));
        let mut token_times = self.token_times;
        let mut prompt_len = r.prompt.len();
        let cached_tokens = self
            .usage
            .and_then(|u| u.prompt_tokens_details)
            .map_or(0, |d| d.cached_tokens);
        if let Some(u) = self.usage {
            let fill = token_times.last().copied().unwrap_or(finished);
            token_times.resize(u.completion_tokens, fill);
            prompt_len = u.prompt_tokens.unwrap_or(prompt_len);
        }
        SeqMetrics {
            request: RequestId(i as u64),
            index: 0,
            prompt_len,
            cached_tokens,
            arrival: r.arrival,
            first_scheduled: None,
            token_times,
            finished: Some(finished),
            // Forced output lengths end on the length unless the server says otherwise.
            finish_reason: Some(match self.finish_reason.as_deref() {
                None | Some("length") => FinishReason::Length,
                Some(_) => FinishReason::Stop,
            }),
            preemptions: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: usize,
}

#[cfg(test)]
mod tests;
