//! x86-64 integer paths: AVX2 (`vpmaddubsw` + `vpmaddwd`) and AVX-512 VNNI (`vpdpbusd` on
//! 256-bit vectors, with the 32 registers AVX-512 gives for larger tiles). Tokens are
//! created only in the `#[target_feature]` entries below, entered after the CPU was
//! checked ([`super::QPath::is_available`]); every `unsafe` relies on that.

use super::blocks::{QuantType, QK};
use super::tile::{run, type_code, QLanes, Task, T_Q4_0, T_Q4_1, T_Q8_0};
use std::arch::x86_64::{
    __m256, __m256i, _mm256_abs_epi8, _mm256_castps256_ps128, _mm256_cvtepi32_ps,
    _mm256_dpbusd_epi32, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_si256,
    _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_set1_epi16, _mm256_set1_ps, _mm256_set_m128i,
    _mm256_setzero_ps, _mm256_setzero_si256, _mm256_sign_epi8, _mm_add_ps, _mm_add_ss,
    _mm_and_si128, _mm_cvtph_ps, _mm_cvtsi32_si128, _mm_cvtss_f32, _mm_loadu_si128,
    _mm_movehdup_ps, _mm_movehl_ps, _mm_set1_epi8, _mm_srli_epi16,
};

macro_rules! common_ops {
    () => {
        type Acc = __m256;
        type W = __m256i;
        type X = __m256i;
        #[inline(always)]
        fn zero(self) -> __m256 {
            // SAFETY: the token proves AVX2 (module docs).
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        fn zero_w(self) -> __m256i {
            // SAFETY: as above.
            unsafe { _mm256_setzero_si256() }
        }
        #[inline(always)]
        fn f16(self, bits: u16) -> f32 {
            // SAFETY: the token proves F16C.
            unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))) }
        }
        #[inline(always)]
        fn nibbles(self, qs: &[u8]) -> __m256i {
            assert!(qs.len() >= QK / 2);
            // SAFETY: 16 readable bytes checked above; unaligned load; AVX2 by the token.
            unsafe {
                let b = _mm_loadu_si128(qs.as_ptr().cast());
                let m = _mm_set1_epi8(0x0f);
                _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m))
            }
        }
        #[inline(always)]
        fn signed(self, qs: &[u8]) -> __m256i {
            assert!(qs.len() >= QK);
            // SAFETY: 32 readable bytes checked above; unaligned load.
            unsafe { _mm256_loadu_si256(qs.as_ptr().cast()) }
        }
        #[inline(always)]
        fn load_x(self, q: &[i8; QK]) -> __m256i {
            // SAFETY: 32 readable bytes; unaligned load.
            unsafe { _mm256_loadu_si256(q.as_ptr().cast()) }
        }
        #[inline(always)]
        fn fma_signed(self, acc: __m256, w: __m256i, x: __m256i, scale: f32) -> __m256 {
            // sum(w * x) = sum(|w| * (x with w's sign)): the unsigned operand is |w|.
            // SAFETY: AVX2 by the token.
            let (wa, xs) = unsafe { (_mm256_abs_epi8(w), _mm256_sign_epi8(x, w)) };
            self.fma_unsigned(acc, wa, xs, scale)
        }
        #[inline(always)]
        fn sum(self, acc: __m256) -> f32 {
            // SAFETY: AVX by the token.
            unsafe {
                let v = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
                _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)))
            }
        }
    };
}

/// AVX2 + FMA + F16C token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Q(());

impl QLanes for Avx2Q {
    common_ops!();
    #[inline(always)]
    fn fma_unsigned(self, acc: __m256, w: __m256i, x: __m256i, scale: f32) -> __m256 {
        // u8 x i8 pairs summed to i16 (at most 2 * 15 * 127 for 4-bit and 2 * 128 * 127 for
        // 8-bit weights: no saturation), then pairs of i16 to i32.
        // SAFETY: AVX2 + FMA by the token.
        unsafe {
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(scale), acc)
        }
    }
}

/// AVX-512 VNNI (+VL) token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VnniQ(());

impl QLanes for VnniQ {
    common_ops!();
    #[inline(always)]
    fn fma_unsigned(self, acc: __m256, w: __m256i, x: __m256i, scale: f32) -> __m256 {
        // SAFETY: AVX-512 VNNI + VL by the token.
        unsafe {
            let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x);
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(scale), acc)
        }
    }
}

/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn run_avx2(ty: QuantType, t: &mut Task) {
    let q = Avx2Q(());
    match type_code(ty) {
        T_Q4_0 => run::<_, T_Q4_0, 4, 2>(q, t),
        T_Q4_1 => run::<_, T_Q4_1, 4, 2>(q, t),
        _ => run::<_, T_Q8_0, 4, 2>(q, t),
    }
}

/// # Safety
/// The CPU must have AVX2, FMA, F16C, AVX-512F/VL and AVX-512 VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
pub(crate) unsafe fn run_vnni(ty: QuantType, t: &mut Task) {
    let q = VnniQ(());
    match type_code(ty) {
        T_Q4_0 => run::<_, T_Q4_0, 4, 4>(q, t),
        T_Q4_1 => run::<_, T_Q4_1, 4, 4>(q, t),
        _ => run::<_, T_Q8_0, 4, 4>(q, t),
    }
}
