//! AVX-512 path: 16 f32 lanes; f16 widened with `vcvtph2ps`, bf16 by a 16-bit shift.

use crate::cpu::lanes::{widen_tail, Lanes};
use std::arch::x86_64::{
    __m512, __mmask16, _mm256_loadu_si256, _mm512_add_epi32, _mm512_add_ps, _mm512_castps512_ps128,
    _mm512_castsi512_ps, _mm512_cmp_ps_mask, _mm512_cvtepu16_epi32, _mm512_cvtph_ps,
    _mm512_cvtps_epi32, _mm512_div_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_loadu_si512,
    _mm512_mask_blend_ps, _mm512_mask_i32gather_ps, _mm512_max_ps, _mm512_mul_ps,
    _mm512_reduce_add_ps, _mm512_reduce_max_ps, _mm512_roundscale_ps, _mm512_set1_epi32,
    _mm512_set1_ps, _mm512_setzero_ps, _mm512_setzero_si512, _mm512_shuffle_f32x4,
    _mm512_shuffle_ps, _mm512_slli_epi32, _mm512_storeu_ps, _mm512_sub_ps, _mm512_unpackhi_epi16,
    _mm512_unpackhi_ps, _mm512_unpacklo_epi16, _mm512_unpacklo_ps, _mm_prefetch, _mm_storeu_ps,
    _CMP_LT_OQ, _MM_HINT_T0, _MM_HINT_T1,
};

/// Token for AVX-512F/BW/VL + FMA + F16C. Created only in its entry (`entry.rs`), which is
/// compiled with those features and entered only for a [`crate::Cpu`] on this path; every
/// `unsafe` below relies on that.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// The token.
    ///
    /// # Safety
    /// The CPU must have AVX-512F/BW/VL, AVX2, FMA and F16C (`Isa::Avx512.is_available()`), and the caller must be a
    /// `#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]` entry, so that the generic code it runs with
    /// the token is compiled with those features.
    pub(crate) const unsafe fn new() -> Self {
        Self(())
    }
}

