//! An OpenAI-compatible HTTP server on the pagedattn engine.
//!
//! `POST /v1/completions` and `POST /v1/chat/completions` (streaming with server-sent
//! events, or not), `GET /v1/models`, `GET /health` and `GET /metrics` (vLLM's metric
//! names), on tokio and axum. The engine runs on a thread of its own
//! ([`pagedattn_engine::core`]); handlers validate a request into a job before anything is
//! queued, submit it, and turn the engine's token streams into text. A client that
//! disconnects aborts its requests; their blocks are free within one step.
//!
//! ```no_run
//! use pagedattn_engine::{EngineConfig, KvPolicy};
//! use pagedattn_kernels::DType;
//! use pagedattn_model::{Model, Tokenizer, WeightDType};
//! use pagedattn_server::{start, ServerOptions};
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Model::random_named("tiny", 0, WeightDType::F32)?;
//! let state = start(
//!     Arc::new(model),
//!     Arc::new(Tokenizer::byte_level()),
//!     DType::F32,
//!     EngineConfig::new(KvPolicy::PagedPrefixCache, 64 << 20),
//!     ServerOptions::default(),
//! )?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! pagedattn_server::serve(listener, state, pagedattn_server::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

// Unsafe code lives in the kernels crate only (its SIMD and allocation paths).
#![forbid(unsafe_code)]

mod chat;
mod dashboard;
mod error;
mod generation;
mod job;
mod metrics;
pub mod openai;
mod routes;
mod state;
mod text;

pub use chat::ChatTemplate;
pub use dashboard::picture::DashboardState;
pub use dashboard::PICTURE_TTL;
pub use error::ApiError;
pub use routes::router;
pub use state::{AppState, ServerOptions};

use pagedattn_engine::{Engine, EngineConfig};
use pagedattn_kernels::DType;
use pagedattn_model::{Model, Tokenizer};
use pagedattn_runner::ModelExecutor;
use std::future::Future;
use std::sync::Arc;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The engine refused its configuration.
    #[error("{0}")]
    Engine(#[from] pagedattn_engine::EngineError),
    /// The model's chat template, or another part of the set-up, is unusable.
    #[error("{0}")]
    Setup(String),
}

/// Starts the engine thread for `model` (K/V stored as `kv_dtype`) and builds the state the
/// routes share. The engine keeps no history, whatever `config` says: a server runs long.
pub fn start(
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    kv_dtype: DType,
    mut config: EngineConfig,
    options: ServerOptions,
) -> Result<Arc<AppState>, ServerError> {
    if tokenizer.vocab_size() > model.config().vocab_size {
        return Err(ServerError::Setup(format!(
            "the tokenizer has {} tokens, the model only {}",
            tokenizer.vocab_size(),
            model.config().vocab_size
        )));
    }
    config.keep_history = false;
    let engine = Engine::new(ModelExecutor::new(model, kv_dtype), config)?;
    let handle = pagedattn_engine::core::spawn(engine)?;
    Ok(Arc::new(
        AppState::new(handle, tokenizer, options).map_err(ServerError::Setup)?,
    ))
}

/// Serves `state` on `listener` until `shutdown` resolves; then stops accepting, lets the
/// requests in flight finish for the grace period of [`ServerOptions::shutdown_grace`],
/// aborts what is left, and returns once every connection has closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine = state.engine.clone();
    let grace = state.options.shutdown_grace;
    let sampler = tokio::spawn(dashboard::sample_history(state.clone()));
    let app = router(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!(
                in_flight = engine.num_in_flight(),
                grace_s = grace.as_secs_f64(),
                "shutting down: no new connections; requests in flight finish or are aborted"
            );
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                if engine.num_in_flight() > 0 {
                    tracing::warn!(
                        in_flight = engine.num_in_flight(),
                        "grace period over: aborting"
                    );
                    engine.abort_all();
                }
            });
        })
        .await;
    sampler.abort();
    served
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
