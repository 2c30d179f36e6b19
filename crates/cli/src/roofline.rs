//! Where a model step's time goes, for `pagedattn bench model`: the machine's single-thread
//! peaks on the three arithmetic paths (f32 FMA, the int8 dot product, the bf16 pair dot
//! product) and its DRAM read bandwidth ([`Peaks`]); a decode step's lower bound from them
//! ([`Roofline`]); and each of the step's matrix products timed alone, with its share of
//! its path's peak ([`time_products`]).

use crate::machine::{llc_bytes, read_bandwidth_gbps};
use anyhow::Result;
use pagedattn_kernels::{bf16_peak_gmacs, fma_peak_gflops, int8_peak_gmacs, Cpu, DType};
use pagedattn_model::{Matrix, Model};
use serde::Serialize;
use std::time::Instant;

/// Single-thread peaks and the read bandwidth of all threads.
#[derive(Debug, Serialize, Clone, Copy)]
pub(crate) struct Peaks {
    pub(crate) fma_gflops: f64,
    pub(crate) int8_gmacs: f64,
    pub(crate) bf16_gmacs: Option<f64>,
    pub(crate) read_gbps: f64,
}

/// The arithmetic a matrix's products run on, in the order a step's roofline prefers them
/// (the int8 products where there are any, else bf16, else f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    Int8,
    Bf16,
    F32,
}

impl Path {
    fn of(m: &Matrix) -> Self {
        if m.is_quantized() {
            Self::Int8
        } else if m.dtype_name() == "bf16" {
            Self::Bf16
        } else {
            Self::F32
        }
    }
}

impl Peaks {
    /// Probes the machine (on the calling pool's threads for the bandwidth).
    pub(crate) fn probe(cpu: Cpu) -> Self {
        eprintln!("probing the dot-product peaks and the read bandwidth...");
        Self {
            fma_gflops: fma_peak_gflops(cpu, 0.2),
            int8_gmacs: int8_peak_gmacs(cpu, 0.2),
            bf16_gmacs: bf16_peak_gmacs(cpu, 0.2),
            read_gbps: read_bandwidth_gbps(cpu, llc_bytes()),
        }
    }

    /// One thread's peak multiply-adds per second (G) on `path` (bf16 products without
    /// AVX-512 BF16 widen to f32 FMAs).
    fn gmacs(&self, path: Path) -> f64 {
        match path {
            Path::Int8 => self.int8_gmacs,
            Path::Bf16 => self.bf16_gmacs.unwrap_or(self.fma_gflops / 2.0),
            Path::F32 => self.fma_gflops / 2.0,
        }
    }
}

/// A decode step's lower bound on this machine: the weights and the batch's K/V read once
/// at the probed bandwidth, or the batch's multiply-adds at the weights' path's peak on
/// every thread, whichever is longer.
pub(crate) struct Roofline {
    peaks: Peaks,
    threads: usize,
    /// The sequences' mean context (tokens of K/V each step reads per sequence).
    context: f64,
    /// Bytes of weights a step reads (every matrix once).
    weight_bytes: f64,
    /// K/V bytes per position, all layers.
    kv_bytes_per_token: f64,
    /// Multiply-adds per token: the matrix products and attention at the mean context.
    macs_per_token: f64,
    /// Peak multiply-adds per second of one thread on the weights' path.
    path_gmacs: f64,
}

impl Roofline {
    /// For `model` with K/V stored as `dtype`, sequences at a mean context of `context`
    /// tokens, on `threads` threads.
    pub(crate) fn new(
        model: &Model,
        peaks: Peaks,
        threads: usize,
        dtype: DType,
        context: f64,
    ) -> Self {
        let c = model.config();
        let products = model.products();
        let path = products.iter().map(|(_, m, _)| Path::of(m)).min();
        let path_gmacs = peaks.gmacs(path.unwrap_or(Path::F32));
        let mut macs: f64 = products
            .iter()
            .map(|(_, m, n)| (m.rows() * m.cols() * n) as f64)
            .sum();
        // Scores and weighted values: 2 x context x q_dim per layer.
        macs += 2.0 * context * (c.q_dim() * c.num_layers) as f64;
        Self {
            peaks,
            threads,
            context,
            weight_bytes: products
                .iter()
                .map(|(_, m, n)| (m.bytes() * n) as f64)
                .sum(),
            kv_bytes_per_token: c.kv_shape(dtype).bytes_per_token() as f64,
            macs_per_token: macs,
            path_gmacs,
        }
    }

