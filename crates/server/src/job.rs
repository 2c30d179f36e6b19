//! Validation: an OpenAI request becomes a [`Job`] — prompts as token ids, one
//! [`SamplingParams`], stop strings — or an [`ApiError`] naming the field, before anything
//! reaches the engine.

use crate::error::ApiError;
use crate::openai::{ChatRequest, CommonParams, CompletionRequest, Prompt};
use crate::state::AppState;
use axum::http::StatusCode;
use pagedattn_engine::{SamplingParams, MAX_LOGPROBS, MAX_N};
use std::sync::Arc;

/// Output tokens of a completion when the request names no `max_tokens` (OpenAI's default).
pub const DEFAULT_COMPLETION_TOKENS: usize = 16;
/// Prompts in one completion request, at most.
pub const MAX_PROMPTS: usize = 64;
/// Stop strings per request, at most, and bytes per stop string.
pub const MAX_STOPS: usize = 16;
const MAX_STOP_BYTES: usize = 256;

/// A validated request.
#[derive(Clone, Debug)]
pub struct Job {
    /// Token ids of each prompt.
    pub prompts: Vec<Vec<u32>>,
    /// Sampling and stopping, shared by every prompt.
    pub params: SamplingParams,
    /// Stop strings.
    pub stops: Arc<[String]>,
    /// Answer with server-sent events.
    pub stream: bool,
    /// Send a usage chunk at the end of the stream.
    pub include_usage: bool,
}

/// A completion request to a job.
pub fn completion_job(
    state: &AppState,
    req: CompletionRequest,
    common: &CommonParams,
) -> Result<Job, ApiError> {
    if req.echo == Some(true) {
        return Err(ApiError::bad_request("echo is not supported", Some("echo")));
    }
    let prompts = match req.prompt {
        None => return Err(ApiError::bad_request("prompt is required", Some("prompt"))),
        Some(Prompt::Text(t)) => vec![state.encode(&t)?],
        Some(Prompt::Tokens(t)) => vec![t],
        Some(Prompt::Texts(ts)) => ts
            .iter()
            .map(|t| state.encode(t))
            .collect::<Result<_, _>>()?,
        Some(Prompt::TokenLists(ls)) => ls,
    };
    if prompts.is_empty() || prompts.len() > MAX_PROMPTS {
        return Err(ApiError::bad_request(
            format!("prompt must hold 1 to {MAX_PROMPTS} prompts"),
            Some("prompt"),
        ));
    }
    let logprobs = match req.logprobs {
        None => None,
        Some(n) if n <= MAX_LOGPROBS as u64 => Some(n as usize),
        Some(n) => {
            return Err(ApiError::bad_request(
                format!("logprobs must be in 0..={MAX_LOGPROBS}, got {n}"),
                Some("logprobs"),
            ))
        }
    };
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    job(state, common, prompts, logprobs, |_| {
        Some(
            DEFAULT_COMPLETION_TOKENS
                .min(state.engine.max_model_len().saturating_sub(longest).max(1)),
        )
    })
}

/// A chat request to a job: the messages through the chat template, then tokenized.
pub fn chat_job(
    state: &AppState,
    req: ChatRequest,
    common: &CommonParams,
) -> Result<Job, ApiError> {
    let messages = match req.messages {
        Some(m) if !m.is_empty() => m,
        _ => {
            return Err(ApiError::bad_request(
                "messages must be a non-empty list",
                Some("messages"),
            ))
        }
    };
    for (i, m) in messages.iter().enumerate() {
        if !["system", "user", "assistant", "tool", "developer"].contains(&m.role.as_str()) {
            return Err(ApiError::bad_request(
                format!("unknown role {:?}", m.role),
                Some(&format!("messages[{i}].role")),
            ));
        }
    }
    let text = state.template.render(&messages)?;
    let prompt = state.encode(&text)?;
    let logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(ApiError::bad_request(
                "top_logprobs needs logprobs: true",
                Some("top_logprobs"),
            ))
        }
        (true, None) => Some(0),
        (true, Some(n)) if n <= MAX_LOGPROBS as u64 => Some(n as usize),
        (true, Some(n)) => {
            return Err(ApiError::bad_request(
                format!("top_logprobs must be in 0..={MAX_LOGPROBS}, got {n}"),
                Some("top_logprobs"),
            ))
        }
    };
    let len = prompt.len();
    // Without max_tokens a chat reply may use the rest of the context (as vLLM does).
    job(state, common, vec![prompt], logprobs, |max_len| {
        max_len.checked_sub(len).filter(|&m| m > 0)
    })
}

