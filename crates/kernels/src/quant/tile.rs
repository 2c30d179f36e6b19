//! The product kernel, written once over [`QLanes`] (the integer and float operations it
//! needs on eight 32-bit lanes) and compiled per instruction set in `x86.rs`, and here for
//! the scalar path, which is the specification.
//!
//! A tile is one packed group of eight weight rows by `RX` activation rows. At each block
//! position the group's quantized bytes are loaded (and split into nibbles) once, then for
//! each activation row eight dot-product steps — four activation bytes broadcast against a
//! row per lane — leave the eight rows' integer block sums in the eight lanes, which are
//! scaled by the rows' `d` (a vector) and the activation's `d` and added to f32
//! accumulators, with the minimum / offset term of the 4-bit types. The finished lanes are
//! eight outputs: no horizontal sums.

use super::blocks::{group_block_bytes, ActBlock, QuantType, GROUP, QK};

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

const fn type_of(t: u8) -> QuantType {
    match t {
        T_Q4_0 => QuantType::Q4_0,
        T_Q4_1 => QuantType::Q4_1,
        _ => QuantType::Q8_0,
    }
}

/// Operations on eight 32-bit lanes (`I`: integers or 32 bytes, `F`: f32).
pub(crate) trait QLanes: Copy {
    type I: Copy;
    type F: Copy;
    fn zero_i(self) -> Self::I;
    fn zero_f(self) -> Self::F;
    /// 32 bytes.
    fn load(self, b: &[u8]) -> Self::I;
    fn nib_lo(self, v: Self::I) -> Self::I;
    fn nib_hi(self, v: Self::I) -> Self::I;
    /// Prepares signed weight bytes for [`QLanes::dot_s`].
    fn prep_s(self, v: Self::I) -> Self::I;
    /// Per lane: `acc + sum_t w[4 lane + t] * x4[t]`, `w` unsigned bytes, `x4` signed.
    fn dot_u(self, acc: Self::I, w: Self::I, x4: [i8; 4]) -> Self::I;
    /// The same for weights from [`QLanes::prep_s`] (signed).
    fn dot_s(self, acc: Self::I, w: Self::I, x4: [i8; 4]) -> Self::I;
    /// Corrects a block's [`QLanes::dot_s`] sums given the activation block's sum.
    fn fix_s(self, acc: Self::I, qsum: i32) -> Self::I;
    /// Eight f16 (16 bytes) as f32.
    fn scales(self, b: &[u8]) -> Self::F;
    fn cvt(self, v: Self::I) -> Self::F;
    fn splat(self, x: f32) -> Self::F;
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a * b + c`.
    fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    fn to_array(self, v: Self::F) -> [f32; GROUP];
}

/// What one task computes: packed weight groups `w` (`groups` of them, holding `n` real
/// rows), activation rows `x` (`m` rows of `nb` blocks), outputs `out[i][j]` for activation
/// row `i` and weight row `j` of the task.
pub(crate) struct Task<'a, 'o> {
    pub w: &'a [u8],
    pub n: usize,
    pub nb: usize,
    pub x: &'a [ActBlock],
    pub out: &'o mut [&'a mut [f32]],
    pub accumulate: bool,
}

#[inline(always)]
pub(crate) fn run<Q: QLanes, const T: u8, const RX: usize>(q: Q, t: &mut Task) {
    let m = t.out.len();
    for g in 0..t.n.div_ceil(GROUP) {
        let mut i = 0;
        while i + RX <= m {
            tile::<Q, T, RX>(q, t, g, i);
            i += RX;
        }
        while i < m {
            tile::<Q, T, 1>(q, t, g, i);
            i += 1;
        }
    }
}

#[inline(always)]
fn tile<Q: QLanes, const T: u8, const RX: usize>(q: Q, t: &mut Task, g: usize, i0: usize) {
    let gbb = group_block_bytes(type_of(T));
    let nb = t.nb;
    let wg = &t.w[g * nb * gbb..(g + 1) * nb * gbb];
    let x_rows: [&[ActBlock]; RX] = std::array::from_fn(|i| &t.x[(i0 + i) * nb..(i0 + i + 1) * nb]);
    let mut acc = [q.zero_f(); RX];
    for b in 0..nb {
        let blk = &wg[b * gbb..(b + 1) * gbb];
        let dw = q.scales(&blk[..2 * GROUP]);
        let (mw, qs) = if T == T_Q4_1 {
            (q.scales(&blk[2 * GROUP..4 * GROUP]), &blk[4 * GROUP..])
        } else {
            (q.zero_f(), &blk[2 * GROUP..])
        };
        let mut w = [q.zero_i(); QK / 4];
        if T == T_Q8_0 {
            for (c, wc) in w.iter_mut().enumerate() {
                *wc = q.prep_s(q.load(&qs[c * 32..]));
            }
        } else {
            for k in 0..QK / 8 {
                let v = q.load(&qs[k * 32..]);
                w[k] = q.nib_lo(v);
                w[k + QK / 8] = q.nib_hi(v);
            }
        }
        for i in 0..RX {
            let xb = &x_rows[i][b];
            let mut s = q.zero_i();
            for (c, &wc) in w.iter().enumerate() {
                let x4 = [
                    xb.q[4 * c],
                    xb.q[4 * c + 1],
                    xb.q[4 * c + 2],
                    xb.q[4 * c + 3],
                ];
                s = if T == T_Q8_0 {
                    q.dot_s(s, wc, x4)
                } else {
                    q.dot_u(s, wc, x4)
                };
            }
            if T == T_Q8_0 {
                s = q.fix_s(s, xb.qsum);
            }
            let sf = q.cvt(s);
            acc[i] = match T {
                // sum (q - 8) dw dx xq = dw (dx isum - 8 sx)
                T_Q4_0 => q.fma(q.fma(sf, q.splat(xb.d), q.splat(-8.0 * xb.s)), dw, acc[i]),
                // sum (dw q + mw) dx xq = dw dx isum + mw sx
                T_Q4_1 => q.fma(
                    mw,
                    q.splat(xb.s),
                    q.fma(q.mul(sf, q.splat(xb.d)), dw, acc[i]),
                ),
                _ => q.fma(q.mul(sf, q.splat(xb.d)), dw, acc[i]),
            };
        }
    }
    let j0 = g * GROUP;
    let valid = (t.n - j0).min(GROUP);
    for (i, a) in acc.iter().enumerate() {
        let v = q.to_array(*a);
        let row = &mut t.out[i0 + i][j0..j0 + valid];
        if t.accumulate {
            for (o, x) in row.iter_mut().zip(v) {
                *o += x;
            }
        } else {
            row.copy_from_slice(&v[..valid]);
        }
    }
}

/// The scalar path: eight lanes as arrays.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScalarQ;

impl QLanes for ScalarQ {
    type I = [i32; GROUP];
    type F = [f32; GROUP];
    fn zero_i(self) -> [i32; GROUP] {
        [0; GROUP]
    }
    fn zero_f(self) -> [f32; GROUP] {
        [0.0; GROUP]
    }
    fn load(self, b: &[u8]) -> [i32; GROUP] {
        std::array::from_fn(|j| {
            i32::from_le_bytes([b[4 * j], b[4 * j + 1], b[4 * j + 2], b[4 * j + 3]])
        })
    }
    fn nib_lo(self, v: [i32; GROUP]) -> [i32; GROUP] {
        v.map(|x| x & 0x0f0f_0f0f)
    }
    fn nib_hi(self, v: [i32; GROUP]) -> [i32; GROUP] {
        v.map(|x| (x >> 4) & 0x0f0f_0f0f)
    }
    fn prep_s(self, v: [i32; GROUP]) -> [i32; GROUP] {
        v
    }
    fn dot_u(self, acc: [i32; GROUP], w: [i32; GROUP], x4: [i8; 4]) -> [i32; GROUP] {
        std::array::from_fn(|j| {
            let wb = w[j].to_le_bytes();
            acc[j]
                + (0..4)
                    .map(|t| i32::from(wb[t]) * i32::from(x4[t]))
                    .sum::<i32>()
        })
    }
    fn dot_s(self, acc: [i32; GROUP], w: [i32; GROUP], x4: [i8; 4]) -> [i32; GROUP] {
        std::array::from_fn(|j| {
            let wb = w[j].to_le_bytes();
            acc[j]
                + (0..4)
                    .map(|t| i32::from(wb[t].cast_signed()) * i32::from(x4[t]))
                    .sum::<i32>()
        })
    }
    fn fix_s(self, acc: [i32; GROUP], _qsum: i32) -> [i32; GROUP] {
        acc
    }
    fn scales(self, b: &[u8]) -> [f32; GROUP] {
        std::array::from_fn(|j| half::f16::from_le_bytes([b[2 * j], b[2 * j + 1]]).to_f32())
    }
    #[allow(clippy::cast_precision_loss)] // |sum| <= 32 * 128 * 127 < 2^24: exact
    fn cvt(self, v: [i32; GROUP]) -> [f32; GROUP] {
        v.map(|x| x as f32)
    }
    fn splat(self, x: f32) -> [f32; GROUP] {
        [x; GROUP]
    }
    fn mul(self, a: [f32; GROUP], b: [f32; GROUP]) -> [f32; GROUP] {
        std::array::from_fn(|j| a[j] * b[j])
    }
    fn fma(self, a: [f32; GROUP], b: [f32; GROUP], c: [f32; GROUP]) -> [f32; GROUP] {
        std::array::from_fn(|j| a[j].mul_add(b[j], c[j]))
    }
    fn to_array(self, v: [f32; GROUP]) -> [f32; GROUP] {
        v
    }
}

pub(crate) fn run_scalar(ty: QuantType, t: &mut Task) {
    match type_code(ty) {
        T_Q4_0 => run::<ScalarQ, T_Q4_0, 1>(ScalarQ, t),
        T_Q4_1 => run::<ScalarQ, T_Q4_1, 1>(ScalarQ, t),
        _ => run::<ScalarQ, T_Q8_0, 1>(ScalarQ, t),
    }
}