impl Lanes for Avx512 {
    const W: usize = 16;
    const PAIR_GROUPS: bool = true;
    type V = __m512;
    type M = __mmask16;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: the token proves AVX-512F (module docs).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m512 {
        assert!(s.len() >= 16);
        // SAFETY: 16 readable f32 checked above; unaligned load; token proves AVX-512F.
        unsafe { _mm512_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, s: &mut [f32], v: __m512) {
        assert!(s.len() >= 16);
        // SAFETY: 16 writable f32 checked above; unaligned store; token proves AVX-512F.
        unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn lt(self, a: __m512, b: __m512) -> __mmask16 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
    }
    #[inline(always)]
    fn select(self, m: __mmask16, a: __m512, b: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F. `mask_blend` takes the second operand where set.
        unsafe { _mm512_mask_blend_ps(m, b, a) }
    }
    #[inline(always)]
    fn reduce_add(self, v: __m512) -> f32 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    fn hsum4(self, v: [__m512; 4]) -> [f32; 4] {
        let mut out = [0.0f32; 4];
        // SAFETY: token proves AVX-512F; the store writes the 4 floats of `out`.
        unsafe {
            // Per 128-bit block: [a0+a2, b0+b2, a1+a3, b1+b3], likewise for c, d.
            let ab = _mm512_add_ps(
                _mm512_unpacklo_ps(v[0], v[1]),
                _mm512_unpackhi_ps(v[0], v[1]),
            );
            let cd = _mm512_add_ps(
                _mm512_unpacklo_ps(v[2], v[3]),
                _mm512_unpackhi_ps(v[2], v[3]),
            );
            // Per 128-bit block: [a, b, c, d] partial sums.
            let x = _mm512_add_ps(
                _mm512_shuffle_ps::<0x44>(ab, cd),
                _mm512_shuffle_ps::<0xEE>(ab, cd),
            );
            // Add the four blocks: swap 256-bit halves, then 128-bit pairs.
            let x = _mm512_add_ps(x, _mm512_shuffle_f32x4::<0x4E>(x, x));
            let x = _mm512_add_ps(x, _mm512_shuffle_f32x4::<0xB1>(x, x));
            _mm_storeu_ps(out.as_mut_ptr(), _mm512_castps512_ps128(x));
        }
        out
    }
    #[inline(always)]
    fn reduce_max(self, v: __m512) -> f32 {
        // SAFETY: token proves AVX-512F.
        unsafe { _mm512_reduce_max_ps(v) }
    }
    #[inline(always)]
    fn floor(self, v: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F. Immediate 0x09: round down, suppress exceptions.
        unsafe { _mm512_roundscale_ps::<0x09>(v) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        // SAFETY: token proves AVX-512F. `n` is integral, so the conversion is exact.
        unsafe {
            let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    fn load_f16(self, s: &[u16]) -> __m512 {
        assert!(s.len() >= 16);
        // SAFETY: 16 readable u16 checked above; token proves AVX-512F (`vcvtph2ps`).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(s.as_ptr().cast())) }
    }
    #[inline(always)]
    fn load_bf16(self, s: &[u16]) -> __m512 {
        assert!(s.len() >= 16);
        // SAFETY: 16 readable u16 checked above; token proves AVX-512F. bf16 is the top
        // half of an f32: zero-extend to 32 bits and shift left 16.
        unsafe {
            let h = _mm256_loadu_si256(s.as_ptr().cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
    const BF16_PAIR_PERMUTED: bool = true;
    #[inline(always)]
    fn load_bf16_pair(self, s: &[u16]) -> (__m512, __m512) {
        assert!(s.len() >= 32);
        // SAFETY: 32 readable u16 checked above; token proves AVX-512F/BW. Interleaving zero
        // words below each bf16 makes it the top half of an f32 (lane order: see the trait).
        unsafe {
            let x = _mm512_loadu_si512(s.as_ptr().cast());
            let z = _mm512_setzero_si512();
            (
                _mm512_castsi512_ps(_mm512_unpacklo_epi16(z, x)),
                _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, x)),
            )
        }
    }
    #[inline(always)]
    fn widen_f16(self, src: &[u16], dst: &mut [f32]) {
        let mut i = 0;
        while i + 16 <= src.len().min(dst.len()) {
            // SAFETY: 16 u16 readable and 16 f32 writable at `i` (loop bound); token proves
            // AVX-512F, which includes the 512-bit `vcvtph2ps`.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(i).cast());
                _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
            }
            i += 16;
        }
        widen_tail(&src[i..], &mut dst[i..], false);
    }
    #[inline(always)]
    fn widen_bf16(self, src: &[u16], dst: &mut [f32]) {
        let mut i = 0;
        while i + 16 <= src.len().min(dst.len()) {
            // SAFETY: as in `widen_f16`. bf16 is the top half of an f32: zero-extend to 32
            // bits and shift left 16.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(i).cast());
                let w = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
                _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_castsi512_ps(w));
            }
            i += 16;
        }
        widen_tail(&src[i..], &mut dst[i..], true);
    }
    #[inline(always)]
    fn transpose_rows(
        self,
        q: &[f32],
        starts: &[Option<usize>],
        d: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        assert!(out.len() >= d * 16);
        let Some(base) = starts.iter().take(16).flatten().copied().min() else {
            out[..d * 16].fill(0.0);
            return;
        };
        let mut idx = [0i32; 16];
        let mut mask: __mmask16 = 0;
        for (lane, s) in starts.iter().take(16).enumerate() {
            if let Some(s) = *s {
                assert!(s + d <= q.len());
                let Ok(i) = i32::try_from(s - base) else {
                    // Rows too far apart for 32-bit offsets (a query buffer of gigabytes).
                    return crate::cpu::lanes::transpose_rows_scalar(
                        16,
                        q,
                        starts,
                        (d, scale),
                        out,
                    );
                };
                idx[lane] = i;
                mask |= 1 << lane;
            }
        }
        // SAFETY: the token proves AVX-512F. Every active lane reads `q[s + dd]` with
        // `s + d <= q.len()` (asserted above) and `base + dd <= s + dd`, so the base pointer
        // and every gathered address stay inside `q`; masked-off lanes read nothing. The
        // stores write `out[dd * 16 .. dd * 16 + 16]`, inside the asserted length.
        unsafe {
            let vi = _mm512_loadu_si512(idx.as_ptr().cast());
            let sc = _mm512_set1_ps(scale);
            for dd in 0..d {
                let g = _mm512_mask_i32gather_ps::<4>(
                    _mm512_setzero_ps(),
                    mask,
                    vi,
                    q.as_ptr().add(base + dd),
                );
                _mm512_storeu_ps(out.as_mut_ptr().add(dd * 16), _mm512_mul_ps(g, sc));
            }
        }
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
