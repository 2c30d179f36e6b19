//! The HTTP routes, in one place: `/v1/completions`, `/v1/chat/completions`,
//! `/v1/models`, `/health`, `/metrics`, `/dashboard` (and its `/dashboard/state`). Handlers parse and validate (see `job.rs`), submit,
//! and shape the answer; they never touch the scheduler or the block manager.

use crate::error::ApiError;
use crate::generation::{drive, submit, Delta};
use crate::job::{chat_job, completion_job, Job};
use crate::openai::{
    ChatChoice, ChatDelta, ChatLogprobs, ChatRequest, ChatResponse, ChatTokenLogprob, CommonParams,
    CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, ModelCard,
    ModelList, TopLogprob, Usage,
};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream;
use pagedattn_engine::TokenLogprob;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::unbounded_channel;

type Shared = State<Arc<AppState>>;

/// The server's routes over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .merge(api)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/dashboard", get(crate::dashboard::page))
        .route("/dashboard/state", get(crate::dashboard::state))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.options.max_body_bytes))
        .with_state(state)
}

/// `--api-key`: `/v1/*` needs `Authorization: Bearer KEY` (health and metrics do not, as
/// load balancers and scrapers call them).
async fn require_key(State(s): Shared, req: Request, next: Next) -> Response {
    if let Some(key) = &s.options.api_key {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|k| k.trim() == key);
        if !ok {
            s.metrics.reject(401);
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "a valid API key is required (Authorization: Bearer KEY)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn health(State(s): Shared) -> Response {
    if s.engine.is_alive() {
        (StatusCode::OK, "ok").into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_stopped",
            "the engine has stopped",
        )
        .into_response()
    }
}

async fn metrics(State(s): Shared) -> Response {
    match s.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics",
            "cannot encode metrics",
        )
        .into_response(),
    }
}

async fn models(State(s): Shared) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: s.model_name.clone(),
            object: "model",
            created: s.created,
            owned_by: "pagedattn",
            max_model_len: s.engine.max_model_len(),
        }],
    })
}

/// The JSON body as an endpoint's own fields `T` and the shared [`CommonParams`], or a 400
/// naming the field at fault (413 when over the size limit).
pub(crate) fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<(T, CommonParams), ApiError> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(status, code, e.body_text())
    })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("the body is not valid JSON: {e}"),
        param: None,
        code: "invalid_json",
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object",
            None,
        ));
    }
    Ok((typed(&value)?, typed(&value)?))
}

/// `value` as `T`, naming the field that does not fit.
fn typed<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("invalid request: {}", e.into_inner()),
            param: (path != "." && path != "?").then_some(path),
            code: "invalid_request",
        }
    })
}

/// Refuses new work while too many requests wait (503 with `Retry-After`).
fn admit(s: &AppState) -> Result<(), ApiError> {
    if s.engine.num_not_started() >= s.options.max_waiting {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "{} requests are waiting; try again shortly",
                s.engine.num_not_started()
            ),
        ));
    }
    Ok(())
}

fn reject(s: &AppState, e: ApiError) -> Response {
    s.metrics.reject(e.status.as_u16());
    e.into_response()
}

async fn completions(State(s): Shared, body: Result<Bytes, BytesRejection>) -> Response {
    let received = Instant::now();
    let job = parse::<CompletionRequest>(body).and_then(|(r, c)| completion_job(&s, r, &c));
    run(s, job, received, Kind::Completion).await
}

async fn chat(State(s): Shared, body: Result<Bytes, BytesRejection>) -> Response {
    let received = Instant::now();
    let job = parse::<ChatRequest>(body).and_then(|(r, c)| chat_job(&s, r, &c));
    run(s, job, received, Kind::Chat).await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

/// Answers a validated job (or the validation error), after the overload check.
async fn run(
    s: Arc<AppState>,
    job: Result<Job, ApiError>,
    received: Instant,
    kind: Kind,
) -> Response {
    let job = match job.and_then(|j| admit(&s).map(|()| j)) {
        Ok(j) => j,
        Err(e) => return reject(&s, e),
    };
    let streams = match submit(&s, &job, received) {
        Ok(st) => st,
        Err(e) => return reject(&s, e),
    };
    let id = format!(
        "{}-{}",
        if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        },
        streams.first().map_or(0, |r| r.id().0)
    );
    if job.stream {
        stream_answer(s, job, streams, id, kind)
    } else {
        whole_answer(&s, &job, streams, id, kind).await
    }
}

