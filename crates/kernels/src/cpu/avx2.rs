//! AVX2 + FMA path: 8 f32 lanes; f16 widened with F16C `vcvtph2ps`, bf16 by a shift.

use crate::cpu::lanes::{widen_tail, Lanes};
use std::arch::x86_64::{
    __m256, _mm256_add_epi32, _mm256_add_ps, _mm256_blendv_ps, _mm256_castps256_ps128,
    _mm256_castsi256_ps, _mm256_cmp_ps, _mm256_cvtepu16_epi32, _mm256_cvtph_ps, _mm256_cvtps_epi32,
    _mm256_div_ps, _mm256_extractf128_ps, _mm256_floor_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
    _mm256_loadu_si256, _mm256_max_ps, _mm256_mul_ps, _mm256_set1_epi32, _mm256_set1_ps,
    _mm256_setzero_si256, _mm256_shuffle_ps, _mm256_slli_epi32, _mm256_storeu_ps, _mm256_sub_ps,
    _mm256_unpackhi_epi16, _mm256_unpackhi_ps, _mm256_unpacklo_epi16, _mm256_unpacklo_ps,
    _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_loadu_si128, _mm_max_ps, _mm_max_ss, _mm_movehl_ps,
    _mm_prefetch, _mm_shuffle_ps, _mm_storeu_ps, _CMP_LT_OQ, _MM_HINT_T0, _MM_HINT_T1,
};

/// Token for AVX2 + FMA + F16C. Created only in its entry (`entry.rs`), which is compiled
/// with those features and entered only for a [`crate::Cpu`] on this path; every `unsafe`
/// below relies on that.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// The token.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C (`Isa::Avx2.is_available()`), and the caller must be a
    /// `#[target_feature(enable = "avx2,fma,f16c")]` entry, so that the generic code it runs with
    /// the token is compiled with those features.
    pub(crate) const unsafe fn new() -> Self {
        Self(())
    }
}

impl Lanes for Avx2 {
    const W: usize = 8;
    type V = __m256;
    type M = __m256;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m256 {
        assert!(s.len() >= 8);
        // SAFETY: 8 readable f32 checked above; unaligned load; token proves AVX.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: __m256) {
        assert!(s.len() >= 8);
        // SAFETY: 8 writable f32 checked above; unaligned store; token proves AVX.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: token proves FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn lt(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    fn select(self, m: __m256, a: __m256, b: __m256) -> __m256 {
        // SAFETY: token proves AVX. `blendv` takes the second operand where the mask is set.
        unsafe { _mm256_blendv_ps(b, a, m) }
    }
    #[inline(always)]
    fn reduce_add(self, v: __m256) -> f32 {
        // SAFETY: token proves AVX (and SSE, which every x86-64 has).
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s)))
        }
    }
    #[inline(always)]
    fn hsum4(self, v: [__m256; 4]) -> [f32; 4] {
        let mut out = [0.0f32; 4];
        // SAFETY: token proves AVX; the store writes the 4 floats of `out`.
        unsafe {
            let ab = _mm256_add_ps(
                _mm256_unpacklo_ps(v[0], v[1]),
                _mm256_unpackhi_ps(v[0], v[1]),
            );
            let cd = _mm256_add_ps(
                _mm256_unpacklo_ps(v[2], v[3]),
                _mm256_unpackhi_ps(v[2], v[3]),
            );
            let x = _mm256_add_ps(
                _mm256_shuffle_ps::<0x44>(ab, cd),
                _mm256_shuffle_ps::<0xEE>(ab, cd),
            );
            let x = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
            _mm_storeu_ps(out.as_mut_ptr(), x);
        }
        out
    }
    #[inline(always)]
    fn reduce_max(self, v: __m256) -> f32 {
        // SAFETY: token proves AVX (and SSE, which every x86-64 has).
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps::<0b01>(s, s)))
        }
    }
    #[inline(always)]
    fn floor(self, v: __m256) -> __m256 {
        // SAFETY: token proves AVX.
        unsafe { _mm256_floor_ps(v) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        // SAFETY: token proves AVX2. `n` is integral, so the conversion is exact.
        unsafe {
            let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    fn load_f16(self, s: &[u16]) -> __m256 {
        assert!(s.len() >= 8);
        // SAFETY: 8 readable u16 checked above; token proves F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(s.as_ptr().cast())) }
    }
    #[inline(always)]
    fn load_bf16(self, s: &[u16]) -> __m256 {
        assert!(s.len() >= 8);
        // SAFETY: 8 readable u16 checked above; token proves AVX2. bf16 is the top half of
        // an f32.
        unsafe {
            let h = _mm_loadu_si128(s.as_ptr().cast());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }
    const BF16_PAIR_PERMUTED: bool = true;
    #[inline(always)]
    fn load_bf16_pair(self, s: &[u16]) -> (__m256, __m256) {
        assert!(s.len() >= 16);
        // SAFETY: 16 readable u16 checked above; token proves AVX2. Interleaving zero words
        // below each bf16 makes it the top half of an f32 (lane order: see the trait).
        unsafe {
            let x = _mm256_loadu_si256(s.as_ptr().cast());
            let z = _mm256_setzero_si256();
            (
                _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, x)),
                _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, x)),
            )
        }
    }
    #[inline(always)]
    fn widen_f16(self, src: &[u16], dst: &mut [f32]) {
        let mut i = 0;
        while i + 8 <= src.len().min(dst.len()) {
            // SAFETY: 8 u16 readable and 8 f32 writable at `i` (loop bound); token proves F16C.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        widen_tail(&src[i..], &mut dst[i..], false);
    }
    #[inline(always)]
    fn widen_bf16(self, src: &[u16], dst: &mut [f32]) {
        let mut i = 0;
        while i + 8 <= src.len().min(dst.len()) {
            // SAFETY: as in `widen_f16`; token proves AVX2. bf16 is the top half of an f32.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
                let w = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_castsi256_ps(w));
            }
            i += 8;
        }
        widen_tail(&src[i..], &mut dst[i..], true);
    }
    #[inline(always)]
    fn prefetch<T>(self, s: &[T]) {
        let bytes = std::mem::size_of_val(s);
        let p = s.as_ptr().cast::<i8>();
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch never faults; the address is inside `s` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
            off += 64;
        }
    }
    #[inline(always)]
    fn prefetch_l2<T>(self, s: &[T]) {
        let bytes = std::mem::size_of_val(s);
        let p = s.as_ptr().cast::<i8>();
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch never faults; the address is inside `s` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p.add(off)) };
            off += 64;
        }
    }
}
