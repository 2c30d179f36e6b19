//! GGML's quantized block layouts, their dequantization (the specification every product
//! path is tested against) and the int8 quantization of activations.
//!
//! Every type stores 32 values per block with an f16 scale `d`:
//! - `Q4_0`: `d, nibbles[16]` (18 bytes), value `d * (q - 8)`;
//! - `Q4_1`: `d, m, nibbles[16]` (20 bytes), value `d * q + m`;
//! - `Q8_0`: `d, q[32]` (34 bytes, `q` signed), value `d * q`.
//!
//! In the 4-bit types the low nibble of byte `j` is value `j` and the high nibble value
//! `j + 16`.
//!
//! For the products, rows are regrouped by eight ([`pack`]): per group and block position,
//! the eight scales (f16), the eight minimums (`Q4_1`), then the quantized bytes in loads
//! of 32: load `c` holds bytes `4c..4c + 4` of each of the eight rows in turn. One 32-byte
//! load then puts a row in each 32-bit lane, so a dot-product instruction with four
//! activation bytes broadcast to every lane sums eight rows at once; in the 4-bit types
//! load `c`'s low nibbles are values `4c..4c + 4` and its high nibbles `16 + 4c..`, i.e.
//! chunk `c + 4`. The same bytes as the file, in another order (padding rows are zeros).

use half::f16;

/// Values per block.
pub const QK: usize = 32;

/// A quantized weight type the products read directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// 4-bit, scale only (`d * (q - 8)`).
    Q4_0,
    /// 4-bit, scale and minimum (`d * q + m`).
    Q4_1,
    /// 8-bit signed, scale only (`d * q`).
    Q8_0,
}

impl QuantType {
    /// GGML's name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q8_0 => "Q8_0",
        }
    }

    /// Bytes per block of [`QK`] values.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }

    /// Offset of the quantized values within a block (after the scale, and the minimum).
    pub(crate) const fn qs_offset(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q8_0 => 2,
            Self::Q4_1 => 4,
        }
    }
}

/// The f16 at `b[at..at + 2]` as f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantizes whole blocks of `bytes` into `out` (`out.len() / QK` blocks; the caller
/// checked `bytes` holds that many).
pub(crate) fn dequantize(ty: QuantType, bytes: &[u8], out: &mut [f32]) {
    for (x, b) in out
        .chunks_exact_mut(QK)
        .zip(bytes.chunks_exact(ty.block_bytes()))
    {
        let d = f16_at(b, 0);
        let qs = &b[ty.qs_offset()..];
        match ty {
            QuantType::Q4_0 | QuantType::Q4_1 => {
                let (scale, base) = if ty == QuantType::Q4_0 {
                    (d, -8.0 * d)
                } else {
                    (d, f16_at(b, 2))
                };
                for j in 0..QK / 2 {
                    x[j] = f32::from(qs[j] & 0x0f) * scale + base;
                    x[j + QK / 2] = f32::from(qs[j] >> 4) * scale + base;
                }
            }
            QuantType::Q8_0 => {
                for (xi, &q) in x.iter_mut().zip(&qs[..QK]) {
                    *xi = f32::from(q.cast_signed()) * d;
                }
            }
        }
    }
}

/// One block of an activation row quantized to int8: value `d * q[j]`, `qsum = sum(q)` and
/// `s = d * qsum` (the terms the asymmetric and offset weight types need).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(8))]
pub(crate) struct ActBlock {
    pub d: f32,
    pub s: f32,
    pub qsum: i32,
    pub q: [i8; QK],
}

