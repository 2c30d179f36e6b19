//! The product kernel, written once over [`QLanes`] (the integer and float operations it
//! needs on eight 32-bit lanes) and compiled per instruction set in `x86.rs`, and here for
//! the scalar path.
//!
//! A tile is one packed group of eight weight rows by `RX` activation rows. For each
//! 32-value sub-block the group's codes are loaded (split into nibbles, high bits merged)
//! once; then, chunk by chunk, a dot-product step per activation row — four activation
//! bytes broadcast against a row per lane — leaves the eight rows' integer sums in the
//! eight lanes. They are scaled by the rows' scales (a vector: `d`, or `d` times the
//! sub-block scale) and the activation's `d`, and added to f32 accumulators with the
//! minimum / offset term. The finished lanes are eight outputs: no horizontal sums.

use crate::products::quant::blocks::{quantize_block, ActBlock, QuantType, GROUP, QK};

/// The weight type as a const parameter, so the per-type branches fold away.
pub(crate) const T_Q4_0: u8 = 0;
pub(crate) const T_Q4_1: u8 = 1;
pub(crate) const T_Q8_0: u8 = 2;
pub(crate) const T_Q4K: u8 = 3;
pub(crate) const T_Q5K: u8 = 4;
pub(crate) const T_Q6K: u8 = 5;

const fn type_of(t: u8) -> QuantType {
    match t {
        T_Q4_0 => QuantType::Q4_0,
        T_Q4_1 => QuantType::Q4_1,
        T_Q8_0 => QuantType::Q8_0,
        T_Q4K => QuantType::Q4K,
        T_Q5K => QuantType::Q5K,
        _ => QuantType::Q6K,
    }
}

