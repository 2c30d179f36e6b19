//! Products on GGML's quantized blocks, never expanded in memory: `y (+)= x W^T` for a
//! [`QuantMatrix`] (`Q4_0`, `Q4_1`, `Q8_0` rows as a GGUF file stores them). Each row of
//! `x` is quantized to int8 per block of 32 on the fly (with the block sum the
//! asymmetric and offset types need) and multiplied with integer dot products:
//! AVX-512 VNNI (`vpdpbusd`) where the CPU has it, AVX2 (`vpmaddubsw`) otherwise, and a
//! scalar path that is the specification. aarch64 runs the scalar path.
//!
//! - `blocks.rs`: the block layouts, dequantization, activation quantization;
//! - `tile.rs`: the kernel over a tile of weight rows x activation rows, generic over
//!   the integer operations, and the scalar path;
//! - `x86.rs`: the AVX2 and VNNI operations (their entries are in `cpu/entry.rs`).

pub(crate) mod blocks;
pub(crate) mod tile;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

use crate::cpu::entry::{run_int8, Int8Op};
use crate::cpu::Cpu;
use crate::error::{KernelError, Result};
use crate::products::quant::blocks::{
    dequantize, dequantize_packed_row, pack, ActBlock, QuantType, GROUP, QK,
};
use crate::products::quant::tile::{dispatch_type, run, QLanes, Task};
use crate::products::split::{product_rows, split};
use rayon::prelude::*;

/// Below this many activation values they are quantized on the calling thread: a few
/// microseconds, less than handing rows to the pool (a decode step of 16 sequences
/// quantizes 9,216-24,576 values per product).
const PARALLEL_MIN_QUANTIZE: usize = 1 << 16;

/// A `[rows, cols]` matrix of quantized blocks. Made from the layout of a GGUF tensor
/// (row-major, each row `cols / 32` blocks, `cols` its first dimension) and held with its
/// rows regrouped by eight for the products: the same bytes in another order (`blocks.rs`).
#[derive(Clone)]
pub struct QuantMatrix {
    ty: QuantType,
    rows: usize,
    cols: usize,
    /// Packed groups of eight rows.
    data: Vec<u8>,
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QuantMatrix[{}x{}, {}]",
            self.rows,
            self.cols,
            self.ty.name()
        )
    }
}

impl QuantMatrix {
    /// Takes `data` as `rows` rows of whole blocks of `ty` (the file's layout); `cols` must
    /// be a positive multiple of the block's values (32, or 256 for the k-quants) and `data`
    /// exactly that long.
    pub fn new(ty: QuantType, rows: usize, cols: usize, data: &[u8]) -> Result<Self> {
        let bv = ty.block_values();
        if cols == 0 || !cols.is_multiple_of(bv) {
            return Err(KernelError::InvalidShape(format!(
                "{} matrix: {cols} columns is not a positive multiple of {bv}",
                ty.name()
            )));
        }
        let expected = (cols / bv)
            .checked_mul(ty.block_bytes())
            .and_then(|r| r.checked_mul(rows))
            .ok_or_else(|| {
                KernelError::InvalidShape(format!("{} matrix {rows}x{cols} overflows", ty.name()))
            })?;
        if data.len() != expected {
            return Err(KernelError::LengthMismatch {
                what: "quantized matrix bytes",
                expected,
                actual: data.len(),
            });
        }
        Ok(Self {
            ty,
            rows,
            cols,
            data: pack(ty, rows, cols / bv, data),
        })
    }

    /// Quantizes row-major f32 `data` (`rows * cols`) the way GGML's reference quantizers
    /// do: `Q8_0` `d = max|x| / 127`; `Q4_0` `d = x_absmax / -8` (signed), `q = x / d + 8`;
    /// `Q4_1` `d = (max - min) / 15`, `m = min`. For tests and random models; files bring
    /// their own blocks. The k-quants are read from files only.
    pub fn quantize(ty: QuantType, rows: usize, cols: usize, data: &[f32]) -> Result<Self> {
        if ty.block_values() != QK {
            return Err(KernelError::InvalidShape(format!(
                "{} is read from files, not quantized here",
                ty.name()
            )));
        }
        if data.len() != rows.saturating_mul(cols) {
            return Err(KernelError::LengthMismatch {
                what: "matrix to quantize",
                expected: rows.saturating_mul(cols),
                actual: data.len(),
            });
        }
        if cols == 0 || !cols.is_multiple_of(QK) {
            return Err(KernelError::InvalidShape(format!(
                "{cols} columns is not a positive multiple of {QK}"
            )));
        }
        let mut out = Vec::with_capacity(data.len() / QK * ty.block_bytes());
        let h = |v: f32| half::f16::from_f32(v).to_le_bytes();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped first
        for x in data.chunks_exact(QK) {
            match ty {
                QuantType::Q8_0 => {
                    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&h(d));
                    out.extend(
                        x.iter().map(|v| {
                            ((v * inv).round().clamp(-127.0, 127.0) as i8).cast_unsigned()
                        }),
                    );
                }
                QuantType::Q4_0 => {
                    let max = x
                        .iter()
                        .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                    let d = max / -8.0;
                    let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
                    out.extend_from_slice(&h(d));
                    let q = |v: f32| (v * inv + 8.5).clamp(0.0, 15.0) as u8;
                    out.extend((0..QK / 2).map(|j| q(x[j]) | (q(x[j + QK / 2]) << 4)));
                }
                QuantType::Q4K | QuantType::Q5K | QuantType::Q6K => unreachable!("refused above"),
                QuantType::Q4_1 => {
                    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
                    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let d = (max - min) / 15.0;
                    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                    out.extend_from_slice(&h(d));
                    out.extend_from_slice(&h(min));
                    let q = |v: f32| ((v - min) * inv + 0.5).clamp(0.0, 15.0) as u8;
                    out.extend((0..QK / 2).map(|j| q(x[j]) | (q(x[j + QK / 2]) << 4)));
                }
            }
        }
        Self::new(ty, rows, cols, &out)
    }

    /// The block type.
    pub fn ty(&self) -> QuantType {
        self.ty
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Row `r` dequantized into `out` (`cols` long).
    pub fn row_into(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if r >= self.rows {
            return Err(KernelError::InvalidShape(format!(
                "row {r} of a {}-row matrix",
                self.rows
            )));
        }
        if out.len() != self.cols {
            return Err(KernelError::LengthMismatch {
                what: "dequantized row",
                expected: self.cols,
                actual: out.len(),
            });
        }
        dequantize_packed_row(
            self.ty,
            self.cols / self.ty.block_values(),
            &self.data,
            r,
            out,
        );
        Ok(())
    }
}

