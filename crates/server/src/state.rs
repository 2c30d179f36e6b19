//! What every handler shares.

use crate::chat::ChatTemplate;
use crate::error::ApiError;
use crate::metrics::Metrics;
use pagedattn_engine::core::EngineHandle;
use pagedattn_model::Tokenizer;
use std::sync::Arc;
use std::time::Duration;

/// Server settings besides the engine's.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The model's name in the API (`model` of requests, `/v1/models`).
    pub model_name: String,
    /// Require `Authorization: Bearer KEY` on `/v1/*`.
    pub api_key: Option<String>,
    /// Refuse new requests (503) while this many received requests have not started.
    pub max_waiting: usize,
    /// Largest request body accepted, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// After a shutdown signal, how long requests in flight may run before they are aborted.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            model_name: "pagedattn".into(),
            api_key: None,
            max_waiting: 1024,
            max_body_bytes: 4 << 20,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// The state behind every route.
#[derive(Debug)]
pub struct AppState {
    /// The engine thread.
    pub engine: EngineHandle,
    /// Text to tokens and back.
    pub tokenizer: Arc<Tokenizer>,
    /// The chat template.
    pub template: ChatTemplate,
    /// The served model's name.
    pub model_name: String,
    /// Settings.
    pub options: ServerOptions,
    /// `/metrics`.
    pub metrics: Metrics,
    /// Unix seconds at start (`created` of `/v1/models`).
    pub created: u64,
    /// The dashboard's latest picture of the pool.
    pub dashboard: crate::dashboard::picture::PictureCache,
    /// The dashboard's time series.
    pub history: crate::dashboard::history::History,
}

impl AppState {
    /// State over a running engine; fails if the chat template does not compile.
    pub fn new(
        engine: EngineHandle,
        tokenizer: Arc<Tokenizer>,
        options: ServerOptions,
    ) -> Result<Self, String> {
        let eos = engine
            .eos_token_id()
            .and_then(|t| tokenizer.token_text(t))
            .unwrap_or_default();
        let bos = tokenizer
            .bos_id()
            .and_then(|t| tokenizer.token_text(t))
            .unwrap_or_default();
        let template = ChatTemplate::new(tokenizer.chat_template(), &bos, &eos)?;
        Ok(Self {
            metrics: Metrics::new(&options.model_name, engine.clone()),
            model_name: options.model_name.clone(),
            engine,
            tokenizer,
            template,
            options,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            dashboard: crate::dashboard::picture::PictureCache::default(),
            history: crate::dashboard::history::History::default(),
        })
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        self.tokenizer.encode_prompt(text).map_err(|e| {
            ApiError::bad_request(format!("cannot tokenize the prompt: {e}"), Some("prompt"))
        })
    }
}
