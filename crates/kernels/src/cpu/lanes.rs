//! The vector operations the generic kernels are written in ([`Lanes`]) and the few helpers
//! built only from them. Nothing here knows which instruction set implements them.

use crate::store::dtype::{DType, KvElem};

/// The vector operations the generic kernels use. Implemented by zero-sized tokens, one
/// per instruction set; see the module docs for why holding one makes the calls sound.
pub(crate) trait Lanes: Copy {
    /// f32 lanes per vector.
    const W: usize;
    /// Whether the rows shape computes two groups of `W` rows per pass over a tile (needs
    /// about 20 vector registers: 32-register ISAs only).
    const PAIR_GROUPS: bool = false;
    /// A vector of `W` f32.
    type V: Copy;
    /// A lane mask.
    type M: Copy;

    fn splat(self, x: f32) -> Self::V;
    /// Loads `s[..W]` (panics if `s` is shorter).
    fn load(self, s: &[f32]) -> Self::V;
    /// Stores into `s[..W]` (panics if `s` is shorter).
    fn store(self, s: &mut [f32], v: Self::V);
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, fused.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lanes where `a < b`.
    fn lt(self, a: Self::V, b: Self::V) -> Self::M;
    /// `a` where `m`, else `b`.
    fn select(self, m: Self::M, a: Self::V, b: Self::V) -> Self::V;
    fn reduce_add(self, v: Self::V) -> f32;
    /// The four horizontal sums `[reduce_add(v[0]), .., reduce_add(v[3])]`, sharing the
    /// shuffles between the four (in a different association order than `reduce_add`).
    fn hsum4(self, v: [Self::V; 4]) -> [f32; 4];
    fn reduce_max(self, v: Self::V) -> f32;
    /// Rounds toward negative infinity.
    fn floor(self, v: Self::V) -> Self::V;
    /// `2^n` for integral `n` in `[-126, 127]`, built in the exponent bits.
    fn pow2i(self, n: Self::V) -> Self::V;
    /// Loads `W` IEEE half bit patterns widened to f32 (panics if `s` is shorter).
    fn load_f16(self, s: &[u16]) -> Self::V;
    /// Loads `W` bfloat16 bit patterns widened to f32 (panics if `s` is shorter).
    fn load_bf16(self, s: &[u16]) -> Self::V;
    /// Whether [`Lanes::load_bf16_pair`] returns its lanes in [`bf16_pair_source`] order
    /// rather than in memory order.
    const BF16_PAIR_PERMUTED: bool = false;
    /// Loads `2 W` bfloat16 bit patterns widened to f32 as two vectors. Where
    /// `BF16_PAIR_PERMUTED`, lane `j` of the pair holds element `bf16_pair_source(W, j)`
    /// (one unpack per vector instead of a widen and a shift); for a dot product the other
    /// operand is permuted the same way. Panics if `s` is shorter than `2 W`.
    fn load_bf16_pair(self, s: &[u16]) -> (Self::V, Self::V) {
        (
            self.load_bf16(&s[..Self::W]),
            self.load_bf16(&s[Self::W..2 * Self::W]),
        )
    }
    /// Widens IEEE half bit patterns; `dst.len() == src.len()`.
    fn widen_f16(self, src: &[u16], dst: &mut [f32]);
    /// Widens bfloat16 bit patterns; `dst.len() == src.len()`.
    fn widen_bf16(self, src: &[u16], dst: &mut [f32]);
    /// Transposes up to `W` query rows into `W`-lane vectors, scaled:
    /// `out[dd * W + lane] = q[starts[lane] + dd] * scale` for `dd < d`; lanes whose start is
    /// `None` or missing get 0. Panics if a row or `out` is too short.
    fn transpose_rows(
        self,
        q: &[f32],
        starts: &[Option<usize>],
        d: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        transpose_rows_scalar(Self::W, q, starts, (d, scale), out);
    }
    /// Hints that `s` will be read soon (no-op where unsupported).
    fn prefetch<T>(self, s: &[T]);
    /// Hints that `s` will be read later: fetched into the second-level cache only, so it
    /// does not evict what the first level holds now (no-op where unsupported).
    fn prefetch_l2<T>(self, _: &[T]) {}

