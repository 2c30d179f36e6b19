//! Matrix products `y (+)= x W^T` for `[out, in]` weights, through the `gemm` crate.
//!
//! Parallelism uses the one global rayon pool. Large batches (prefill) let `gemm`
//! parallelize itself; small ones (decode: one row per sequence) would run its single-
//! threaded matrix-vector path, so the output columns are split into chunks across the pool
//! instead, each chunk a serial `gemm` call (bf16 weights widen each chunk to f32 first).
//! Up to four rows (decode) skip `gemm` for dot products four weight rows at a time.

use crate::dot::dot4;
use crate::weights::{Matrix, Store};
use gemm::Parallelism;
use rayon::prelude::*;

/// Rows of `x` from which `gemm`'s own parallel blocking beats splitting the columns.
const GEMM_PARALLEL_MIN_ROWS: usize = 32;
/// Rows of `x` up to which plain dot products beat `gemm`: with so few rows the product is
/// bound by reading `W` once, which the dot path does in four streams (bf16 widened in
/// registers), while `gemm` packs or runs a single-threaded matrix-vector loop.
const DOT_MAX_ROWS: usize = 4;

/// `y = x W^T` (or `y += x W^T` when `accumulate`), `x: [m, w.cols]`, `y: [m, w.rows]`.
pub(crate) fn matmul(x: &[f32], w: &Matrix, y: &mut [f32], accumulate: bool) {
    let (n, k) = (w.rows(), w.cols());
    if k == 0 || n == 0 {
        return;
    }
    let m = x.len() / k;
    debug_assert_eq!(x.len(), m * k);
    debug_assert_eq!(y.len(), m * n);
    if m == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    if m <= DOT_MAX_ROWS {
        dot_rows(x, w, y, m, accumulate, threads);
        return;
    }
    match w.store() {
        Store::F32(data) if m >= GEMM_PARALLEL_MIN_ROWS || threads == 1 => {
            let par = if threads > 1 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            };
            // SAFETY: `y` is [m, n], `x` is [m, k] and `data` is [n, k] (asserted above and by
            // construction of `Matrix`); all strides describe those row-major layouts.
            unsafe {
                gemm_rows(
                    m,
                    n,
                    k,
                    y.as_mut_ptr(),
                    x.as_ptr(),
                    data.as_ptr(),
                    accumulate,
                    par,
                );
            }
        }
        store => {
            // Chunks of output columns; a multiple of 16 keeps the microkernel's tiles full.
            let chunk = n.div_ceil(threads * 2).next_multiple_of(16).max(32);
            let out = SendPtr(y.as_mut_ptr());
            (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
                let (start, end) = (c * chunk, ((c + 1) * chunk).min(n));
                let widened;
                let rows: &[f32] = match store {
                    Store::F32(data) => &data[start * k..end * k],
                    Store::Bf16(_) => {
                        widened = w.rows_f32(start, end);
                        &widened
                    }
                };
                let dst = out.get();
                // SAFETY: each task writes only columns `start..end` of `y` (row stride n), so
                // tasks never overlap; `rows` is the matching [end - start, k] slice of W.
                unsafe {
                    gemm_chunk(
                        m,
                        n,
                        end - start,
                        k,
                        dst.add(start),
                        x.as_ptr(),
                        rows.as_ptr(),
                        accumulate,
                    );
                }
            });
        }
    }
}

/// Small `m`: each task takes a range of output features and, per feature, reads its weight
/// row once (bf16 widened in registers) and dots it with every row of `x`.
fn dot_rows(x: &[f32], w: &Matrix, y: &mut [f32], m: usize, accumulate: bool, threads: usize) {
    let (n, k) = (w.rows(), w.cols());
    let chunk = n.div_ceil(threads * 4).max(16);
    let out = SendPtr(y.as_mut_ptr());
    (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let (start, end) = (c * chunk, ((c + 1) * chunk).min(n));
        let mut j = start;
        while j < end {
            let group = (end - j).min(4);
            for i in 0..m {
                let xi = &x[i * k..(i + 1) * k];
                let row = |r: usize| (j + r.min(group - 1)) * k;
                let v = match w.store() {
                    Store::F32(d) => dot4(xi, [0, 1, 2, 3].map(|r| &d[row(r)..row(r) + k])),
                    Store::Bf16(d) => dot4(xi, [0, 1, 2, 3].map(|r| &d[row(r)..row(r) + k])),
                };
                for (r, &v) in v.iter().enumerate().take(group) {
                    // SAFETY: `i * n + j + r < m * n == y.len()`, and columns `start..end`
                    // belong to this task alone, so no other task touches this element.
                    unsafe {
                        let p = out.get().add(i * n + j + r);
                        *p = if accumulate { *p + v } else { v };
                    }
                }
            }
            j += group;
        }
    });
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the pointer is only used to write disjoint column ranges (see `matmul`).
unsafe impl Send for SendPtr {}
// SAFETY: as above; shared only to hand each task its own range.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `y[m, n] (+)= x[m, k] * W[n, k]^T`, all row-major and dense.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_rows(
    m: usize,
    n: usize,
    k: usize,
    y: *mut f32,
    x: *const f32,
    w: *const f32,
    acc: bool,
    par: Parallelism,
) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm_chunk_par(m, n, n, k, y, x, w, acc, par) }
}

/// Columns `0..nc` of a row-major `y` whose row stride is `ld`: `y[:, ..nc] (+)= x * W^T`
/// with `W` `[nc, k]`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_chunk(
    m: usize,
    ld: usize,
    nc: usize,
    k: usize,
    y: *mut f32,
    x: *const f32,
    w: *const f32,
    acc: bool,
) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm_chunk_par(m, ld, nc, k, y, x, w, acc, Parallelism::None) }
}

#[allow(clippy::too_many_arguments)]
unsafe fn gemm_chunk_par(
    m: usize,
    ld: usize,
    nc: usize,
    k: usize,
    y: *mut f32,
    x: *const f32,
    w: *const f32,
    acc: bool,
    par: Parallelism,
) {
    // gemm computes dst = alpha * dst + beta * lhs * rhs, with column/row strides (cs, rs).
    // rhs = W^T is [k, nc]: element (i, j) is W[j, i], so rs = 1 and cs = k.
    // SAFETY: the caller guarantees the buffers hold these shapes.
    unsafe {
        gemm::gemm(
            m,
            nc,
            k,
            y,
            1,
            ld as isize,
            acc,
            x,
            1,
            k as isize,
            w,
            k as isize,
            1,
            if acc { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::WeightDType;

    fn naive(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum();
            }
        }
        y
    }

    #[test]
    fn matches_naive_for_every_path() {
        for &(m, n, k) in &[
            (1, 70, 33),
            (3, 200, 64),
            (9, 50, 20),
            (40, 130, 17),
            (64, 7, 5),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
                .collect();
            let expect = naive(&x, &w, m, n, k);
            for dtype in [WeightDType::F32, WeightDType::Bf16] {
                let mat = Matrix::new(n, k, w.clone(), dtype);
                let mut y = vec![1.0; m * n];
                matmul(&x, &mat, &mut y, false);
                let tol = if dtype == WeightDType::F32 {
                    1e-4
                } else {
                    1e-1
                };
                for (a, b) in y.iter().zip(&expect) {
                    assert!((a - b).abs() < tol, "{m}x{n}x{k} {dtype:?}: {a} vs {b}");
                }
                matmul(&x, &mat, &mut y, true);
                for (a, b) in y.iter().zip(&expect) {
                    assert!(
                        (a - 2.0 * b).abs() < 2.0 * tol,
                        "accumulate {m}x{n}x{k}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
