//! Runs a [`Job`] on the engine and turns its token streams into text deltas per choice
//! (choice `i` = prompt `i / n`, sample `i % n`): detokenized, stop strings applied, usage
//! counted, latencies recorded. Streaming and non-streaming answers are built from the same
//! deltas.

use crate::error::ApiError;
use crate::job::Job;
use crate::openai::Usage;
use crate::state::AppState;
use crate::text::ChoiceText;
use axum::http::StatusCode;
use futures_util::stream::{self, select_all, StreamExt};
use pagedattn_engine::core::{Event, RequestStream};
use pagedattn_engine::{FinishReason, TokenLogprob};
use std::future::Future;
use std::time::Instant;

/// New output of one choice.
#[derive(Clone, Debug, PartialEq)]
pub struct Delta {
    /// The choice.
    pub choice: usize,
    /// New text (may be empty: a token whose text is held back).
    pub text: String,
    /// Log-probabilities of the tokens behind it, if asked for.
    pub logprobs: Vec<TokenLogprob>,
    /// Set on the choice's last delta.
    pub finish_reason: Option<&'static str>,
}

/// Queues every prompt of `job` on the engine (all or none: a refusal aborts those
/// already queued, by dropping their streams).
pub fn submit(
    state: &AppState,
    job: &Job,
    received: Instant,
) -> Result<Vec<RequestStream>, ApiError> {
    job.prompts
        .iter()
        .map(|p| {
            state
                .engine
                .add(p.clone(), job.params.clone(), received)
                .map_err(ApiError::from)
        })
        .collect()
}

/// Reads the streams to the end, calling `emit` with each delta, and returns the usage.
/// If `cancelled` resolves first (the client went away), returns at once: dropping the
/// streams aborts the requests.
pub async fn drive(
    state: &AppState,
    job: &Job,
    streams: Vec<RequestStream>,
    mut emit: impl FnMut(Delta),
    cancelled: impl Future<Output = ()>,
) -> Result<Usage, ApiError> {
    let n = job.params.n;
    let ends: std::sync::Arc<[u32]> = if job.params.ignore_eos {
        std::sync::Arc::from([])
    } else {
        state.engine.end_token_ids().into()
    };
    let mut texts: Vec<ChoiceText> = (0..job.prompts.len() * n)
        .map(|i| {
            ChoiceText::new(state.tokenizer.clone(), job.stops.clone(), ends.clone())
                .after_prompt(&job.prompts[i / n])
        })
        .collect();
    let ids: Vec<_> = streams.iter().map(RequestStream::id).collect();
    let mut merged = select_all(streams.into_iter().enumerate().map(|(p, rs)| {
        Box::pin(stream::unfold(rs, move |mut rs| async move {
            rs.next().await.map(|ev| ((p, ev), rs))
        }))
    }));
    let mut usage = Usage {
        prompt_tokens: job.prompts.iter().map(Vec::len).sum(),
        ..Usage::default()
    };
    let mut first_metrics = None;
    tokio::pin!(cancelled);
    loop {
        let item = tokio::select! {
            item = merged.next() => item,
            () = &mut cancelled => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "client_gone", "the client went away"));
            }
        };
        let Some((p, ev)) = item else { break };
        let o = match ev {
            Event::Output(o) => o,
            Event::Failed(msg) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "generation_failed",
                    msg,
                ));
            }
        };
        if let Some(m) = &o.metrics {
            state.metrics.observe(m);
            if o.index == 0 {
                usage.prompt_tokens_details.cached_tokens += m.cached_tokens;
            }
            if p == 0 && o.index == 0 {
                first_metrics = Some(m.clone());
            }
        }
        let choice = p * n + o.index;
        let t = &mut texts[choice];
        if t.finish_reason.is_some() {
            continue; // tokens made after a stop string, before the engine heard of it
        }
        let piece = t.push(&o.new_tokens).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "detokenization_failed",
                e.to_string(),
            )
        })?;
        let mut logprobs = o.logprobs;
        logprobs.truncate(piece.tokens);
        let mut text = piece.text;
        let finish_reason = if piece.stopped {
            state.engine.stop_sequence(ids[p], o.index);
            Some("stop")
        } else if let Some(r) = o.finished {
            text.push_str(&t.finish().map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "detokenization_failed",
                    e.to_string(),
                )
            })?);
            Some(match r {
                FinishReason::Length => "length",
                FinishReason::Stop => "stop",
                FinishReason::Aborted => "abort",
                FinishReason::Error => "error",
            })
        } else {
            None
        };
        t.finish_reason = finish_reason;
        emit(Delta {
            choice,
            text,
            logprobs,
            finish_reason,
        });
    }
    usage.completion_tokens = texts.iter().map(|t| t.tokens).sum();
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    let m = first_metrics.unwrap_or_default();
    tracing::info!(
        request = %ids.first().map_or(0, |i| i.0),
        prompts = job.prompts.len(),
        n,
        prompt_tokens = usage.prompt_tokens,
        cached_tokens = usage.prompt_tokens_details.cached_tokens,
        completion_tokens = usage.completion_tokens,
        ttft_ms = format_args!("{:.1}", 1e3 * m.ttft().unwrap_or(f64::NAN)),
        e2e_ms = format_args!("{:.1}", 1e3 * m.e2e().unwrap_or(f64::NAN)),
        finish_reason = texts.first().and_then(|t| t.finish_reason).unwrap_or("none"),
        "request finished"
    );
    Ok(usage)
}
