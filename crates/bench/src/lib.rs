//! The serving benchmark: the same workload through each KV policy at the same KV memory
//! budget, on real execution (a model on this CPU) or simulated execution (a cost model
//! of a GPU; the scheduler and block manager still run for real).
//!
//! - [`workload`]: seeded synthetic workloads (ShareGPT-like, Alpaca-like, shared prefix,
//!   uniform), CSV length traces, Poisson or trace arrivals, JSONL import/export.
//! - [`sim`]: the roofline cost model and its GPU presets.
//! - [`driver`]: feeds a workload to an engine at arrival times.
//! - [`report`]: per-policy metrics, JSON and a terminal table; [`plot`]: SVG plots.

pub mod driver;
pub mod plot;
pub mod report;
pub mod sim;
pub mod workload;
