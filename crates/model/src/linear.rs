//! Matrix products `y (+)= x W^T` for `[out, in]` weights, every batch size: the kernels
//! crate's [`pagedattn_kernels::linear`] over the packed panels each [`Matrix`] holds
//! (weights read from memory once per call, bf16 widened in registers, output panels split
//! across the rayon pool).

use crate::weights::{Matrix, Store};
use pagedattn_kernels::{linear, qlinear, Cpu, KernelError, QuantMatrix};

impl Matrix {
    /// `y = x W^T` (or `y += x W^T` when `accumulate`) for `x: [m, cols]`, `y: [m, rows]`,
    /// on `cpu`'s path: the product the forward pass runs ([`matmul`]).
    pub fn multiply(
        &self,
        cpu: Cpu,
        x: &[f32],
        y: &mut [f32],
        accumulate: bool,
    ) -> Result<(), KernelError> {
        matmul(cpu, x, self, y, accumulate)
    }
}

/// `y = x W^T` (or `y += x W^T` when `accumulate`), `x: [m, w.cols]`, `y: [m, w.rows]`.
/// Mismatched shapes are an error in every build (a release build must not return a
/// partial product as if it were whole).
pub(crate) fn matmul(
    cpu: Cpu,
    x: &[f32],
    w: &Matrix,
    y: &mut [f32],
    accumulate: bool,
) -> Result<(), KernelError> {
    match w.store() {
        Store::F32(p) => linear(cpu, x, p, y, accumulate),
        Store::Bf16(p) => linear(cpu, x, p, y, accumulate),
        Store::Quant(q) => qlinear(cpu, x, q, y, accumulate),
        Store::Stacked(parts) => {
            // Each part into its own [m, rows] buffer, then into its columns of y.
            let n: usize = parts.iter().map(QuantMatrix::rows).sum();
            let m = y.len() / n.max(1);
            if y.len() != m * n {
                return Err(KernelError::LengthMismatch {
                    what: "linear y",
                    expected: m * n,
                    actual: y.len(),
                });
            }
            let mut col = 0;
            for p in parts {
                let mut part = vec![0.0; m * p.rows()];
                qlinear(cpu, x, p, &mut part, false)?;
                for (yr, pr) in y.chunks_exact_mut(n).zip(part.chunks_exact(p.rows())) {
                    let dst = &mut yr[col..col + p.rows()];
                    if accumulate {
                        dst.iter_mut().zip(pr).for_each(|(d, s)| *d += s);
                    } else {
                        dst.copy_from_slice(pr);
                    }
                }
                col += p.rows();
            }
            Ok(())
        }
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
    fn matches_naive_for_every_shape() {
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
                let mat = Matrix::new(n, k, &w, dtype);
                let mut y = vec![1.0; m * n];
                matmul(Cpu::selected(), &x, &mat, &mut y, false).unwrap();
                let tol = if dtype == WeightDType::F32 {
                    1e-4
                } else {
                    1e-1
                };
                for (a, b) in y.iter().zip(&expect) {
                    assert!((a - b).abs() < tol, "{m}x{n}x{k} {dtype:?}: {a} vs {b}");
                }
                matmul(Cpu::selected(), &x, &mat, &mut y, true).unwrap();
                for (a, b) in y.iter().zip(&expect) {
                    assert!(
                        (a - 2.0 * b).abs() < 2.0 * tol,
                        "accumulate {m}x{n}x{k}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn mismatched_shapes_are_errors_in_every_build() {
        let w = vec![0.5f32; 6 * 4];
        for dtype in [WeightDType::F32, WeightDType::Bf16] {
            let mat = Matrix::new(6, 4, &w, dtype);
            // x of 2 rows x 4, y sized for 3 rows: refused, not half-filled.
            let mut y = vec![0.0; 3 * 6];
            assert!(matmul(Cpu::selected(), &[1.0; 8], &mat, &mut y, false).is_err());
            // x not a whole number of rows.
            let mut y = vec![0.0; 2 * 6];
            assert!(matmul(Cpu::selected(), &[1.0; 7], &mat, &mut y, false).is_err());
            assert!(matmul(Cpu::selected(), &[1.0; 8], &mat, &mut y, false).is_ok());
        }
    }

    #[test]
    #[allow(clippy::float_cmp)] // the same products, computed the same way
    fn stacked_parts_of_different_types_multiply_like_their_parts() {
        use pagedattn_kernels::QuantType;
        let (m, k, n1, n2) = (3, 64, 8, 5);
        let w: Vec<f32> = (0..(n1 + n2) * k)
            .map(|i| ((i * 7 % 19) as f32 - 9.0) / 16.0)
            .collect();
        let q1 = QuantMatrix::quantize(QuantType::Q8_0, n1, k, &w[..n1 * k]).unwrap();
        let q2 = QuantMatrix::quantize(QuantType::Q4_1, n2, k, &w[n1 * k..]).unwrap();
        let mat = Matrix::stacked(vec![q1.clone(), q2.clone()]);
        assert_eq!((mat.rows(), mat.cols()), (n1 + n2, k));
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0)
            .collect();
        let mut y = vec![0.0; m * (n1 + n2)];
        matmul(Cpu::selected(), &x, &mat, &mut y, false).unwrap();
        let (mut y1, mut y2) = (vec![0.0; m * n1], vec![0.0; m * n2]);
        qlinear(Cpu::selected(), &x, &q1, &mut y1, false).unwrap();
        qlinear(Cpu::selected(), &x, &q2, &mut y2, false).unwrap();
        for i in 0..m {
            assert_eq!(
                y[i * (n1 + n2)..i * (n1 + n2) + n1],
                y1[i * n1..(i + 1) * n1]
            );
            assert_eq!(
                y[i * (n1 + n2) + n1..(i + 1) * (n1 + n2)],
                y2[i * n2..(i + 1) * n2]
            );
        }
        let (mut a, mut b) = (vec![0.0; k], vec![0.0; k]);
        mat.row_into(n1 + 2, &mut a);
        q2.row_into(2, &mut b).unwrap();
        assert_eq!(a, b);
        // Wrong output length: an error, not a partial product.
        assert!(matmul(
            Cpu::selected(),
            &x,
            &mat,
            &mut vec![0.0; m * (n1 + n2) - 1],
            false
        )
        .is_err());
    }
}
