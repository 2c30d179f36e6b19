//! Dense products `y (+)= x W^T` with `W` (`[n, k]`, f32, f16 or bf16) packed once into
//! panels of [`PANEL`] output features, each panel `[k, PANEL]`: a [`PackedMatrix`].
//!
//! The kernel is the outer-product form of a GEMM micro-kernel: for every `k` step it loads
//! one panel row (a few vectors of weights, widened in registers when 16-bit), broadcasts
//! one element of each of up to `MR` rows of `x`, and updates `MR x NV` vector accumulators
//! that hold finished outputs — no horizontal sums, and every weight vector feeds `MR`
//! FMAs. Panels are contiguous, so the weights stream from memory sequentially and are read
//! from DRAM once per call whatever the number of rows (row groups after the first find the
//! panel in cache). Each task owns a range of panels; `x` is repacked per call so each
//! group of rows is read `[k, MR]`, in order. An output is one FMA chain over `k` in order,
//! so a row's result does not depend on which or how many rows share its call.

use crate::cpu::entry::{run_lanes, LanesOp};
use crate::cpu::lanes::{load_t, Lanes};
use crate::cpu::Cpu;
use crate::error::Result;
use crate::products::packed::{PackedMatrix, PANEL};
use crate::products::split::{product_rows, split};
use crate::store::dtype::KvElem;

/// Fewest rows for which bf16 products use AVX-512 BF16.
#[cfg(target_arch = "x86_64")]
const BF16_DOT_MIN_ROWS: usize = 8;

/// `y = x W^T`, or `y += x W^T` when `accumulate`: `x` is `[m, k]` and `y` `[m, n]`,
/// row-major, for `W` `[n, k]`; `m` follows from the lengths. Output panels are split
/// across the rayon pool.
///
/// ```
/// use pagedattn_kernels::{linear, Cpu, PackedMatrix};
/// let x = [1.0f32, 2.0, 3.0, 4.0]; // two rows, k = 2
/// let w = PackedMatrix::pack(&[1.0f32, 0.0, 1.0, 1.0, 0.0, 2.0], 2)?; // three features
/// let mut y = [0.0f32; 6];
/// linear(Cpu::selected(), &x, &w, &mut y, false)?;
/// assert_eq!(y, [1.0, 3.0, 4.0, 3.0, 7.0, 8.0]);
/// # Ok::<(), pagedattn_kernels::KernelError>(())
/// ```
pub fn linear<T: KvElem>(
    cpu: Cpu,
    x: &[f32],
    w: &PackedMatrix<T>,
    y: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let (n, k) = (w.rows(), w.cols());
    let m = product_rows(["linear x", "linear y"], x, k, y, n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    // bf16 weights on a CPU with AVX-512 BF16: two `k` steps per instruction, from 8 rows
    // on. Below that the product waits on the weight stream, and the widening kernel,
    // which prefetches the next panel, measured 4-10% faster at 1 and 4 rows
    // (docs/KERNELS.md).
    #[cfg(target_arch = "x86_64")]
    if cpu.bf16() && m >= BF16_DOT_MIN_ROWS {
        if let Some(bits) =
            T::as_bits(w.panels()).filter(|_| T::DTYPE == crate::store::dtype::DType::Bf16)
        {
            let xp = crate::products::bf16::pack_pairs(x, k);
            split((m, n, k), y, PANEL, 1, |c0, c1, out| {
                let op = crate::products::bf16::Panels {
                    xp: &xp,
                    k,
                    w: &bits[c0 * k..c1 * k],
                    out,
                    accumulate,
                };
                crate::cpu::entry::run_bf16(cpu, op);
            });
            return Ok(());
        }
    }
    let xp = pack_rows(x, k, run_lanes(cpu, BlockRows));
    split((m, n, k), y, PANEL, 1, |c0, c1, out| {
        let op = Panels {
            xp: &xp,
            k,
            w: &w.panels()[c0 * k..c1 * k],
            out,
            accumulate,
        };
        run_lanes(cpu, op);
    });
    Ok(())
}

/// The rows of `x` per register block on a path (the dispatch table's `ROWS`), for
/// packing `x` before the tasks run.
struct BlockRows;

impl LanesOp for BlockRows {
    type Output = usize;

    #[inline(always)]
    fn run<L: Lanes, const KEYS: usize, const ROWS: usize, const VECS: usize>(self, _: L) -> usize {
        ROWS
    }
}

/// One task: `out[i][j] (+)= dot(x_i, w_j)` for the task's panels `w`.
struct Panels<'a, 'o, 'r, T> {
    xp: &'a [f32],
    k: usize,
    w: &'a [T],
    out: &'o mut [&'r mut [f32]],
    accumulate: bool,
}

