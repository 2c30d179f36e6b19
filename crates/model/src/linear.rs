//! Matrix products `y (+)= x W^T` for `[out, in]` weights.
//!
//! Up to [`SKINNY_MAX_ROWS`] rows (decode batches) go to the kernels crate's
//! [`pagedattn_kernels::linear`], which reads `W` once per call whatever the number of rows
//! (bf16 widened in registers) and splits the output features across the rayon pool. More
//! rows (prefill) go to the `gemm` crate, which packs and blocks for large products and
//! parallelizes itself; bf16 weights are widened into f32 first on that path.

use crate::weights::{Matrix, Store};
use gemm::Parallelism;
use pagedattn_kernels::{linear, Isa};

/// Rows of `x` up to which the weight-streaming kernel beats `gemm` on this kind of CPU:
/// below it the product is bound by reading `W`, which `gemm` does more than once (packing).
const SKINNY_MAX_ROWS: usize = 32;

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
    if m <= SKINNY_MAX_ROWS {
        let isa = Isa::selected();
        let done = match w.store() {
            Store::F32(d) => linear(isa, x, d, k, y, accumulate),
            Store::Bf16(d) => linear(isa, x, d, k, y, accumulate),
        };
        // The shapes come from the model's own matrices and buffers, checked above.
        debug_assert!(done.is_ok(), "{done:?}");
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let widened;
    let data: &[f32] = match w.store() {
        Store::F32(d) => d,
        Store::Bf16(_) => {
            widened = w.rows_f32(0, n);
            &widened
        }
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
    // gemm computes dst = alpha * dst + beta * lhs * rhs, with column/row strides (cs, rs).
    // rhs = W^T is [k, n]: element (i, j) is W[j, i], so rs = 1 and cs = k.
    // SAFETY: the caller guarantees the buffers hold these shapes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y,
            1,
            n as isize,
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
