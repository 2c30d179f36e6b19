//! Machine probes for roofline reports: single-thread throughput of the three arithmetic
//! paths the products use (f32 FMA, the int8 dot product of the quantized products, the
//! bf16 pair dot product) and a streaming read, run through the same instruction-set
//! dispatch as the kernels.

use crate::cpu::entry::{run_bf16, run_int8, run_lanes, Bf16Op, Int8Op, LanesOp};
use crate::cpu::lanes::Lanes;
use crate::cpu::Cpu;
use crate::products::quant::blocks::GROUP;
use crate::products::quant::tile::QLanes;
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
    let flops = |iters: usize| (iters * CHAINS * cpu.isa().lanes() * 2) as f64;
    best_rate(seconds, 1 << 16, flops, |iters| {
        std::hint::black_box(run_lanes(cpu, FmaProbe { iters }));
    })
}

/// Times `f(iters)` (which does `work(iters)` operations) with `iters`, from `start`,
/// doubled until a call takes a tenth of `seconds`, then best of five: operations per
/// second / 1e9.
fn best_rate(seconds: f64, start: usize, work: impl Fn(usize) -> f64, f: impl Fn(usize)) -> f64 {
    let run = |iters: usize| {
        let t = Instant::now();
        f(iters);
        t.elapsed().as_secs_f64()
    };
    let mut iters = start;
    while run(iters) < seconds / 10.0 && iters < 1 << 34 {
        iters *= 2;
    }
    let best = (0..5).map(|_| run(iters)).fold(f64::INFINITY, f64::min);
    work(iters) / best / 1e9
}

/// Peak single-thread throughput of `cpu`'s int8 dot product — the instruction the
/// quantized products run (`vpdpbusd` with AVX-512 VNNI, `vpmaddubsw` + `vpmaddwd` with
/// AVX2, else scalar code) — in G multiply-adds/s, measured over about `seconds`.
pub fn int8_peak_gmacs(cpu: Cpu, seconds: f64) -> f64 {
    // Each step: CHAINS dot products of 8 lanes x 4 byte pairs.
    let macs = |iters: usize| (iters * CHAINS * GROUP * 4) as f64;
    best_rate(seconds, 1 << 12, macs, |iters| {
        std::hint::black_box(run_int8(cpu, Int8Probe { iters }));
    })
}

/// Peak single-thread throughput of the bf16 pair dot product (`vdpbf16ps`, 16 lanes x 2
/// pairs) in G multiply-adds/s, or `None` where `cpu` has no AVX-512 BF16.
pub fn bf16_peak_gmacs(cpu: Cpu, seconds: f64) -> Option<f64> {
    if !cpu.bf16() {
        return None;
    }
    let macs = |iters: usize| (iters * CHAINS * 32) as f64;
    Some(best_rate(seconds, 1 << 12, macs, |iters| {
        std::hint::black_box(run_bf16(cpu, Bf16Probe { iters }));
    }))
}

/// The int8 probe as a dispatch op: `iters` rounds of `CHAINS` independent dot products.
struct Int8Probe {
    iters: usize,
}

impl Int8Op for Int8Probe {
    type Output = i64;

    #[inline(always)]
    fn run<Q: QLanes, const RX: usize>(self, q: Q) -> i64 {
        let w = q.load(std::hint::black_box(&[3u8; 32]));
        // Products that cancel (3 - 3 + 3 - 3): the sums stay 0, never overflow.
        let x4 = std::hint::black_box([1i8, -1, 1, -1]);
        let mut acc = [q.zero_i(); CHAINS];
        for _ in 0..self.iters {
            for a in &mut acc {
                *a = q.dot_u(*a, w, x4);
            }
        }
        acc.iter()
            .flat_map(|&a| q.to_array(q.cvt(a)))
            .map(|v| v as i64)
            .sum()
    }
}

/// The bf16 probe as a dispatch op.
struct Bf16Probe {
    iters: usize,
}

impl Bf16Op for Bf16Probe {
    type Output = f32;

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn run(self, t: crate::cpu::bf16::Bf16Dot) -> f32 {
        crate::products::bf16::dot_chains::<CHAINS>(t, self.iters)
    }
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
