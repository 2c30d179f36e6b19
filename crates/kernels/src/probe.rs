//! Machine probes for roofline reports: single-thread FMA throughput and a streaming read,
//! run through the same instruction-set dispatch as the kernels.

use crate::error::{KernelError, Result};
use crate::isa::{Isa, Lanes};
use std::time::Instant;

/// Independent accumulator chains: enough to cover FMA latency x ports on current cores.
const CHAINS: usize = 16;

/// Runs `iters` rounds of `CHAINS` independent vector FMAs; returns a value that depends on
/// all of them so the work is not optimised away.
#[inline(always)]
pub(crate) fn fma_loop<L: Lanes>(isa: L, iters: usize, seed: f32) -> f32 {
    let mut acc = [isa.splat(seed); CHAINS];
    let a = isa.splat(0.999_999);
    let b = isa.splat(1e-7);
    for _ in 0..iters {
        for x in &mut acc {
            *x = isa.fma(*x, a, b);
        }
    }
    let mut total = isa.zero();
    for x in acc {
        total = isa.add(total, x);
    }
    isa.reduce_add(total)
}

/// Sums `data` with vector loads (the STREAM-style read kernel).
#[inline(always)]
pub(crate) fn sum_loop<L: Lanes>(isa: L, data: &[f32]) -> f32 {
    let w = L::W;
    let mut acc = [isa.zero(); 4];
    let mut chunks = data.chunks_exact(4 * w);
    for c in &mut chunks {
        for (i, x) in acc.iter_mut().enumerate() {
            *x = isa.add(*x, isa.load(&c[i * w..]));
        }
    }
    let total = isa.add(isa.add(acc[0], acc[1]), isa.add(acc[2], acc[3]));
    isa.reduce_add(total) + chunks.remainder().iter().sum::<f32>()
}

fn check(isa: Isa) -> Result<()> {
    if isa.is_available() {
        Ok(())
    } else {
        Err(KernelError::IsaUnavailable(isa.name()))
    }
}

/// Peak single-thread f32 FMA throughput with `isa`, in GFLOP/s (2 flops per lane per FMA),
/// measured over about `seconds`.
pub fn fma_peak_gflops(isa: Isa, seconds: f64) -> Result<f64> {
    check(isa)?;
    let run = |iters: usize| {
        let t = Instant::now();
        let r = crate::isa::dispatch_fma(isa, iters);
        std::hint::black_box(r);
        t.elapsed().as_secs_f64()
    };
    let mut iters = 1 << 16;
    while run(iters) < seconds / 10.0 && iters < 1 << 34 {
        iters *= 2;
    }
    let best = (0..5).map(|_| run(iters)).fold(f64::INFINITY, f64::min);
    Ok((iters * CHAINS * isa.lanes() * 2) as f64 / best / 1e9)
}

/// Sums `data` with `isa` (one thread); callers time it to measure read bandwidth.
pub fn sum_f32(isa: Isa, data: &[f32]) -> Result<f32> {
    check(isa)?;
    Ok(crate::isa::dispatch_sum(isa, data))
}
