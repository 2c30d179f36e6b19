//! Machine probes for roofline reports: single-thread FMA throughput and a streaming read,
//! run through the same instruction-set dispatch as the kernels.

use crate::cpu::entry::{run_lanes, LanesOp};
use crate::cpu::lanes::Lanes;
use crate::cpu::Cpu;
use std::time::Instant;

/// Independent accumulator chains: enough to cover FMA latency x ports on current cores.
const CHAINS: usize = 16;

/// Runs `iters` rounds of `CHAINS` independent vector FMAs; returns a value that depends on
/// all of them so the work is not optimised away.
#[inline(always)]
fn fma_loop<L: Lanes>(isa: L, iters: usize, seed: f32) -> f32 {
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
fn sum_loop<L: Lanes>(isa: L, data: &[f32]) -> f32 {
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

/// Peak single-thread f32 FMA throughput on `cpu`'s path, in GFLOP/s (2 flops per lane per
/// FMA), measured over about `seconds`.
pub fn fma_peak_gflops(cpu: Cpu, seconds: f64) -> f64 {
    let run = |iters: usize| {
        let t = Instant::now();
        let r = run_lanes(cpu, FmaProbe { iters });
        std::hint::black_box(r);
        t.elapsed().as_secs_f64()
    };
    let mut iters = 1 << 16;
    while run(iters) < seconds / 10.0 && iters < 1 << 34 {
        iters *= 2;
    }
    let best = (0..5).map(|_| run(iters)).fold(f64::INFINITY, f64::min);
    (iters * CHAINS * cpu.isa().lanes() * 2) as f64 / best / 1e9
}

/// Sums `data` on `cpu`'s path (one thread); callers time it to measure read bandwidth.
pub fn sum_f32(cpu: Cpu, data: &[f32]) -> f32 {
    run_lanes(cpu, SumProbe { data })
}

/// The FMA probe as a dispatch op.
struct FmaProbe {
    iters: usize,
}

impl LanesOp for FmaProbe {
    type Output = f32;

    #[inline(always)]
    fn run<L: Lanes, const KEYS: usize, const ROWS: usize, const VECS: usize>(self, l: L) -> f32 {
        fma_loop(l, self.iters, 1.0)
    }
}

/// The read probe as a dispatch op.
struct SumProbe<'a> {
    data: &'a [f32],
}

impl LanesOp for SumProbe<'_> {
    type Output = f32;

    #[inline(always)]
    fn run<L: Lanes, const KEYS: usize, const ROWS: usize, const VECS: usize>(self, l: L) -> f32 {
        sum_loop(l, self.data)
    }
}