/// Calls `$run::<$q, T, $rx>($q, $t)` with the type's const code.
macro_rules! dispatch_type {
    ($ty:expr, $run:ident, $q:expr, $rx:tt, $t:expr) => {{
        use $crate::products::quant::tile as t;
        match $ty {
            QuantType::Q4_0 => $run::<_, { t::T_Q4_0 }, $rx>($q, $t),
            QuantType::Q4_1 => $run::<_, { t::T_Q4_1 }, $rx>($q, $t),
            QuantType::Q8_0 => $run::<_, { t::T_Q8_0 }, $rx>($q, $t),
            QuantType::Q4K => $run::<_, { t::T_Q4K }, $rx>($q, $t),
            QuantType::Q5K => $run::<_, { t::T_Q5K }, $rx>($q, $t),
            QuantType::Q6K => $run::<_, { t::T_Q6K }, $rx>($q, $t),
        }
    }};
}
pub(crate) use dispatch_type;

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
    /// Per byte: `v | ((h >> from) & (2^bits - 1)) << 4`.
    fn merge_high(self, v: Self::I, h: Self::I, from: u32, bits: u32) -> Self::I;
    /// Prepares signed weight bytes for [`QLanes::dot_s`].
    fn prep_s(self, v: Self::I) -> Self::I;
    /// Per lane: `acc + sum_t w[4 lane + t] * x4[t]`, `w` unsigned bytes, `x4` signed.
    fn dot_u(self, acc: Self::I, w: Self::I, x4: [i8; 4]) -> Self::I;
    /// The same for weights from [`QLanes::prep_s`] (signed).
    fn dot_s(self, acc: Self::I, w: Self::I, x4: [i8; 4]) -> Self::I;
    /// Corrects a block's [`QLanes::dot_s`] sums given the activation block's sum.
    fn fix_s(self, acc: Self::I, qsum: i32) -> Self::I;
    /// `acc - k` per lane.
    fn sub_i(self, acc: Self::I, k: i32) -> Self::I;
    /// Eight f16 (16 bytes) as f32.
    fn scales(self, b: &[u8]) -> Self::F;
    /// Eight unsigned bytes as f32.
    fn bytes_u(self, b: &[u8]) -> Self::F;
    /// Eight signed bytes as f32.
    fn bytes_s(self, b: &[u8]) -> Self::F;
    fn cvt(self, v: Self::I) -> Self::F;
    fn splat(self, x: f32) -> Self::F;
    fn mul(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a * b + c`.
    fn fma(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    fn to_array(self, v: Self::F) -> [f32; GROUP];
    /// Quantizes one block of `QK` activations (`xs` at least that long): bit for bit
    /// [`quantize_block`], the default.
    #[inline(always)]
    fn quantize_block(self, xs: &[f32], b: &mut ActBlock) {
        quantize_block(xs, b);
    }
}

/// What one task computes: packed weight groups `w` (holding `n` real rows, `units`
/// blocks each), activation rows `x` (`m` rows of `nb` 32-value blocks), outputs
/// `out[i][j]` for activation row `i` and weight row `j` of the task.
pub(crate) struct Task<'a, 'o, 'r> {
    pub w: &'a [u8],
    pub n: usize,
    pub nb: usize,
    pub x: &'a [ActBlock],
    pub out: &'o mut [&'r mut [f32]],
    pub accumulate: bool,
}

/// Every weight group against every activation row: tiles of `RX` rows, then the rest in
/// one tile of as many rows (at most 8; `RX` is at most 8 on every path), so a group's
/// codes are unpacked `ceil(m / RX)` times, not once per leftover row.
#[inline(always)]
pub(crate) fn run<Q: QLanes, const T: u8, const RX: usize>(q: Q, t: &mut Task) {
    const { assert!(RX >= 1 && RX <= 8, "tiles of 1 to 8 rows") };
    let m = t.out.len();
    for g in 0..t.n.div_ceil(GROUP) {
        let mut i = 0;
        while i + RX <= m {
            tile::<Q, T, RX>(q, t, g, i);
            i += RX;
        }
        // Leftover rows (fewer than RX, so the branches above RX are never taken).
        match m - i {
            0 => {}
            1 => tile::<Q, T, 1>(q, t, g, i),
            2 => tile::<Q, T, 2>(q, t, g, i),
            3 => tile::<Q, T, 3>(q, t, g, i),
            4 => tile::<Q, T, 4>(q, t, g, i),
            5 => tile::<Q, T, 5>(q, t, g, i),
            6 => tile::<Q, T, 6>(q, t, g, i),
            _ => tile::<Q, T, 7>(q, t, g, i),
        }
    }
}

/// The scales of one sub-block for eight rows: `dw` multiplies the integer sums (for
/// `Q6_K` `dw` the first 16 values and `dw2` the last), `mw` the activation sum (the
/// minimum; negated for the k-quants, whose minimum is subtracted).
#[derive(Clone, Copy)]
struct SubScales<F> {
    dw: F,
    dw2: F,
    mw: F,
}

#[inline(always)]
fn tile<Q: QLanes, const T: u8, const RX: usize>(q: Q, t: &mut Task, g: usize, i0: usize) {
    let ty = type_of(T);
    let (ub, hb, sb) = (ty.unit_bytes(), ty.head_bytes(), ty.sub_bytes());
    let subs = ty.subs();
    let nb = t.nb;
    let units = nb / subs;
    let wg = &t.w[g * units * ub..(g + 1) * units * ub];
    let x_rows: [&[ActBlock]; RX] = std::array::from_fn(|i| &t.x[(i0 + i) * nb..(i0 + i + 1) * nb]);
    let mut acc = [q.zero_f(); RX];
    for u in 0..units {
        let unit = &wg[u * ub..(u + 1) * ub];
        let head = &unit[..hb];
        let d = q.scales(&head[..2 * GROUP]);
        let dmin = if matches!(T, T_Q4_1 | T_Q4K | T_Q5K) {
            q.scales(&head[2 * GROUP..4 * GROUP])
        } else {
            q.zero_f()
        };
        for s in 0..subs {
            let sc = match T {
                T_Q4K | T_Q5K => SubScales {
                    dw: q.mul(d, q.bytes_u(&head[4 * GROUP + s * GROUP..])),
                    dw2: d,
                    mw: q.mul(dmin, q.bytes_u(&head[4 * GROUP + (8 + s) * GROUP..])),
                },
                T_Q6K => SubScales {
                    dw: q.mul(d, q.bytes_s(&head[2 * GROUP + 2 * s * GROUP..])),
                    dw2: q.mul(d, q.bytes_s(&head[2 * GROUP + (2 * s + 1) * GROUP..])),
                    mw: dmin,
                },
                _ => SubScales {
                    dw: d,
                    dw2: d,
                    mw: dmin,
                },
            };
            let codes = &unit[hb + s * sb..hb + (s + 1) * sb];
            let xb: [&ActBlock; RX] = std::array::from_fn(|i| &x_rows[i][u * subs + s]);
            sub_block::<Q, T, RX>(q, codes, sc, xb, &mut acc);
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

#[inline(always)]
fn sub_block<Q: QLanes, const T: u8, const RX: usize>(
    q: Q,
    codes: &[u8],
    sc: SubScales<Q::F>,
    xb: [&ActBlock; RX],
    acc: &mut [Q::F; RX],
) {
    let mut w = [q.zero_i(); QK / 4];
    if T == T_Q8_0 {
        for (c, wc) in w.iter_mut().enumerate() {
            *wc = q.prep_s(q.load(&codes[c * 32..]));
        }
    } else {
        for k in 0..QK / 8 {
            let v = q.load(&codes[k * 32..]);
            w[k] = q.nib_lo(v);
            w[k + QK / 8] = q.nib_hi(v);
        }
        if T == T_Q5K {
            let h = q.load(&codes[128..]);
            for (c, wc) in w.iter_mut().enumerate() {
                *wc = q.merge_high(*wc, h, c as u32, 1);
            }
        }
        if T == T_Q6K {
            let h = [q.load(&codes[128..]), q.load(&codes[160..])];
            for (c, wc) in w.iter_mut().enumerate() {
                *wc = q.merge_high(*wc, h[c / 4], 2 * (c % 4) as u32, 2);
            }
        }
    }
    // Chunk-major, so the RX rows' dot-product chains are independent neighbours. `Q6_K`
    // keeps the two halves (chunks 0..4 and 4..8: values 0..16 and 16..32) apart.
    let mut s = [q.zero_i(); RX];
    let mut s2 = [q.zero_i(); RX];
    for (c, &wc) in w.iter().enumerate() {
        for i in 0..RX {
            let x = &xb[i].q;
            let x4 = [x[4 * c], x[4 * c + 1], x[4 * c + 2], x[4 * c + 3]];
            if T == T_Q8_0 {
                s[i] = q.dot_s(s[i], wc, x4);
            } else if T == T_Q6K && c >= 4 {
                s2[i] = q.dot_u(s2[i], wc, x4);
            } else {
                s[i] = q.dot_u(s[i], wc, x4);
            }
        }
    }
    for i in 0..RX {
        let xb = xb[i];
        let dx = q.splat(xb.d);
        acc[i] = match T {
            // sum (q - 8) dw dx xq = dw (dx isum - 8 sx)
            T_Q4_0 => q.fma(q.fma(q.cvt(s[i]), dx, q.splat(-8.0 * xb.s)), sc.dw, acc[i]),
            // sum (dw q + mw) dx xq = dw dx isum + mw sx
            T_Q4_1 => q.fma(
                sc.mw,
                q.splat(xb.s),
                q.fma(q.mul(q.cvt(s[i]), dx), sc.dw, acc[i]),
            ),
            T_Q8_0 => q.fma(q.mul(q.cvt(q.fix_s(s[i], xb.qsum)), dx), sc.dw, acc[i]),
            // sum (dw q - mw) dx xq = dw dx isum - mw sx
            T_Q4K | T_Q5K => q.fma(
                sc.mw,
                q.splat(-xb.s),
                q.fma(q.mul(q.cvt(s[i]), dx), sc.dw, acc[i]),
            ),
            // per half: dw dx (isum - 32 qsum)
            _ => {
                let lo = q.sub_i(s[i], 32 * xb.qsum_lo);
                let hi = q.sub_i(s2[i], 32 * (xb.qsum - xb.qsum_lo));
                let a = q.fma(q.mul(q.cvt(lo), dx), sc.dw, acc[i]);
                q.fma(q.mul(q.cvt(hi), dx), sc.dw2, a)
            }
        };
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
    fn merge_high(self, v: [i32; GROUP], h: [i32; GROUP], from: u32, bits: u32) -> [i32; GROUP] {
        std::array::from_fn(|j| {
            let (vb, hb) = (v[j].to_le_bytes(), h[j].to_le_bytes());
            i32::from_le_bytes(std::array::from_fn(|t| {
                vb[t] | (((hb[t] >> from) & ((1 << bits) - 1)) << 4)
            }))
        })
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
    fn sub_i(self, acc: [i32; GROUP], k: i32) -> [i32; GROUP] {
        acc.map(|a| a - k)
    }
    fn scales(self, b: &[u8]) -> [f32; GROUP] {
        std::array::from_fn(|j| half::f16::from_le_bytes([b[2 * j], b[2 * j + 1]]).to_f32())
    }
    fn bytes_u(self, b: &[u8]) -> [f32; GROUP] {
        std::array::from_fn(|j| f32::from(b[j]))
    }
    fn bytes_s(self, b: &[u8]) -> [f32; GROUP] {
        std::array::from_fn(|j| f32::from(b[j].cast_signed()))
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