/// Non-streaming: every choice's text, then one response.
async fn whole_answer(
    s: &AppState,
    job: &Job,
    streams: Vec<pagedattn_engine::core::RequestStream>,
    id: String,
    kind: Kind,
) -> Response {
    let choices = job.prompts.len() * job.params.n;
    let mut text = vec![String::new(); choices];
    let mut lps: Vec<Vec<TokenLogprob>> = vec![Vec::new(); choices];
    let mut reasons = vec![None; choices];
    let result = drive(
        s,
        job,
        streams,
        |d: Delta| {
            text[d.choice].push_str(&d.text);
            lps[d.choice].extend(d.logprobs);
            reasons[d.choice] = d.finish_reason.or(reasons[d.choice]);
        },
        std::future::pending(),
    )
    .await;
    let usage = match result {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let want_lp = job.params.logprobs.is_some();
    match kind {
        Kind::Completion => Json(CompletionResponse {
            id,
            object: "text_completion",
            created: s.created,
            model: s.model_name.clone(),
            choices: (0..choices)
                .map(|i| CompletionChoice {
                    index: i,
                    logprobs: want_lp.then(|| completion_logprobs(s, &lps[i], 0)),
                    text: std::mem::take(&mut text[i]),
                    finish_reason: reasons[i],
                })
                .collect(),
            usage: Some(usage),
        })
        .into_response(),
        Kind::Chat => Json(ChatResponse {
            id,
            object: "chat.completion",
            created: s.created,
            model: s.model_name.clone(),
            choices: (0..choices)
                .map(|i| ChatChoice {
                    index: i,
                    message: Some(ChatDelta {
                        role: Some("assistant"),
                        content: Some(std::mem::take(&mut text[i])),
                    }),
                    delta: None,
                    logprobs: want_lp.then(|| chat_logprobs(s, &lps[i])),
                    finish_reason: reasons[i],
                })
                .collect(),
            usage: Some(usage),
        })
        .into_response(),
    }
}

/// Streaming: one server-sent event per delta, a usage chunk if asked, then `[DONE]`.
/// The events go through a channel from a task that drives the generation; when the client
/// disconnects the channel closes, the task returns, and dropping its streams aborts the
/// requests (their blocks are free within one engine step).
fn stream_answer(
    s: Arc<AppState>,
    job: Job,
    streams: Vec<pagedattn_engine::core::RequestStream>,
    id: String,
    kind: Kind,
) -> Response {
    let (tx, rx) = unbounded_channel::<SseEvent>();
    tokio::spawn(async move {
        let chunk = |choices: serde_json::Value, usage: Option<Usage>| -> SseEvent {
            let object = if kind == Kind::Chat {
                "chat.completion.chunk"
            } else {
                "text_completion"
            };
            let mut v = serde_json::json!({
                "id": id, "object": object, "created": s.created, "model": s.model_name, "choices": choices,
            });
            if let Some(u) = usage {
                v["usage"] = serde_json::to_value(u).unwrap_or_default();
            }
            SseEvent::default().data(v.to_string())
        };
        let n_choices = job.prompts.len() * job.params.n;
        if kind == Kind::Chat {
            let first: Vec<_> = (0..n_choices)
                .map(|i| serde_json::json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}))
                .collect();
            let _ = tx.send(chunk(serde_json::Value::Array(first), None));
        }
        let want_lp = job.params.logprobs.is_some();
        let mut offsets = vec![0usize; n_choices];
        let closed = tx.clone();
        let result = drive(
            &s,
            &job,
            streams,
            |d: Delta| {
                let choice = match kind {
                    Kind::Completion => {
                        let lp = want_lp
                            .then(|| completion_logprobs(&s, &d.logprobs, offsets[d.choice]));
                        offsets[d.choice] += d.text.len();
                        serde_json::to_value(CompletionChoice {
                            index: d.choice,
                            text: d.text,
                            logprobs: lp,
                            finish_reason: d.finish_reason,
                        })
                    }
                    Kind::Chat => serde_json::to_value(ChatChoice {
                        index: d.choice,
                        message: None,
                        delta: Some(ChatDelta {
                            role: None,
                            content: Some(d.text),
                        }),
                        logprobs: want_lp.then(|| chat_logprobs(&s, &d.logprobs)),
                        finish_reason: d.finish_reason,
                    }),
                };
                let _ = tx.send(chunk(
                    serde_json::Value::Array(vec![choice.unwrap_or_default()]),
                    None,
                ));
            },
            closed.closed(),
        )
        .await;
        match result {
            Ok(usage) if job.include_usage => {
                let _ = tx.send(chunk(serde_json::Value::Array(Vec::new()), Some(usage)));
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(SseEvent::default().data(e.body().to_string()));
            }
        }
        let _ = tx.send(SseEvent::default().data("[DONE]"));
    });
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(body).into_response()
}

/// The text of one token (lossy where it is part of a character).
fn token_text(s: &AppState, t: u32) -> String {
    s.tokenizer.token_text(t).unwrap_or_default()
}

fn completion_logprobs(
    s: &AppState,
    lps: &[TokenLogprob],
    mut offset: usize,
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for lp in lps {
        let text = token_text(s, lp.token);
        out.text_offset.push(offset);
        offset += text.len();
        out.tokens.push(text);
        out.token_logprobs.push(lp.logprob);
        out.top_logprobs.push(
            lp.top
                .iter()
                .map(|&(t, l)| (token_text(s, t), serde_json::json!(l)))
                .collect(),
        );
    }
    out
}

fn chat_logprobs(s: &AppState, lps: &[TokenLogprob]) -> ChatLogprobs {
    ChatLogprobs {
        content: lps
            .iter()
            .map(|lp| {
                let token = token_text(s, lp.token);
                ChatTokenLogprob {
                    bytes: token.as_bytes().to_vec(),
                    token,
                    logprob: lp.logprob,
                    top_logprobs: lp
                        .top
                        .iter()
                        .map(|&(t, l)| {
                            let token = token_text(s, t);
                            TopLogprob {
                                bytes: token.as_bytes().to_vec(),
                                token,
                                logprob: l,
                            }
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}