/// The checks both endpoints share. `default_max` gives `max_tokens` when the request has
/// none, from the model's maximum length (`None`: the prompt alone fills the context).
fn job(
    state: &AppState,
    c: &CommonParams,
    prompts: Vec<Vec<u32>>,
    logprobs: Option<usize>,
    default_max: impl Fn(usize) -> Option<usize>,
) -> Result<Job, ApiError> {
    if let Some(m) = &c.model {
        if *m != state.model_name {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!(
                    "The model `{m}` does not exist (this server serves `{}`)",
                    state.model_name
                ),
                param: Some("model".into()),
                code: "model_not_found",
            });
        }
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(ApiError::bad_request(
            format!("prompt {i} is empty"),
            Some("prompt"),
        ));
    }
    let max_len = state.engine.max_model_len();
    let max_tokens = match c.max_completion_tokens.or(c.max_tokens) {
        Some(0) => {
            return Err(ApiError::bad_request(
                "max_tokens must be at least 1",
                Some("max_tokens"),
            ))
        }
        Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
        None => default_max(max_len).ok_or_else(|| ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "the prompt of {} tokens leaves no room for a reply within the maximum length {max_len}",
                prompts[0].len()
            ),
            param: Some("messages".into()),
            code: "context_length_exceeded",
        })?,
    };
    let temperature = in_range(c.temperature, 1.0, 0.0, 2.0, "temperature")?;
    let top_p = in_range(c.top_p, 1.0, f64::MIN_POSITIVE, 1.0, "top_p")?;
    let top_k = match c.top_k {
        None | Some(-1 | 0) => 0,
        Some(k) if k > 0 => usize::try_from(k).unwrap_or(usize::MAX),
        Some(k) => {
            return Err(ApiError::bad_request(
                format!("top_k must be -1, 0 (no limit) or positive, got {k}"),
                Some("top_k"),
            ))
        }
    };
    let n = match c.n {
        None => 1,
        Some(n) if (1..=MAX_N as u64).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::bad_request(
                format!("n must be in 1..={MAX_N}, got {n}"),
                Some("n"),
            ))
        }
    };
    if n.saturating_mul(prompts.len()) > MAX_N {
        return Err(ApiError::bad_request(
            format!("n x prompts must be at most {MAX_N}"),
            Some("n"),
        ));
    }
    for (name, v) in [
        ("presence_penalty", c.presence_penalty),
        ("frequency_penalty", c.frequency_penalty),
    ] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(ApiError::bad_request(
                format!("{name} is not supported (only 0)"),
                Some(name),
            ));
        }
    }
    let stops = c
        .stop
        .clone()
        .map(crate::openai::Stop::into_vec)
        .unwrap_or_default();
    if stops.len() > MAX_STOPS
        || stops
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        return Err(ApiError::bad_request(
            format!("stop must hold at most {MAX_STOPS} non-empty strings of at most {MAX_STOP_BYTES} bytes"),
            Some("stop"),
        ));
    }
    let vocab = state.engine.vocab_size();
    let stop_token_ids = c.stop_token_ids.clone().unwrap_or_default();
    if let Some(t) = stop_token_ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::bad_request(
            format!("stop token {t} is outside the vocabulary of {vocab}"),
            Some("stop_token_ids"),
        ));
    }
    let params = SamplingParams {
        max_tokens,
        temperature: temperature as f32,
        top_p: top_p as f32,
        top_k,
        seed: c.seed.map(|s| s as u64),
        n,
        stop_token_ids,
        ignore_eos: c.ignore_eos.unwrap_or(false),
        logprobs,
    };
    Ok(Job {
        prompts,
        params,
        stops: stops.into(),
        stream: c.stream.unwrap_or(false),
        include_usage: c.stream_options.is_some_and(|o| o.include_usage),
    })
}

