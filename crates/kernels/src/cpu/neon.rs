//! aarch64 Advanced SIMD path: 4 f32 lanes. Half-precision widening uses the `half`
//! crate's conversions (scalar), which keeps this path short and obviously correct.

use crate::cpu::lanes::{widen_tail, Lanes};
use std::arch::aarch64::{
    float32x4_t, uint32x4_t, vaddq_f32, vaddq_s32, vaddvq_f32, vbslq_f32, vcltq_f32, vcvtq_s32_f32,
    vdivq_f32, vdupq_n_f32, vdupq_n_s32, vfmaq_f32, vld1q_f32, vmaxq_f32, vmaxvq_f32, vmulq_f32,
    vpaddq_f32, vreinterpretq_f32_s32, vrndmq_f32, vshlq_n_s32, vst1q_f32, vsubq_f32,
};

/// Token for NEON. Created only in its entry (`entry.rs`), compiled with `neon` and
/// entered only for a [`crate::Cpu`] on this path; every `unsafe` below relies on that.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Neon(());

impl Neon {
    /// The token.
    ///
    /// # Safety
    /// The CPU must have NEON (`Isa::Neon.is_available()`), and the caller must be a
    /// `#[target_feature(enable = "neon")]` entry, so that the generic code it runs with
    /// the token is compiled with those features.
    pub(crate) const unsafe fn new() -> Self {
        Self(())
    }
}

impl Lanes for Neon {
    const W: usize = 4;
    type V = float32x4_t;
    type M = uint32x4_t;

    #[inline(always)]
    fn splat(self, x: f32) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> float32x4_t {
        assert!(s.len() >= 4);
        // SAFETY: 4 readable f32 checked above; token proves NEON.
        unsafe { vld1q_f32(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: float32x4_t) {
        assert!(s.len() >= 4);
        // SAFETY: 4 writable f32 checked above; token proves NEON.
        unsafe { vst1q_f32(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vsubq_f32(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    fn div(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vdivq_f32(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON. `vfmaq_f32(c, a, b)` is `c + a * b`.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vmaxq_f32(a, b) }
    }
    #[inline(always)]
    fn lt(self, a: float32x4_t, b: float32x4_t) -> uint32x4_t {
        // SAFETY: token proves NEON.
        unsafe { vcltq_f32(a, b) }
    }
    #[inline(always)]
    fn select(self, m: uint32x4_t, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON. Bitwise select: `a` where mask bits are set.
        unsafe { vbslq_f32(m, a, b) }
    }
    #[inline(always)]
    fn reduce_add(self, v: float32x4_t) -> f32 {
        // SAFETY: token proves NEON.
        unsafe { vaddvq_f32(v) }
    }
    #[inline(always)]
    fn hsum4(self, v: [float32x4_t; 4]) -> [f32; 4] {
        let mut out = [0.0f32; 4];
        // SAFETY: token proves NEON; the store writes the 4 floats of `out`.
        unsafe {
            let ab = vpaddq_f32(v[0], v[1]);
            let cd = vpaddq_f32(v[2], v[3]);
            vst1q_f32(out.as_mut_ptr(), vpaddq_f32(ab, cd));
        }
        out
    }
    #[inline(always)]
    fn reduce_max(self, v: float32x4_t) -> f32 {
        // SAFETY: token proves NEON.
        unsafe { vmaxvq_f32(v) }
    }
    #[inline(always)]
    fn floor(self, v: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON (round toward minus infinity).
        unsafe { vrndmq_f32(v) }
    }
    #[inline(always)]
    fn pow2i(self, n: float32x4_t) -> float32x4_t {
        // SAFETY: token proves NEON. `n` is integral, so the conversion is exact.
        unsafe {
            let e = vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127));
            vreinterpretq_f32_s32(vshlq_n_s32::<23>(e))
        }
    }
    #[inline(always)]
    fn load_f16(self, s: &[u16]) -> float32x4_t {
        let mut x = [0.0f32; 4];
        widen_tail(&s[..4], &mut x, false);
        self.load(&x)
    }
    #[inline(always)]
    fn load_bf16(self, s: &[u16]) -> float32x4_t {
        let mut x = [0.0f32; 4];
        widen_tail(&s[..4], &mut x, true);
        self.load(&x)
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
