//! Dense products `y (+)= x W^T` for the few rows of a decode batch, with `W` stored
//! `[n, k]` row-major in f32, f16 or bf16.
//!
//! With a handful of rows the product is bound by reading `W` once from memory, and a
//! general GEMM wastes that: it packs `W` (one more pass over it) or falls back to a
//! one-row matrix-vector loop that rereads `W` per row. Here each task owns a range of
//! output features; for every `NR` weight rows it computes an `MR x NR` tile of dot
//! products (vectors along `k`, weights widened in registers), so the weight rows come from
//! DRAM once and from L1 for the other row groups of `x`, and every weight load feeds `MR`
//! FMAs. Bigger batches (prefill) belong to a GEMM with packing.

use crate::dot::load_t;
use crate::dtype::KvElem;
use crate::error::{KernelError, Result};
use crate::isa::{Isa, Lanes};
use rayon::prelude::*;

/// Below this many multiply-adds a call runs on the calling thread.
const PARALLEL_MIN_FMAS: usize = 1 << 16;

/// `y = x W^T`, or `y += x W^T` when `accumulate`: `x` is `[m, k]`, `w` is `[n, k]` and `y`
/// `[m, n]`, all row-major; `m` and `n` follow from the lengths. Output features are split
/// across the rayon pool. Meant for small `m` (it reads `W` once whatever `m` is, but its
/// tiles are sized for decode batches; a packed GEMM wins for prefill-sized `m`).
///
/// ```
/// use pagedattn_kernels::{linear, Isa};
/// let x = [1.0f32, 2.0, 3.0, 4.0]; // two rows, k = 2
/// let w = [1.0f32, 0.0, 1.0, 1.0, 0.0, 2.0]; // three features
/// let mut y = [0.0f32; 6];
/// linear(Isa::selected(), &x, &w, 2, &mut y, false)?;
/// assert_eq!(y, [1.0, 3.0, 4.0, 3.0, 7.0, 8.0]);
/// # Ok::<(), pagedattn_kernels::KernelError>(())
/// ```
pub fn linear<T: KvElem>(
    isa: Isa,
    x: &[f32],
    w: &[T],
    k: usize,
    y: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    if !isa.is_available() {
        return Err(KernelError::IsaUnavailable(isa.name()));
    }
    if k == 0 {
        return Err(KernelError::InvalidShape(
            "linear: k must be positive".into(),
        ));
    }
    for (what, len) in [("linear x", x.len()), ("linear w", w.len())] {
        if len % k != 0 {
            return Err(KernelError::LengthMismatch {
                what,
                expected: len / k * k,
                actual: len,
            });
        }
    }
    let (m, n) = (x.len() / k, w.len() / k);
    if y.len() != m * n {
        return Err(KernelError::LengthMismatch {
            what: "linear y",
            expected: m * n,
            actual: y.len(),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    if threads == 1 || m * n * k < PARALLEL_MIN_FMAS {
        let mut out: Vec<&mut [f32]> = y.chunks_exact_mut(n).collect();
        run_cols(isa, x, k, w, &mut out, accumulate);
        return Ok(());
    }
    // About four column ranges per thread, each a multiple of 16 features.
    let chunk = n.div_ceil(threads * 4).next_multiple_of(16);
    let tasks = n.div_ceil(chunk);
    // Task c gets the c-th column range of every row of y: disjoint slices, no aliasing.
    let mut cols: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::with_capacity(m)).collect();
    for row in y.chunks_exact_mut(n) {
        for (c, part) in row.chunks_mut(chunk).enumerate() {
            cols[c].push(part);
        }
    }
    cols.par_iter_mut().enumerate().for_each(|(c, out)| {
        let end = ((c + 1) * chunk).min(n);
        run_cols(isa, x, k, &w[c * chunk * k..end * k], out, accumulate);
    });
    Ok(())
}

/// One task: `out[i][j] (+)= dot(x_i, w_j)` for the task's weight rows `w` (`[nc, k]`).
fn run_cols<T: KvElem>(
    isa: Isa,
    x: &[f32],
    k: usize,
    w: &[T],
    out: &mut [&mut [f32]],
    accumulate: bool,
) {
    match isa {
        // SAFETY: `linear` checked `is_available()`, so the CPU has every feature the entry
        // function is compiled with.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { crate::isa::avx512::linear_cols(x, k, w, out, accumulate) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { crate::isa::avx2::linear_cols(x, k, w, out, accumulate) },
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { crate::isa::neon::linear_cols(x, k, w, out, accumulate) },
        _ => crate::isa::scalar::linear_cols(x, k, w, out, accumulate),
    }
}

/// The task body, generic over the instruction set: `NR` weight rows at a time (single
/// rows for the last few), and for them every group of `MR` rows of `x`.
#[inline(always)]
pub(crate) fn cols<L: Lanes, T: KvElem, const MR: usize, const NR: usize>(
    l: L,
    x: &[f32],
    k: usize,
    w: &[T],
    out: &mut [&mut [f32]],
    accumulate: bool,
) {
    let nc = w.len() / k;
    let full = nc / NR * NR;
    let mut j = 0;
    while j < full {
        // The next group's rows are prefetched while this group computes, so the reads
        // from DRAM overlap the arithmetic of the later row groups instead of stalling.
        let ahead: &[T] = if j + 2 * NR <= nc {
            &w[(j + NR) * k..(j + 2 * NR) * k]
        } else {
            &[]
        };
        col_group::<L, T, MR, NR>(l, x, k, &w[j * k..(j + NR) * k], ahead, j, out, accumulate);
        j += NR;
    }
    while j < nc {
        col_group::<L, T, MR, 1>(l, x, k, &w[j * k..(j + 1) * k], &[], j, out, accumulate);
        j += 1;
    }
}

/// Output features `j .. j + N` (weights `wg`, `[N, k]`) for every row of `x`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn col_group<L: Lanes, T: KvElem, const MR: usize, const N: usize>(
    l: L,
    x: &[f32],
    k: usize,
    wg: &[T],
    ahead: &[T],
    j: usize,
    out: &mut [&mut [f32]],
    accumulate: bool,
) {
    const { assert!(MR >= 1 && MR <= 8 && N >= 1) };
    let m = out.len();
    let mut i = 0;
    while i < m {
        let mr = (m - i).min(MR);
        let xs = &x[i * k..(i + mr) * k];
        let pre = if i == 0 { ahead } else { &[] };
        // Remainders get their own tile size so no FMA is wasted on padding rows.
        let mut sums = [[0.0f32; N]; MR];
        match mr {
            1 if MR > 1 => sums[..1].copy_from_slice(&tile::<L, T, 1, N>(l, xs, k, wg, pre)),
            2 if MR > 2 => sums[..2].copy_from_slice(&tile::<L, T, 2, N>(l, xs, k, wg, pre)),
            3 if MR > 3 => sums[..3].copy_from_slice(&tile::<L, T, 3, N>(l, xs, k, wg, pre)),
            4 if MR > 4 => sums[..4].copy_from_slice(&tile::<L, T, 4, N>(l, xs, k, wg, pre)),
            5 if MR > 5 => sums[..5].copy_from_slice(&tile::<L, T, 5, N>(l, xs, k, wg, pre)),
            6 if MR > 6 => sums[..6].copy_from_slice(&tile::<L, T, 6, N>(l, xs, k, wg, pre)),
            7 if MR > 7 => sums[..7].copy_from_slice(&tile::<L, T, 7, N>(l, xs, k, wg, pre)),
            // `mr == MR` here (every smaller case was taken above).
            _ => sums = tile::<L, T, MR, N>(l, xs, k, wg, pre),
        }
        for (a, s) in sums.iter().enumerate().take(mr) {
            let row = &mut out[i + a][j..j + N];
            for (o, &s) in row.iter_mut().zip(s) {
                *o = if accumulate { *o + s } else { s };
            }
        }
        i += mr;
    }
}

/// `R x N` dot products of the rows of `xs` (`[R, k]`) with the rows of `wg` (`[N, k]`):
/// `R * N` vector accumulators, each weight vector loaded (and widened) once for all `R`
/// rows. `ahead` (any length) is prefetched at the matching offsets.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn tile<L: Lanes, T: KvElem, const R: usize, const N: usize>(
    l: L,
    xs: &[f32],
    k: usize,
    wg: &[T],
    ahead: &[T],
) -> [[f32; N]; R] {
    let xs = &xs[..R * k];
    let wg = &wg[..N * k];
    let kv = k / L::W * L::W;
    // Every row cut to exactly `kv` elements, so the loop condition `p + W <= kv` is the
    // bounds check of each load and the compiler drops the per-load checks.
    let mut wr: [&[T]; N] = [&[]; N];
    for (b, r) in wr.iter_mut().enumerate() {
        *r = &wg[b * k..b * k + kv];
    }
    let mut xr: [&[f32]; R] = [&[]; R];
    for (a, r) in xr.iter_mut().enumerate() {
        *r = &xs[a * k..a * k + kv];
    }
    let pre = ahead.len() >= N * k;
    let mut pr: [&[T]; N] = [&[]; N];
    if pre {
        for (b, r) in pr.iter_mut().enumerate() {
            *r = &ahead[b * k..b * k + kv];
        }
    }
    let mut acc = [[l.zero(); N]; R];
    let mut p = 0;
    while p + L::W <= kv {
        if pre {
            for r in &pr {
                l.prefetch(&r[p..=p]);
            }
        }
        // Plain loops, no closures: a closure is compiled without the caller's target
        // features, and the intrinsics inside it would not inline.
        let mut wv = [l.zero(); N];
        for (v, r) in wv.iter_mut().zip(&wr) {
            *v = load_t(l, &r[p..p + L::W]);
        }
        for a in 0..R {
            let xv = l.load(&xr[a][p..p + L::W]);
            for b in 0..N {
                acc[a][b] = l.fma(xv, wv[b], acc[a][b]);
            }
        }
        p += L::W;
    }
    let mut sums = [[0.0f32; N]; R];
    for (a, (s, acc)) in sums.iter_mut().zip(&acc).enumerate() {
        for (b, (s, &v)) in s.iter_mut().zip(acc).enumerate() {
            let mut tail = 0.0;
            for t in kv..k {
                tail += xs[a * k + t] * wg[b * k + t].to_f32();
            }
            *s = l.reduce_add(v) + tail;
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn naive(x: &[f32], w: &[f32], k: usize) -> Vec<f64> {
        let (m, n) = (x.len() / k, w.len() / k);
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|t| f64::from(x[i * k + t]) * f64::from(w[j * k + t]))
                    .sum();
            }
        }
        y
    }

    fn check<T: KvElem>(isa: Isa, m: usize, n: usize, k: usize) {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let w: Vec<T> = (0..n * k)
            .map(|i| T::from_f32(((i * 5 % 11) as f32 - 5.0) / 4.0))
            .collect();
        let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let want = naive(&x, &wf, k);
        let mut y = vec![7.0; m * n];
        linear(isa, &x, &w, k, &mut y, false).unwrap();
        let scale = (k as f64).sqrt();
        for (a, b) in y.iter().zip(&want) {
            assert!(
                (f64::from(*a) - b).abs() <= 1e-5 * scale * b.abs().max(1.0),
                "{isa} {m}x{n}x{k}: {a} vs {b}"
            );
        }
        linear(isa, &x, &w, k, &mut y, true).unwrap();
        for (a, b) in y.iter().zip(&want) {
            assert!(
                (f64::from(*a) - 2.0 * b).abs() <= 2e-5 * scale * b.abs().max(1.0),
                "{isa} accumulate {m}x{n}x{k}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn matches_f64_on_every_isa_and_dtype() {
        for isa in Isa::available() {
            for &(m, n, k) in &[
                (1, 1, 1),
                (1, 70, 33),
                (3, 200, 64),
                (4, 17, 16),
                (5, 64, 576),
                (9, 50, 20),
                (16, 300, 128),
                (23, 65, 47),
            ] {
                check::<f32>(isa, m, n, k);
                check::<bf16>(isa, m, n, k);
                check::<f16>(isa, m, n, k);
            }
        }
    }

    #[test]
    fn a_row_does_not_depend_on_its_batch() {
        let (n, k) = (37, 300);
        let w: Vec<bf16> = (0..n * k)
            .map(|i| bf16::from_f32(((i * 5 % 11) as f32 - 5.0) / 4.0))
            .collect();
        let x: Vec<f32> = (0..13 * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        for isa in Isa::available() {
            let mut all = vec![0.0; 13 * n];
            linear(isa, &x, &w, k, &mut all, false).unwrap();
            for i in 0..13 {
                let mut one = vec![0.0; n];
                linear(isa, &x[i * k..(i + 1) * k], &w, k, &mut one, false).unwrap();
                assert_eq!(one, all[i * n..(i + 1) * n], "{isa} row {i}");
            }
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let isa = Isa::Scalar;
        let mut y = [0.0f32; 4];
        assert!(linear(isa, &[1.0; 4], &[1.0f32; 4], 0, &mut y, false).is_err());
        assert!(linear(isa, &[1.0; 5], &[1.0f32; 4], 2, &mut y, false).is_err());
        assert!(linear(isa, &[1.0; 4], &[1.0f32; 5], 2, &mut y, false).is_err());
        assert!(linear(isa, &[1.0; 4], &[1.0f32; 4], 2, &mut y[..3], false).is_err());
        assert!(linear(isa, &[], &[1.0f32; 4], 2, &mut [], false).is_ok());
    }
}
