//! Weights packed for [`crate::linear`]: panels of [`PANEL`] output features, each panel
//! `[k, PANEL]`, so the product's micro-kernel loads one panel row per `k` step and the
//! weights stream from memory in order.

use crate::error::{KernelError, Result};
use crate::store::dtype::KvElem;

/// Output features per panel of a [`PackedMatrix`].
pub const PANEL: usize = 32;

/// A `[rows, cols]` matrix (rows = output features) stored as panels of [`PANEL`] rows,
/// each panel column-major (`[cols, PANEL]`), the last one padded with zeros.
#[derive(Clone)]
pub struct PackedMatrix<T> {
    rows: usize,
    cols: usize,
    data: Vec<T>,
}

impl<T> std::fmt::Debug for PackedMatrix<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedMatrix[{}x{}]", self.rows, self.cols)
    }
}

impl<T: KvElem> PackedMatrix<T> {
    /// Packs a row-major `[w.len() / cols, cols]` matrix.
    pub fn pack(w: &[T], cols: usize) -> Result<Self> {
        Self::build(w.len(), cols, |i| w[i])
    }

    /// Packs a row-major f32 matrix, rounding each element to `T`.
    pub fn from_f32(w: &[f32], cols: usize) -> Result<Self> {
        Self::build(w.len(), cols, |i| T::from_f32(w[i]))
    }

    fn build(len: usize, cols: usize, get: impl Fn(usize) -> T) -> Result<Self> {
        if cols == 0 {
            return Err(KernelError::InvalidShape(
                "packed matrix: cols must be positive".into(),
            ));
        }
        if !len.is_multiple_of(cols) {
            return Err(KernelError::LengthMismatch {
                what: "packed matrix data",
                expected: len / cols * cols,
                actual: len,
            });
        }
        let rows = len / cols;
        let mut data =
            crate::store::buffer::zeroed_on_huge_pages(rows.div_ceil(PANEL) * PANEL * cols);
        // Panel by panel, so the writes of one panel stay in cache.
        for j in 0..rows {
            let base = j / PANEL * cols * PANEL + j % PANEL;
            for p in 0..cols {
                data[base + p * PANEL] = get(j * cols + p);
            }
        }
        Ok(Self { rows, cols, data })
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features, `k`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The panels, one after another (`rows` rounded up to whole panels, times `cols`).
    pub(crate) fn panels(&self) -> &[T] {
        &self.data
    }

    /// Bytes held, padding included.
    pub fn bytes(&self) -> usize {
        self.data.len() * size_of::<T>()
    }

    /// Copies row `r` into `out` (`cols` long) as f32.
    pub fn row_into(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if r >= self.rows {
            return Err(KernelError::InvalidShape(format!(
                "packed matrix: row {r} of {}",
                self.rows
            )));
        }
        if out.len() != self.cols {
            return Err(KernelError::LengthMismatch {
                what: "packed matrix row",
                expected: self.cols,
                actual: out.len(),
            });
        }
        let panel = &self.data[r / PANEL * self.cols * PANEL..][..self.cols * PANEL];
        for (o, col) in out.iter_mut().zip(panel.chunks_exact(PANEL)) {
            *o = col[r % PANEL].to_f32();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn packing_keeps_every_row() {
        for (n, k) in [(1, 1), (31, 5), (33, 7), (64, 3)] {
            let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
            let p = PackedMatrix::<f32>::pack(&w, k).unwrap();
            let b = PackedMatrix::<bf16>::from_f32(&w, k).unwrap();
            assert_eq!((p.rows(), p.cols()), (n, k));
            assert_eq!(p.bytes(), n.div_ceil(PANEL) * PANEL * k * 4);
            let mut row = vec![0.0; k];
            for j in 0..n {
                p.row_into(j, &mut row).unwrap();
                assert_eq!(row, w[j * k..(j + 1) * k]);
                b.row_into(j, &mut row).unwrap();
                for (a, &e) in row.iter().zip(&w[j * k..(j + 1) * k]) {
                    assert_eq!(a.to_bits(), bf16::from_f32(e).to_f32().to_bits());
                }
            }
            assert!(p.row_into(n, &mut row).is_err());
            assert!(p.row_into(0, &mut row[..k - 1]).is_err());
        }
    }
}