/// Quantizes `x` (a multiple of [`QK`] long) block by block: `d = max|x| / 127`, each value
/// rounded to the nearest multiple of `d`. A block of zeros gets `d = 0`; a block holding a
/// non-finite value gets a NaN scale and sum, so the product is NaN as the f32 path's is.
pub(crate) fn quantize_row(x: &[f32], out: &mut [ActBlock]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let nonfinite = xs.iter().any(|v| !v.is_finite());
        if nonfinite {
            *b = ActBlock {
                d: f32::NAN,
                s: f32::NAN,
                qsum: 0,
                q: [0; QK],
            };
            continue;
        }
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        // Round to nearest (ties to even) by adding and subtracting 1.5 * 2^23, which
        // vectorizes with baseline SSE2 (`f32::round` is a library call there).
        const MAGIC: f32 = 12_582_912.0;
        let mut sum = 0i32;
        for (q, &v) in b.q.iter_mut().zip(xs) {
            // |v * inv| <= 127 (up to rounding of inv): the cast saturates, never wraps.
            #[allow(clippy::cast_possible_truncation)]
            let r = ((v * inv + MAGIC) - MAGIC).clamp(-127.0, 127.0) as i8;
            *q = r;
            sum += i32::from(r);
        }
        b.d = d;
        b.qsum = sum;
        #[allow(clippy::cast_precision_loss)] // |sum| <= 32 * 127
        {
            b.s = d * sum as f32;
        }
    }
}

/// Rows per packed group.
pub(crate) const GROUP: usize = 8;

/// Bytes of one packed group at one block position.
pub(crate) const fn group_block_bytes(ty: QuantType) -> usize {
    GROUP * ty.block_bytes()
}

/// Bytes of quantized values per block of one row.
const fn qs_bytes(ty: QuantType) -> usize {
    match ty {
        QuantType::Q4_0 | QuantType::Q4_1 => QK / 2,
        QuantType::Q8_0 => QK,
    }
}

/// Regroups `rows` rows of `nb` GGML blocks (`data`, the file's layout) into groups of
/// eight rows (the last padded with zero rows), as the module docs describe.
pub(crate) fn pack(ty: QuantType, rows: usize, nb: usize, data: &[u8]) -> Vec<u8> {
    let bb = ty.block_bytes();
    let gbb = group_block_bytes(ty);
    let groups = rows.div_ceil(GROUP);
    let mut out = vec![0u8; groups * nb * gbb];
    for r in 0..rows {
        let (g, j) = (r / GROUP, r % GROUP);
        for b in 0..nb {
            let src = &data[(r * nb + b) * bb..(r * nb + b + 1) * bb];
            let dst = &mut out[(g * nb + b) * gbb..(g * nb + b + 1) * gbb];
            dst[2 * j..2 * j + 2].copy_from_slice(&src[..2]);
            let mut at = 2 * GROUP;
            if ty == QuantType::Q4_1 {
                dst[at + 2 * j..at + 2 * j + 2].copy_from_slice(&src[2..4]);
                at += 2 * GROUP;
            }
            let qs = &src[ty.qs_offset()..];
            for i in 0..qs_bytes(ty) {
                dst[at + (i / 4) * 32 + j * 4 + i % 4] = qs[i];
            }
        }
    }
    out
}

/// Row `r`'s blocks in the file's layout, recovered from packed groups.
pub(crate) fn unpack_row(ty: QuantType, nb: usize, packed: &[u8], r: usize) -> Vec<u8> {
    let bb = ty.block_bytes();
    let gbb = group_block_bytes(ty);
    let (g, j) = (r / GROUP, r % GROUP);
    let mut out = vec![0u8; nb * bb];
    for b in 0..nb {
        let src = &packed[(g * nb + b) * gbb..(g * nb + b + 1) * gbb];
        let dst = &mut out[b * bb..(b + 1) * bb];
        dst[..2].copy_from_slice(&src[2 * j..2 * j + 2]);
        let mut at = 2 * GROUP;
        if ty == QuantType::Q4_1 {
            dst[2..4].copy_from_slice(&src[at + 2 * j..at + 2 * j + 2]);
            at += 2 * GROUP;
        }
        let off = ty.qs_offset();
        for i in 0..qs_bytes(ty) {
            dst[off + i] = src[at + (i / 4) * 32 + j * 4 + i % 4];
        }
    }
    out
}
