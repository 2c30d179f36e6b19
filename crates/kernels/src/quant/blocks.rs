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

/// One block of an activation row quantized to int8: value `d * q[j]`, and `s = d * sum(q)`
/// (the term the asymmetric and offset weight types need).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(8))]
pub(crate) struct ActBlock {
    pub d: f32,
    pub s: f32,
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
                q: [0; QK],
            };
            continue;
        }
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.q.iter_mut().zip(xs) {
            // |v * inv| <= 127 (up to rounding of inv): the cast saturates, never wraps.
            #[allow(clippy::cast_possible_truncation)]
            let r = (v * inv).round().clamp(-127.0, 127.0) as i8;
            *q = r;
            sum += i32::from(r);
        }
        b.d = d;
        #[allow(clippy::cast_precision_loss)] // |sum| <= 32 * 127
        {
            b.s = d * sum as f32;
        }
    }
}