    /// Reading the weights and `batch` sequences' K/V from DRAM, milliseconds.
    fn memory_ms(&self, batch: usize) -> f64 {
        let bytes = self.weight_bytes + batch as f64 * self.context * self.kv_bytes_per_token;
        bytes / (self.peaks.read_gbps * 1e9) * 1e3
    }

    /// `batch` tokens' multiply-adds at the path's peak on every thread, milliseconds.
    fn compute_ms(&self, batch: usize) -> f64 {
        batch as f64 * self.macs_per_token / (self.path_gmacs * 1e9 * self.threads as f64) * 1e3
    }

    /// The bound on a step of `batch` sequences, milliseconds.
    pub(crate) fn step_ms(&self, batch: usize) -> f64 {
        self.memory_ms(batch).max(self.compute_ms(batch))
    }
}

/// One matrix product of the step timed alone at one batch size.
#[derive(Debug, Serialize)]
pub(crate) struct ProductTime {
    name: &'static str,
    dtype: &'static str,
    rows: usize,
    cols: usize,
    /// Times per step.
    per_step: usize,
    batch: usize,
    us: f64,
    gmacs: f64,
    /// Share of the path's peak on all threads.
    peak_share: f64,
}

/// Times each of the step's matrix products alone at every batch size (on the pool's
/// threads, as the step runs them): best of several calls after a warm-up. `step_ms(b)`
/// is the measured step of `b` sequences, for each product's share of it.
pub(crate) fn time_products(
    model: &Model,
    roof: &Roofline,
    batches: &[usize],
    step_ms: impl Fn(usize) -> Option<f64>,
) -> Result<Vec<ProductTime>> {
    let cpu = model.cpu();
    println!(
        "\n{:<8} {:>6} {:>12} {:>6} {:>9} {:>8} {:>7} {:>7}",
        "product", "type", "shape", "batch", "µs/call", "GMAC/s", "%peak", "%step"
    );
    let peak = |m: &Matrix| roof.peaks.gmacs(Path::of(m)) * roof.threads as f64;
    let mut out = Vec::new();
    for &b in batches {
        let step_ms = step_ms(b);
        for (name, m, per_step) in model.products() {
            let x: Vec<f32> = (0..b * m.cols())
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0)
                .collect();
            let mut y = vec![0.0; b * m.rows()];
            let macs = (b * m.rows() * m.cols()) as f64;
            // About 20 ms of calls per timing, best of five.
            m.multiply(cpu, &x, &mut y, false)?;
            let t = Instant::now();
            m.multiply(cpu, &x, &mut y, false)?;
            let once = t.elapsed().as_secs_f64();
            let calls = ((0.02 / once.max(1e-7)) as usize).clamp(1, 10_000);
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..calls {
                    m.multiply(cpu, &x, &mut y, false)?;
                }
                best = best.min(t.elapsed().as_secs_f64() / calls as f64);
            }
            std::hint::black_box(&y);
            let gmacs = macs / best / 1e9;
            let share = step_ms.map_or(f64::NAN, |s| best * per_step as f64 * 1e3 / s);
            println!(
                "{name:<8} {:>6} {:>12} {b:>6} {:>9.1} {gmacs:>8.1} {:>6.0}% {:>6.0}%",
                m.dtype_name(),
                format!("{}x{}", m.rows(), m.cols()),
                best * 1e6,
                gmacs / peak(m) * 100.0,
                share * 100.0
            );
            out.push(ProductTime {
                name,
                dtype: m.dtype_name(),
                rows: m.rows(),
                cols: m.cols(),
                per_step,
                batch: b,
                us: best * 1e6,
                gmacs,
                peak_share: gmacs / peak(m),
            });
        }
    }
    Ok(out)
}
