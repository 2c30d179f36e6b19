//! The product kernel, written once over [`QLanes`] (the handful of integer-vector
//! operations it needs) and compiled per instruction set in `x86.rs` / here for the
//! scalar path.
//!
//! A tile is `RW` weight rows by `RX` activation rows. For each block position the `RW`
//! weight blocks are decoded once into registers and multiplied with the block of each of
//! the `RX` activation rows, so a weight byte is read from memory once per call and
//! decoded once per `RX` rows; the integer sums of a block are scaled by `d_w * d_x` and
//! added to f32 accumulators, and the minimum / offset term `m_w * s_x` is added
//! separately.

use super::blocks::{ActBlock, QuantType, QK};

/// The weight type as a const parameter, so the per-type branches fold away.
pub(crate) const T_Q4_0: u8 = 0;
pub(crate) const T_Q4_1: u8 = 1;
pub(crate) const T_Q8_0: u8 = 2;

pub(crate) const fn type_code(ty: QuantType) -> u8 {
    match ty {
        QuantType::Q4_0 => T_Q4_0,
        QuantType::Q4_1 => T_Q4_1,
        QuantType::Q8_0 => T_Q8_0,
    }
}

/// Integer-vector operations over one block of 32 values.
pub(crate) trait QLanes: Copy {
    /// f32 accumulator.
    type Acc: Copy;
    /// A decoded weight block.
    type W: Copy;
    /// A loaded activation block.
    type X: Copy;
    fn zero(self) -> Self::Acc;
    fn zero_w(self) -> Self::W;
    fn f16(self, bits: u16) -> f32;
    /// 16 bytes of nibbles as 32 unsigned values in value order (low nibbles first).
    fn nibbles(self, qs: &[u8]) -> Self::W;
    /// 32 signed bytes.
    fn signed(self, qs: &[u8]) -> Self::W;
    fn load_x(self, q: &[i8; QK]) -> Self::X;
    /// `acc + scale * sum(w * x)`, `w` from [`QLanes::nibbles`].
    fn fma_unsigned(self, acc: Self::Acc, w: Self::W, x: Self::X, scale: f32) -> Self::Acc;
    /// `acc + scale * sum(w * x)`, `w` from [`QLanes::signed`].
    fn fma_signed(self, acc: Self::Acc, w: Self::W, x: Self::X, scale: f32) -> Self::Acc;
    fn sum(self, acc: Self::Acc) -> f32;
}

/// What one task computes: weight rows `w` (`n` rows of `nb` blocks, the task's share),
/// activation rows `x` (`m` rows of `nb` blocks), outputs `out[i][j]` for activation row
/// `i` and weight row `j`.
pub(crate) struct Task<'a, 'o> {
    pub w: &'a [u8],
    pub n: usize,
    pub nb: usize,
    pub x: &'a [ActBlock],
    pub out: &'o mut [&'a mut [f32]],
    pub accumulate: bool,
}

#[inline(always)]
pub(crate) fn run<Q: QLanes, const T: u8, const RW: usize, const RX: usize>(q: Q, t: &mut Task) {
    let m = t.out.len();
    let mut j = 0;
    while j < t.n {
        if j + RW <= t.n {
            let mut i = 0;
            while i + RX <= m {
                tile::<Q, T, RW, RX>(q, t, j, i);
                i += RX;
            }
            while i < m {
                tile::<Q, T, RW, 1>(q, t, j, i);
                i += 1;
            }
            j += RW;
        } else {
            for i in 0..m {
                tile::<Q, T, 1, 1>(q, t, j, i);
            }
            j += 1;
        }
    }
}