/// Dequantizes `bytes`, whole blocks of `ty`, into `out` (`out.len()` values).
pub fn dequantize_blocks(ty: QuantType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let blocks = out.len() / ty.block_values();
    if !out.len().is_multiple_of(ty.block_values())
        || Some(bytes.len()) != blocks.checked_mul(ty.block_bytes())
    {
        return Err(KernelError::LengthMismatch {
            what: "quantized blocks",
            expected: blocks.saturating_mul(ty.block_bytes()),
            actual: bytes.len(),
        });
    }
    dequantize(ty, bytes, out);
    Ok(())
}

/// `y = x W^T`, or `y += x W^T` when `accumulate`: `x` is `[m, k]` and `y` `[m, n]`,
/// row-major, for `W` `[n, k]` quantized; `m` follows from the lengths. Weight rows are
/// split across the rayon pool; each task reads its rows once for all `m` rows of `x`.
///
/// ```
/// use pagedattn_kernels::{qlinear, Cpu, QuantMatrix, QuantType};
/// let w: Vec<f32> = (0..64).map(|i| (i % 5) as f32 - 2.0).collect(); // 2 rows x 32
/// let w = QuantMatrix::quantize(QuantType::Q8_0, 2, 32, &w)?;
/// let x = [0.5f32; 32];
/// let mut y = [0.0f32; 2];
/// qlinear(Cpu::selected(), &x, &w, &mut y, false)?;
/// assert!((y[0] - 0.5 * (0..32).map(|i| (i % 5) as f32 - 2.0).sum::<f32>()).abs() < 0.1);
/// # Ok::<(), pagedattn_kernels::KernelError>(())
/// ```
/// The integer path is the `cpu`'s: AVX-512 VNNI where it has it, AVX2 under AVX2 or
/// AVX-512, else scalar.
pub fn qlinear(
    cpu: Cpu,
    x: &[f32],
    w: &QuantMatrix,
    y: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let (n, k) = (w.rows, w.cols);
    let m = product_rows(["qlinear x", "qlinear y"], x, k, y, n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let nb = k / QK;
    let mut xa = vec![ActBlock::default(); m * nb];
    let quantize = |x: &[f32], out: &mut [ActBlock]| run_int8(cpu, Quantize { x, out });
    if m * k >= PARALLEL_MIN_QUANTIZE {
        x.par_chunks(k)
            .zip(xa.par_chunks_mut(nb))
            .for_each(|(row, blocks)| quantize(row, blocks));
    } else {
        for (row, blocks) in x.chunks_exact(k).zip(xa.chunks_exact_mut(nb)) {
            quantize(row, blocks);
        }
    }
    let gb = k / w.ty.block_values() * w.ty.unit_bytes();
    // Whole groups of eight rows per task, two tasks per thread so a slow thread does not
    // hold the call.
    split((m, n, k), y, GROUP, 2, |c0, c1, out| {
        let rows = out[0].len();
        let task = Task {
            w: &w.data[c0 / GROUP * gb..c1 / GROUP * gb],
            n: rows,
            nb,
            x: &xa,
            out,
            accumulate,
        };
        run_int8(cpu, Product { ty: w.ty, task });
    });
    Ok(())
}

/// Quantizes one activation row, block by block, with the path's quantizer.
struct Quantize<'a> {
    x: &'a [f32],
    out: &'a mut [ActBlock],
}

impl Int8Op for Quantize<'_> {
    type Output = ();

    #[inline(always)]
    fn run<Q: QLanes, const RX: usize>(self, q: Q) {
        for (b, xs) in self.out.iter_mut().zip(self.x.chunks_exact(QK)) {
            q.quantize_block(xs, b);
        }
    }
}

/// One task of a product: a range of weight-row groups for every activation row.
struct Product<'a, 'o, 'r> {
    ty: QuantType,
    task: Task<'a, 'o, 'r>,
}

impl Int8Op for Product<'_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn run<Q: QLanes, const RX: usize>(mut self, q: Q) {
        dispatch_type!(self.ty, run, q, RX, &mut self.task);
    }
}

#[cfg(test)]
mod tests;
