//! The serving benchmark: the same workload through each KV policy at the same KV memory
//! budget, on real execution (a model on this CPU) or simulated execution (a cost model
//! of a GPU; the scheduler and block manager still run for real).
//!
//! - [`workload`]: seeded synthetic workloads (ShareGPT-like, Alpaca-like, shared prefix,
//!   uniform), CSV length traces, Poisson or trace arrivals, JSONL import/export.
//! - [`sim`]: the roofline cost model and its GPU presets.
//! - [`driver`]: feeds a workload to an engine at arrival times.
//! - [`report`]: per-policy metrics, JSON and a terminal table; [`plot`]: SVG plots.
//! - [`openai`]: the same workload sent over HTTP to an OpenAI-compatible server (a load
//!   generator), summarized by the same report code.

// Unsafe code lives in the kernels crate only (its SIMD and allocation paths).
#![forbid(unsafe_code)]

pub mod driver;
pub mod openai;
pub mod plot;
pub mod report;
pub mod sim;
mod sse;
pub mod workload;

/// Errors of a benchmark run that are not the engine's or the workload's.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A server could not be reached, answered something unusable, or every request
    /// failed; the message says which, e.g. "cannot connect to http://127.0.0.1:8000:
    /// connection refused".
    #[error("{0}")]
    Http(String),
    /// Arguments that describe no run, e.g. a URL that is not `http://`.
    #[error("{0}")]
    Invalid(String),
}