#[inline(always)]
fn tile<Q: QLanes, const T: u8, const RW: usize, const RX: usize>(
    q: Q,
    t: &mut Task,
    j0: usize,
    i0: usize,
) {
    let bb = match T {
        T_Q4_0 => 18,
        T_Q4_1 => 20,
        _ => 34,
    };
    let off = if T == T_Q4_1 { 4 } else { 2 };
    let nb = t.nb;
    let row_bytes = nb * bb;
    let w_rows: [&[u8]; RW] =
        std::array::from_fn(|r| &t.w[(j0 + r) * row_bytes..(j0 + r + 1) * row_bytes]);
    let x_rows: [&[ActBlock]; RX] = std::array::from_fn(|i| &t.x[(i0 + i) * nb..(i0 + i + 1) * nb]);
    let mut acc = [[q.zero(); RW]; RX];
    let mut extra = [[0.0f32; RW]; RX];
    for b in 0..nb {
        let mut dw = [0.0f32; RW];
        let mut mw = [0.0f32; RW];
        let mut wv = [q.zero_w(); RW];
        for r in 0..RW {
            let blk = &w_rows[r][b * bb..(b + 1) * bb];
            dw[r] = q.f16(u16::from_le_bytes([blk[0], blk[1]]));
            mw[r] = match T {
                T_Q4_0 => -8.0 * dw[r],
                T_Q4_1 => q.f16(u16::from_le_bytes([blk[2], blk[3]])),
                _ => 0.0,
            };
            wv[r] = if T == T_Q8_0 {
                q.signed(&blk[off..])
            } else {
                q.nibbles(&blk[off..])
            };
        }
        for i in 0..RX {
            let xb = &x_rows[i][b];
            let xv = q.load_x(&xb.q);
            for r in 0..RW {
                let scale = dw[r] * xb.d;
                acc[i][r] = if T == T_Q8_0 {
                    q.fma_signed(acc[i][r], wv[r], xv, scale)
                } else {
                    q.fma_unsigned(acc[i][r], wv[r], xv, scale)
                };
                if T != T_Q8_0 {
                    extra[i][r] += mw[r] * xb.s;
                }
            }
        }
    }
    for i in 0..RX {
        let row = &mut t.out[i0 + i][j0..j0 + RW];
        for r in 0..RW {
            let v = q.sum(acc[i][r]) + extra[i][r];
            if t.accumulate {
                row[r] += v;
            } else {
                row[r] = v;
            }
        }
    }
}

/// The scalar path: the specification of the integer sums, one lane.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScalarQ;

impl QLanes for ScalarQ {
    type Acc = f32;
    type W = [i16; QK];
    type X = [i16; QK];
    fn zero(self) -> f32 {
        0.0
    }
    fn zero_w(self) -> [i16; QK] {
        [0; QK]
    }
    fn f16(self, bits: u16) -> f32 {
        half::f16::from_bits(bits).to_f32()
    }
    fn nibbles(self, qs: &[u8]) -> [i16; QK] {
        std::array::from_fn(|j| {
            let b = qs[j % (QK / 2)];
            i16::from(if j < QK / 2 { b & 0x0f } else { b >> 4 })
        })
    }
    fn signed(self, qs: &[u8]) -> [i16; QK] {
        std::array::from_fn(|j| i16::from(qs[j].cast_signed()))
    }
    fn load_x(self, q: &[i8; QK]) -> [i16; QK] {
        q.map(i16::from)
    }
    fn fma_unsigned(self, acc: f32, w: [i16; QK], x: [i16; QK], scale: f32) -> f32 {
        self.fma_signed(acc, w, x, scale)
    }
    fn fma_signed(self, acc: f32, w: [i16; QK], x: [i16; QK], scale: f32) -> f32 {
        let s: i32 = w
            .iter()
            .zip(&x)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        #[allow(clippy::cast_precision_loss)] // |s| <= 32 * 128 * 127 < 2^24: exact
        let s = s as f32;
        acc + scale * s
    }
    fn sum(self, acc: f32) -> f32 {
        acc
    }
}

pub(crate) fn run_scalar(ty: QuantType, t: &mut Task) {
    match type_code(ty) {
        T_Q4_0 => run::<ScalarQ, T_Q4_0, 4, 1>(ScalarQ, t),
        T_Q4_1 => run::<ScalarQ, T_Q4_1, 4, 1>(ScalarQ, t),
        _ => run::<ScalarQ, T_Q8_0, 4, 1>(ScalarQ, t),
    }
}
