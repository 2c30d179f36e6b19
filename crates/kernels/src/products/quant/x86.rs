//! x86-64 integer paths: AVX2 (`vpmaddubsw` + `vpmaddwd`) and AVX-512 VNNI (`vpdpbusd`
//! on 256-bit vectors; the 32 registers AVX-512 gives allow taller tiles). Tokens are
//! created only in their `#[target_feature]` entries (`cpu/entry.rs`), entered only for a
//! [`crate::Cpu`] on that path; every `unsafe` relies on that.

use crate::products::quant::blocks::{act_scale, ActBlock, GROUP, QK};
use crate::products::quant::tile::QLanes;
use std::arch::x86_64::{
    __m128i, __m256, __m256i, _mm256_abs_epi8, _mm256_add_epi32, _mm256_and_si256,
    _mm256_castps256_ps128, _mm256_castps_si256, _mm256_castsi256_ps, _mm256_castsi256_si128,
    _mm256_cmpgt_epi32, _mm256_cvtepi32_ps, _mm256_cvtepi8_epi32, _mm256_cvtepu8_epi32,
    _mm256_cvtph_ps, _mm256_cvtps_epi32, _mm256_dpbusd_epi32, _mm256_extractf128_ps,
    _mm256_extracti128_si256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256,
    _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_max_epi32, _mm256_max_ps, _mm256_min_epi32,
    _mm256_movemask_epi8, _mm256_mul_ps, _mm256_or_si256, _mm256_packs_epi16, _mm256_packs_epi32,
    _mm256_permutevar8x32_epi32, _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi8,
    _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_sign_epi8,
    _mm256_sll_epi16, _mm256_srl_epi16, _mm256_srli_epi16, _mm256_storeu_ps, _mm256_storeu_si256,
    _mm256_sub_epi32, _mm256_xor_si256, _mm_add_epi32, _mm_cvtsi128_si32, _mm_cvtsi32_si128,
    _mm_cvtss_f32, _mm_loadl_epi64, _mm_loadu_si128, _mm_max_ps, _mm_max_ss, _mm_movehl_ps,
    _mm_shuffle_epi32, _mm_shuffle_ps,
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
        #[inline(always)]
        fn quantize_block(self, xs: &[f32], b: &mut ActBlock) {
            assert!(xs.len() >= QK);
            // No closures below: a closure does not inherit the entry's target features,
            // so the intrinsics inside it would become calls.
            // SAFETY: 32 readable f32 checked above (unaligned loads), 32 writable bytes in
            // `b.q`; AVX2 by the token.
            unsafe {
                let p = xs.as_ptr();
                let abs = _mm256_set1_epi32(0x7fff_ffff);
                // Magnitudes as bits: above those of the largest finite value is inf or NaN.
                let max_finite = _mm256_set1_epi32(0x7f7f_ffff);
                let mut v = [_mm256_setzero_ps(); 4];
                let mut a = [_mm256_setzero_ps(); 4];
                let mut bad = _mm256_setzero_si256();
                for i in 0..4 {
                    v[i] = _mm256_loadu_ps(p.add(8 * i));
                    let bits = _mm256_and_si256(_mm256_castps_si256(v[i]), abs);
                    bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(bits, max_finite));
                    a[i] = _mm256_castsi256_ps(bits);
                }
                if _mm256_movemask_epi8(bad) != 0 {
                    *b = ActBlock::NON_FINITE;
                    return;
                }
                let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
                let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
                let (d, inv) = act_scale(_mm_cvtss_f32(m));
                // Round to nearest even (the default rounding mode), as the definition's
                // 1.5 * 2^23 trick; |x * inv| <= 127 plus rounding, clamped as it clamps.
                let inv = _mm256_set1_ps(inv);
                let (hi, lo) = (_mm256_set1_epi32(127), _mm256_set1_epi32(-127));
                let mut q = [_mm256_setzero_si256(); 4];
                for i in 0..4 {
                    let r = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));
                    q[i] = _mm256_max_epi32(_mm256_min_epi32(r, hi), lo);
                }
                // Packing interleaves 128-bit lanes: dwords come out as values 0-3, 8-11,
                // 16-19, 24-27, 4-7, 12-15, 20-23, 28-31; one permutation restores the order.
                let packed = _mm256_packs_epi16(
                    _mm256_packs_epi32(q[0], q[1]),
                    _mm256_packs_epi32(q[2], q[3]),
                );
                let packed =
                    _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
                _mm256_storeu_si256(b.q.as_mut_ptr().cast(), packed);
                let mut sums = [0i32; 2];
                for (h, sum) in sums.iter_mut().enumerate() {
                    let v = _mm256_add_epi32(q[2 * h], q[2 * h + 1]);
                    let s: __m128i =
                        _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
                    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
                    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
                    *sum = _mm_cvtsi128_si32(s);
                }
                b.finish(d, sums[0], sums[1]);
            }
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