fn in_range(v: Option<f64>, default: f64, lo: f64, hi: f64, name: &str) -> Result<f64, ApiError> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(x),
        Some(x) => Err(ApiError::bad_request(
            if lo > 0.0 {
                format!("{name} must be in (0, {hi}], got {x}")
            } else {
                format!("{name} must be in [{lo}, {hi}], got {x}")
            },
            Some(name),
        )),
    }
}

#[cfg(test)]
mod tests {
    //! Request bodies as a fuzzer would write them: whatever the bytes or the field values,
    //! validation answers with a job or a typed error, never a panic, and a job it lets
    //! through satisfies every bound the engine relies on.

    use super::*;
    use crate::routes::parse;
    use axum::body::Bytes;
    use pagedattn_engine::{EngineConfig, KvPolicy};
    use pagedattn_kernels::DType;
    use pagedattn_model::{Model, Tokenizer, WeightDType};
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::sync::{Arc, OnceLock};

    fn state() -> Arc<AppState> {
        static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
        STATE
            .get_or_init(|| {
                let model = Arc::new(Model::random_named("tiny", 1, WeightDType::F32).unwrap());
                crate::start(
                    model,
                    Arc::new(Tokenizer::byte_level()),
                    DType::F32,
                    EngineConfig::new(KvPolicy::Paged, 8 << 20),
                    crate::ServerOptions::default(),
                )
                .unwrap()
            })
            .clone()
    }

    /// Any JSON value, a few levels deep, with the numbers that break naive code.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            prop_oneof![
                Just(0.0),
                Just(-1.0),
                Just(1e308),
                Just(-1e-300),
                any::<f64>()
            ]
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-z_]{1,8}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    const FIELDS: &[&str] = &[
        "model",
        "prompt",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "n",
        "stop",
        "stop_token_ids",
        "ignore_eos",
        "stream",
        "stream_options",
        "logprobs",
        "top_logprobs",
        "echo",
        "presence_penalty",
    ];

    /// A body with some known fields set to arbitrary values.
    fn body() -> impl Strategy<Value = Value> {
        proptest::collection::vec((0..FIELDS.len(), any_json()), 0..8).prop_map(|kv| {
            let mut m: serde_json::Map<String, Value> = kv
                .into_iter()
                .map(|(k, v)| (FIELDS[k].to_string(), v))
                .collect();
            m.entry("prompt").or_insert(json!("hi"));
            Value::Object(m)
        })
    }

    fn check(job: &Job, max_len: usize) {
        let p = &job.params;
        assert!(p.max_tokens >= 1 && p.n >= 1 && p.n <= MAX_N);
        assert!(p.temperature.is_finite() && (0.0..=2.0).contains(&p.temperature));
        assert!(p.top_p > 0.0 && p.top_p <= 1.0);
        assert!(p.logprobs.is_none_or(|n| n <= MAX_LOGPROBS));
        assert!(job.stops.len() <= MAX_STOPS && job.stops.iter().all(|s| !s.is_empty()));
        assert!(!job.prompts.is_empty() && job.prompts.iter().all(|q| !q.is_empty()));
        assert!(job.prompts.len() * p.n <= MAX_N);
        // What the engine checks next either accepts or refuses; it never overflows.
        for q in &job.prompts {
            let _ = q.len().checked_add(p.max_tokens).map(|t| t <= max_len);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn completion_bodies_validate_or_fail_cleanly(v in body()) {
            let s = state();
            let bytes = Bytes::from(serde_json::to_vec(&v).unwrap());
            if let Ok(job) = parse::<CompletionRequest>(Ok(bytes)).and_then(|(r, c)| completion_job(&s, r, &c)) {
                check(&job, s.engine.max_model_len());
            }
        }

        #[test]
        fn chat_bodies_validate_or_fail_cleanly(v in body(), msgs in any_json()) {
            let s = state();
            let mut v = v;
            v["messages"] = msgs;
            let bytes = Bytes::from(serde_json::to_vec(&v).unwrap());
            if let Ok(job) = parse::<ChatRequest>(Ok(bytes)).and_then(|(r, c)| chat_job(&s, r, &c)) {
                check(&job, s.engine.max_model_len());
            }
        }

        #[test]
        fn arbitrary_bytes_are_a_400_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let r = parse::<CompletionRequest>(Ok(Bytes::from(bytes)));
            if let Err(e) = r {
                prop_assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            }
        }
    }
}
