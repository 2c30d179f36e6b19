//! The portable path: one lane, plain Rust. It runs the same generic kernel as the SIMD
//! paths, so it is both the fallback and a check that the generic code is right.

use crate::cpu::lanes::{widen_tail, Lanes};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar(());

impl Scalar {
    /// The scalar path needs no CPU feature, so anyone may hold the token.
    pub(crate) const fn token() -> Self {
        Self(())
    }
}

impl Lanes for Scalar {
    const W: usize = 1;
    type V = f32;
    type M = bool;

    #[inline(always)]
    fn splat(self, x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> f32 {
        s[0]
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: f32) {
        s[0] = v;
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn fma(self, a: f32, b: f32, c: f32) -> f32 {
        // `mul_add` is a libm call without hardware FMA; a plain multiply-add is as
        // accurate as the tests need and keeps the fallback fast.
        a * b + c
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        a.max(b)
    }
    #[inline(always)]
    fn lt(self, a: f32, b: f32) -> bool {
        a < b
    }
    #[inline(always)]
    fn select(self, m: bool, a: f32, b: f32) -> f32 {
        if m {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn reduce_add(self, v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn hsum4(self, v: [f32; 4]) -> [f32; 4] {
        v
    }
    #[inline(always)]
    fn reduce_max(self, v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn floor(self, v: f32) -> f32 {
        v.floor()
    }
    #[inline(always)]
    fn pow2i(self, n: f32) -> f32 {
        f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
    #[inline(always)]
    fn load_f16(self, s: &[u16]) -> f32 {
        half::f16::from_bits(s[0]).to_f32()
    }
    #[inline(always)]
    fn load_bf16(self, s: &[u16]) -> f32 {
        f32::from_bits(u32::from(s[0]) << 16)
    }
    #[inline(always)]
    fn widen_f16(self, src: &[u16], dst: &mut [f32]) {
        widen_tail(src, dst, false);
    }
    #[inline(always)]
    fn widen_bf16(self, src: &[u16], dst: &mut [f32]) {
        widen_tail(src, dst, true);
    }
    #[inline(always)]
    fn prefetch<T>(self, _: &[T]) {}
}
