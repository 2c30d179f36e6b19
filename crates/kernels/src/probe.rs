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
        let r = dispatch_fma(isa, iters);
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
    Ok(dispatch_sum(isa, data))
}

/// Runs the FMA probe on `isa` (which the caller checked is available).
pub(crate) fn dispatch_fma(isa: Isa, iters: usize) -> f32 {
    match isa {
        // SAFETY: callers pass only ISAs for which `is_available()` returned true.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { fma_avx512(iters) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { fma_avx2(iters) },
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { fma_neon(iters) },
        _ => fma_scalar(iters),
    }
}

/// Runs the read probe on `isa` (which the caller checked is available).
pub(crate) fn dispatch_sum(isa: Isa, data: &[f32]) -> f32 {
    match isa {
        // SAFETY: callers pass only ISAs for which `is_available()` returned true.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { sum_avx512(data) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { sum_avx2(data) },
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { sum_neon(data) },
        _ => sum_scalar(data),
    }
}

/// FMA throughput probe with Avx2.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C (`Isa::Avx2.is_available()`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fma_avx2(iters: usize) -> f32 {
    // SAFETY: this function's own contract, and it is the `#[target_feature]` entry.
    let l = unsafe { crate::isa::avx2::Avx2::new() };
    fma_loop(l, iters, 1.0)
}

/// FMA throughput probe with Avx512.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL, AVX2, FMA and F16C (`Isa::Avx512.is_available()`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn fma_avx512(iters: usize) -> f32 {
    // SAFETY: this function's own contract, and it is the `#[target_feature]` entry.
    let l = unsafe { crate::isa::avx512::Avx512::new() };
    fma_loop(l, iters, 1.0)
}

/// FMA throughput probe with Neon.
///
/// # Safety
/// The CPU must have NEON (`Isa::Neon.is_available()`).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn fma_neon(iters: usize) -> f32 {
    // SAFETY: this function's own contract, and it is the `#[target_feature]` entry.
    let l = unsafe { crate::isa::neon::Neon::new() };
    fma_loop(l, iters, 1.0)
}

/// FMA throughput probe on the scalar path.
fn fma_scalar(iters: usize) -> f32 {
    let l = crate::isa::scalar::Scalar::token();
    fma_loop(l, iters, 1.0)
}

/// Streaming-read probe with Avx2.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C (`Isa::Avx2.is_available()`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum_avx2(data: &[f32]) -> f32 {
    // SAFETY: this function's own contract, and it is the `#[target_feature]` entry.
    let l = unsafe { crate::isa::avx2::Avx2::new() };
    sum_loop(l, data)
}

/// Streaming-read probe with Avx512.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL, AVX2, FMA and F16C (`Isa::Avx512.is_available()`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn sum_avx512(data: &[f32]) -> f32 {
    // SAFETY: this function's own contract, and it is the `#[target_feature]` entry.
    let l = unsafe { crate::isa::avx512::Avx512::new() };
    sum_loop(l, data)
}

/// Streaming-read probe with Neon.
///
/// # Safety
/// The CPU must have NEON (`Isa::Neon.is_available()`).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn sum_neon(data: &[f32]) -> f32 {
    // SAFETY: this function's own contract, and it is the `#[target_feature]` entry.
    let l = unsafe { crate::isa::neon::Neon::new() };
    sum_loop(l, data)
}

/// Streaming-read probe on the scalar path.
fn sum_scalar(data: &[f32]) -> f32 {
    let l = crate::isa::scalar::Scalar::token();
    sum_loop(l, data)
}
