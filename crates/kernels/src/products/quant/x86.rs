//! x86-64 integer paths: AVX2 (`vpmaddubsw` + `vpmaddwd`) and AVX-512 VNNI (`vpdpbusd`
//! on 256-bit vectors; the 32 registers AVX-512 gives allow taller tiles). Tokens are
//! created only in their `#[target_feature]` entries (`cpu/entry.rs`), entered only for a
//! [`crate::Cpu`] on that path; every `unsafe` relies on that.

use crate::products::quant::blocks::GROUP;
use crate::products::quant::tile::QLanes;
use std::arch::x86_64::{
    __m256, __m256i, _mm256_abs_epi8, _mm256_add_epi32, _mm256_and_si256, _mm256_cvtepi32_ps,
    _mm256_cvtepi8_epi32, _mm256_cvtepu8_epi32, _mm256_cvtph_ps, _mm256_dpbusd_epi32,
    _mm256_fmadd_ps, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_mul_ps,
    _mm256_or_si256, _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi8, _mm256_set1_ps,
    _mm256_setzero_ps, _mm256_setzero_si256, _mm256_sign_epi8, _mm256_sll_epi16, _mm256_srl_epi16,
    _mm256_srli_epi16, _mm256_storeu_ps, _mm256_sub_epi32, _mm256_xor_si256, _mm_cvtsi32_si128,
    _mm_loadl_epi64, _mm_loadu_si128,
};

macro_rules! common_ops {
    () => {
        type I = __m256i;
        type F = __m256;
        #[inline(always)]
        fn zero_i(self) -> __m256i {
            // SAFETY: the token proves AVX2 (module docs).
            unsafe { _mm256_setzero_si256() }
        }
        #[inline(always)]
        fn zero_f(self) -> __m256 {
            // SAFETY: as above.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        fn load(self, b: &[u8]) -> __m256i {
            assert!(b.len() >= 32);
            // SAFETY: 32 readable bytes checked above; unaligned load.
            unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
        }
        #[inline(always)]
        fn nib_lo(self, v: __m256i) -> __m256i {
            // SAFETY: AVX2 by the token.
            unsafe { _mm256_and_si256(v, _mm256_set1_epi8(0x0f)) }
        }
        #[inline(always)]
        fn nib_hi(self, v: __m256i) -> __m256i {
            // SAFETY: AVX2 by the token.
            unsafe { _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0f)) }
        }
        #[inline(always)]
        fn merge_high(self, v: __m256i, h: __m256i, from: u32, bits: u32) -> __m256i {
            // 16-bit shifts move bit `from` of each byte to bit 4 without crossing into
            // the wanted bits of the other byte (from <= 7, from + bits <= 8); the mask
            // drops what did cross.
            let mask = (((1u32 << bits) - 1) << 4) as i8;
            // SAFETY: AVX2 by the token.
            unsafe {
                let moved = if from <= 4 {
                    _mm256_sll_epi16(h, _mm_cvtsi32_si128((4 - from) as i32))
                } else {
                    _mm256_srl_epi16(h, _mm_cvtsi32_si128((from - 4) as i32))
                };
                _mm256_or_si256(v, _mm256_and_si256(moved, _mm256_set1_epi8(mask)))
            }
        }
        #[inline(always)]
        fn sub_i(self, acc: __m256i, k: i32) -> __m256i {
            // SAFETY: AVX2 by the token.
            unsafe { _mm256_sub_epi32(acc, _mm256_set1_epi32(k)) }
        }
        #[inline(always)]
        fn bytes_u(self, b: &[u8]) -> __m256 {
            assert!(b.len() >= 8);
            // SAFETY: 8 readable bytes checked above; AVX2 by the token.
            unsafe { _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(b.as_ptr().cast()))) }
        }
        #[inline(always)]
        fn bytes_s(self, b: &[u8]) -> __m256 {
            assert!(b.len() >= 8);
            // SAFETY: 8 readable bytes checked above; AVX2 by the token.
            unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(b.as_ptr().cast()))) }
        }
        #[inline(always)]
        fn scales(self, b: &[u8]) -> __m256 {
            assert!(b.len() >= 16);
            // SAFETY: 16 readable bytes checked above; F16C by the token.
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().cast())) }
        }
        #[inline(always)]
        fn cvt(self, v: __m256i) -> __m256 {
            // SAFETY: AVX by the token.
            unsafe { _mm256_cvtepi32_ps(v) }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            // SAFETY: AVX by the token.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: AVX by the token.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: FMA by the token.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn to_array(self, v: __m256) -> [f32; GROUP] {
            let mut out = [0.0; GROUP];
            // SAFETY: 8 writable f32; unaligned store.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
            out
        }
    };
}