    fn zero(self) -> Self::V {
        self.splat(0.0)
    }
}

/// [`Lanes::transpose_rows`] one element at a time, for any width `w`.
pub(crate) fn transpose_rows_scalar(
    w: usize,
    q: &[f32],
    starts: &[Option<usize>],
    (d, scale): (usize, f32),
    out: &mut [f32],
) {
    let rows: Vec<Option<&[f32]>> = (0..w)
        .map(|lane| starts.get(lane).copied().flatten().map(|s| &q[s..s + d]))
        .collect();
    // Contiguous writes (strided writes vectorise into slow scatters).
    for (dd, oc) in out[..d * w].chunks_exact_mut(w).enumerate() {
        for (x, r) in oc.iter_mut().zip(&rows) {
            *x = r.map_or(0.0, |r| r[dd] * scale);
        }
    }
}

/// The memory index (within `2 w` elements) of lane `j` of a permuted
/// [`Lanes::load_bf16_pair`]: unpacking 16-bit words with zeros takes the low four words of
/// each 128-bit block into the first vector and the high four into the second.
pub(crate) const fn bf16_pair_source(w: usize, j: usize) -> usize {
    let (second, lane) = (j / w, j % w);
    (lane / 4) * 8 + second * 4 + lane % 4
}

/// `e^x` per lane, Cephes-style: `x = n ln2 + r`, a degree-6 polynomial for `e^r`, and
/// `2^n` from the exponent bits. Relative error about 2e-7 on the inputs softmax produces
/// (`x <= 0`); inputs below -87 give ~1e-38 instead of 0, which callers mask.
#[inline(always)]
pub(crate) fn exp<L: Lanes>(l: L, x: L::V) -> L::V {
    let x = l.max(x, l.splat(-87.0));
    let x = l.select(l.lt(l.splat(88.0), x), l.splat(88.0), x);
    let n = l.floor(l.fma(x, l.splat(std::f32::consts::LOG2_E), l.splat(0.5)));
    let r = l.fma(n, l.splat(-0.693_359_4), x);
    let r = l.fma(n, l.splat(2.121_944_4e-4), r);
    let mut p = l.splat(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = l.fma(p, r, l.splat(c));
    }
    let rr = l.mul(r, r);
    let e = l.add(l.fma(p, rr, r), l.splat(1.0));
    l.mul(e, l.pow2i(n))
}

/// Scalar tail of the f16/bf16 widening, shared by the SIMD paths.
#[inline(always)]
pub(crate) fn widen_tail(src: &[u16], dst: &mut [f32], bf16: bool) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = if bf16 {
            f32::from_bits(u32::from(s) << 16)
        } else {
            half::f16::from_bits(s).to_f32()
        };
    }
}

/// `W` elements of a storage slice as f32 (widened in registers for f16/bf16).
#[inline(always)]
pub(crate) fn load_t<L: Lanes, T: KvElem>(isa: L, s: &[T]) -> L::V {
    if let Some(f) = T::as_f32(s) {
        isa.load(f)
    } else if let Some(bits) = T::as_bits(s) {
        if T::DTYPE == DType::Bf16 {
            isa.load_bf16(bits)
        } else {
            isa.load_f16(bits)
        }
    } else {
        isa.zero()
    }
}

#[cfg(test)]
mod tests {
    use super::exp;
    use crate::cpu::scalar::Scalar;

    #[test]
    fn exp_is_accurate_on_softmax_inputs() {
        let l = Scalar::token();
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let got = f64::from(exp(l, x));
            let want = f64::from(x).exp();
            worst = worst.max((got - want).abs() / want);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst:e}");
        assert!(exp(l, f32::NEG_INFINITY) < 1e-37);
    }
}