impl<T: KvElem> LanesOp for Panels<'_, '_, '_, T> {
    type Output = ();

    #[inline(always)]
    fn run<L: Lanes, const KEYS: usize, const ROWS: usize, const VECS: usize>(self, l: L) {
        panels::<L, T, ROWS, VECS>(l, self.xp, self.k, self.w, self.out, self.accumulate);
    }
}

/// `x` (`[m, k]`) regrouped into blocks of `mr` rows (fewer in the last), each block
/// `[k, rows]`: block `b` starts at `b * mr * k`, and its `k` step `p` holds element `p` of
/// each of its rows side by side.
fn pack_rows(x: &[f32], k: usize, mr: usize) -> Vec<f32> {
    let m = x.len() / k;
    let mut xp = vec![0.0; x.len()];
    let mut i = 0;
    while i < m {
        let r = (m - i).min(mr);
        let block = &mut xp[i * k..(i + r) * k];
        for a in 0..r {
            for (p, &v) in x[(i + a) * k..(i + a + 1) * k].iter().enumerate() {
                block[p * r + a] = v;
            }
        }
        i += r;
    }
    xp
}

/// The task body, generic over the instruction set: for each panel, each `NV`-vector slice
/// of it, and each block of up to `MR` rows, one register block.
#[inline(always)]
pub(crate) fn panels<L: Lanes, T: KvElem, const MR: usize, const NV: usize>(
    l: L,
    xp: &[f32],
    k: usize,
    w: &[T],
    out: &mut [&mut [f32]],
    accumulate: bool,
) {
    const { assert!(MR >= 1 && MR <= 8 && NV >= 1) };
    let sub = NV * L::W;
    debug_assert_eq!(PANEL % sub, 0);
    let m = out.len();
    let width = out.first().map_or(0, |r| r.len());
    let panels = w.len() / (k * PANEL);
    for (pi, panel) in w.chunks_exact(k * PANEL).enumerate() {
        let next = if pi + 1 < panels {
            &w[(pi + 1) * k * PANEL..(pi + 2) * k * PANEL]
        } else {
            &[]
        };
        let mut off = 0;
        while off < PANEL && pi * PANEL + off < width {
            let c = pi * PANEL + off;
            let mut i = 0;
            while i < m {
                let r = (m - i).min(MR);
                let xb = &xp[i * k..(i + r) * k];
                let rows = &mut out[i..i + r];
                let pre = if i == 0 && off == 0 { next } else { &[] };
                // Remainders get their own block size so no FMA is spent on padding rows.
                match r {
                    1 if MR > 1 => {
                        block::<L, T, 1, NV>(l, xb, panel, pre, off, rows, c, accumulate);
                    }
                    2 if MR > 2 => {
                        block::<L, T, 2, NV>(l, xb, panel, pre, off, rows, c, accumulate);
                    }
                    3 if MR > 3 => {
                        block::<L, T, 3, NV>(l, xb, panel, pre, off, rows, c, accumulate);
                    }
                    4 if MR > 4 => {
                        block::<L, T, 4, NV>(l, xb, panel, pre, off, rows, c, accumulate);
                    }
                    5 if MR > 5 => {
                        block::<L, T, 5, NV>(l, xb, panel, pre, off, rows, c, accumulate);
                    }
                    6 if MR > 6 => {
                        block::<L, T, 6, NV>(l, xb, panel, pre, off, rows, c, accumulate);
                    }
                    7 if MR > 7 => {
                        block::<L, T, 7, NV>(l, xb, panel, pre, off, rows, c, accumulate);
                    }
                    // `r == MR` here (every smaller case was taken above).
                    _ => {
                        block::<L, T, MR, NV>(l, xb, panel, pre, off, rows, c, accumulate);
                    }
                }
                i += r;
            }
            off += sub;
        }
    }
}

/// Outputs `c .. c + NV * W` of the `R` rows of `xb` (`[k, R]`) from panel columns
/// `off .. off + NV * W`: `R x NV` accumulators, one broadcast of `x` per row and `k` step,
/// each weight vector loaded (and widened) once for all `R` rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<L: Lanes, T: KvElem, const R: usize, const NV: usize>(
    l: L,
    xb: &[f32],
    panel: &[T],
    ahead: &[T],
    off: usize,
    rows: &mut [&mut [f32]],
    c: usize,
    accumulate: bool,
) {
    let w = L::W;
    let mut acc = [[l.zero(); NV]; R];
    if ahead.len() == panel.len() {
        // The next panel is fetched while this one computes, so the DRAM stream does not
        // pause while later row blocks reread this panel from cache.
        let steps = panel.chunks_exact(PANEL).zip(xb.chunks_exact(R));
        for ((wrow, xr), next) in steps.zip(ahead.chunks_exact(PANEL)) {
            l.prefetch_l2(next);
            step::<L, T, R, NV>(l, &wrow[off..off + NV * L::W], xr, &mut acc);
        }
    } else {
        for (wrow, xr) in panel.chunks_exact(PANEL).zip(xb.chunks_exact(R)) {
            step::<L, T, R, NV>(l, &wrow[off..off + NV * L::W], xr, &mut acc);
        }
    }
    for (row, acc) in rows.iter_mut().zip(&acc) {
        for (v, &s) in acc.iter().enumerate() {
            let c0 = c + v * w;
            if c0 + w <= row.len() {
                let dst = &mut row[c0..c0 + w];
                let s = if accumulate { l.add(l.load(dst), s) } else { s };
                l.store(dst, s);
            } else if c0 < row.len() {
                // The padded end of the last panel: only the real features are written.
                let mut tmp = [0.0f32; 16];
                l.store(&mut tmp[..w], s);
                for (o, &t) in row[c0..].iter_mut().zip(&tmp) {
                    *o = if accumulate { *o + t } else { t };
                }
            }
        }
    }
}