/// AVX2 + FMA + F16C token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Q(());

impl Avx2Q {
    /// The token.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C, and the caller must be a `#[target_feature]`
    /// entry with them.
    pub(crate) const unsafe fn new() -> Self {
        Self(())
    }
}

impl QLanes for Avx2Q {
    common_ops!();
    #[inline(always)]
    fn prep_s(self, v: __m256i) -> __m256i {
        v
    }
    #[inline(always)]
    fn dot_u(self, acc: __m256i, w: __m256i, x4: [i8; 4]) -> __m256i {
        // u8 x i8 pairs summed to i16 (at most 2 * 15 * 127 for 4-bit weights and
        // 2 * 128 * 127 for |w| of 8-bit ones: no saturation), then pairs of i16 to i32.
        // SAFETY: AVX2 by the token.
        unsafe {
            let x = _mm256_set1_epi32(i32::from_le_bytes(x4.map(i8::cast_unsigned)));
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
            _mm256_add_epi32(acc, p)
        }
    }
    #[inline(always)]
    fn dot_s(self, acc: __m256i, w: __m256i, x4: [i8; 4]) -> __m256i {
        // sum(w * x) = sum(|w| * (x with w's sign)).
        // SAFETY: AVX2 by the token.
        unsafe {
            let x = _mm256_set1_epi32(i32::from_le_bytes(x4.map(i8::cast_unsigned)));
            let p = _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w)),
                _mm256_set1_epi16(1),
            );
            _mm256_add_epi32(acc, p)
        }
    }
    #[inline(always)]
    fn fix_s(self, acc: __m256i, _qsum: i32) -> __m256i {
        acc
    }
}

/// AVX-512 VNNI (+VL) token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VnniQ(());

impl VnniQ {
    /// The token.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA, F16C, AVX-512F/VL and AVX-512 VNNI, and the caller must
    /// be a `#[target_feature]` entry with them.
    pub(crate) const unsafe fn new() -> Self {
        Self(())
    }
}

impl QLanes for VnniQ {
    common_ops!();
    #[inline(always)]
    fn prep_s(self, v: __m256i) -> __m256i {
        // w + 128 as an unsigned byte: vpdpbusd multiplies unsigned by signed.
        // SAFETY: AVX2 by the token.
        unsafe { _mm256_xor_si256(v, _mm256_set1_epi8(-128)) }
    }
    #[inline(always)]
    fn dot_u(self, acc: __m256i, w: __m256i, x4: [i8; 4]) -> __m256i {
        // SAFETY: AVX-512 VNNI + VL by the token.
        unsafe {
            let x = _mm256_set1_epi32(i32::from_le_bytes(x4.map(i8::cast_unsigned)));
            _mm256_dpbusd_epi32(acc, w, x)
        }
    }
    #[inline(always)]
    fn dot_s(self, acc: __m256i, w: __m256i, x4: [i8; 4]) -> __m256i {
        self.dot_u(acc, w, x4)
    }
    #[inline(always)]
    fn fix_s(self, acc: __m256i, qsum: i32) -> __m256i {
        // sum((w + 128) x) - 128 sum(x) = sum(w x).
        // SAFETY: AVX2 by the token.
        unsafe { _mm256_sub_epi32(acc, _mm256_set1_epi32(128 * qsum)) }
    }
}