/// One `k` step of a register block: `acc[a][v] += x[a] * w[v]` (`wrow`: `NV` vectors).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn step<L: Lanes, T: KvElem, const R: usize, const NV: usize>(
    l: L,
    wrow: &[T],
    xr: &[f32],
    acc: &mut [[L::V; NV]; R],
) {
    // Plain loops, no closures: a closure is compiled without the caller's target
    // features, and the intrinsics inside it would not inline.
    let w = L::W;
    let mut wv = [l.zero(); NV];
    for v in 0..NV {
        wv[v] = load_t(l, &wrow[v * w..(v + 1) * w]);
    }
    for a in 0..R {
        let xv = l.splat(xr[a]);
        for v in 0..NV {
            acc[a][v] = l.fma(xv, wv[v], acc[a][v]);
        }
    }
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

    fn check<T: KvElem>(cpu: Cpu, m: usize, n: usize, k: usize) {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let w: Vec<T> = (0..n * k)
            .map(|i| T::from_f32(((i * 5 % 11) as f32 - 5.0) / 4.0))
            .collect();
        let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let want = naive(&x, &wf, k);
        let wp = PackedMatrix::pack(&w, k).unwrap();
        let mut y = vec![7.0; m * n];
        linear(cpu, &x, &wp, &mut y, false).unwrap();
        let scale = (k as f64).sqrt();
        for (a, b) in y.iter().zip(&want) {
            assert!(
                (f64::from(*a) - b).abs() <= 1e-5 * scale * b.abs().max(1.0),
                "{cpu} {m}x{n}x{k}: {a} vs {b}"
            );
        }
        linear(cpu, &x, &wp, &mut y, true).unwrap();
        for (a, b) in y.iter().zip(&want) {
            assert!(
                (f64::from(*a) - 2.0 * b).abs() <= 2e-5 * scale * b.abs().max(1.0),
                "{cpu} accumulate {m}x{n}x{k}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn matches_f64_on_every_isa_and_dtype() {
        crate::testing::every_path(|cpu| {
            for &(m, n, k) in &[
                (1, 1, 1),
                (1, 70, 33),
                (3, 200, 64),
                (4, 17, 16),
                (5, 64, 576),
                (9, 50, 20),
                (16, 300, 128),
                (23, 65, 47),
                (40, 96, 31),
                (8, 3072, 3),
            ] {
                check::<f32>(cpu, m, n, k);
                check::<bf16>(cpu, m, n, k);
                check::<f16>(cpu, m, n, k);
            }
        });
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
        let w = PackedMatrix::pack(&w, k).unwrap();
        crate::testing::every_path(|cpu| {
            let mut all = vec![0.0; 13 * n];
            linear(cpu, &x, &w, &mut all, false).unwrap();
            for i in 0..13 {
                let mut one = vec![0.0; n];
                linear(cpu, &x[i * k..(i + 1) * k], &w, &mut one, false).unwrap();
                assert_eq!(one, all[i * n..(i + 1) * n], "{cpu} row {i}");
            }
        });
    }

    #[test]
    fn bad_lengths_are_errors() {
        let cpu = Cpu::scalar();
        let mut y = [0.0f32; 4];
        assert!(PackedMatrix::pack(&[1.0f32; 4], 0).is_err());
        assert!(PackedMatrix::pack(&[1.0f32; 5], 2).is_err());
        let w = PackedMatrix::pack(&[1.0f32; 4], 2).unwrap();
        assert!(linear(cpu, &[1.0; 5], &w, &mut y, false).is_err());
        assert!(linear(cpu, &[1.0; 4], &w, &mut y[..3], false).is_err());
        assert!(linear(cpu, &[], &w, &mut [], false).is_ok());
        let empty = PackedMatrix::pack(&[] as &[f32], 2).unwrap();
        assert!(linear(cpu, &[1.0; 4], &empty, &mut [], false).is_ok());
    }
}
