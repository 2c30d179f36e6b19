//! Dot products of an f32 activation row with four weight rows (f32 or bf16) at once, for
//! the few-rows (decode) path of the matrix products.
//!
//! One generic loop (four rows, eight lanes each: 32 independent partial sums) is compiled
//! twice: for AVX2+FMA (chosen at run time when the CPU has it) and for the baseline target.
//! bf16 is widened in registers (a 16-bit shift), so a bf16 weight row is read from memory
//! at half the bytes.

// The generic loop must be inlined into the `#[target_feature]` entry to be compiled with
// that entry's instruction set, hence `#[inline(always)]`.
#![allow(clippy::inline_always)]

use half::bf16;

/// A weight element the dot product can widen to f32.
pub(crate) trait WeightElem: Copy {
    fn widen(self) -> f32;
}

impl WeightElem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl WeightElem for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        // bf16 is the top half of an f32.
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

/// `out[r] = dot(a, rows[r])` for four weight rows at once: `a` is loaded once per four
/// rows, and four independent streams keep more memory requests in flight.
#[inline]
pub(crate) fn dot4<T: WeightElem>(a: &[f32], rows: [&[T]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `dot4_avx2` is compiled for.
            return unsafe { dot4_avx2(a, rows) };
        }
    }
    dot4_generic::<T, false>(a, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot4_avx2<T: WeightElem>(a: &[f32], rows: [&[T]; 4]) -> [f32; 4] {
    dot4_generic::<T, true>(a, rows)
}

/// The loop; `FMA` selects fused multiply-add, which is only fast where the target has it.
#[inline(always)]
fn dot4_generic<T: WeightElem, const FMA: bool>(a: &[f32], rows: [&[T]; 4]) -> [f32; 4] {
    const W: usize = 8;
    let n = a.len() / W * W;
    let mut acc = [[0f32; W]; 4];
    let mut i = 0;
    while i < n {
        let pa = &a[i..i + W];
        for (r, row) in rows.iter().enumerate() {
            let pb = &row[i..i + W];
            for l in 0..W {
                acc[r][l] = if FMA {
                    pa[l].mul_add(pb[l].widen(), acc[r][l])
                } else {
                    acc[r][l] + pa[l] * pb[l].widen()
                };
            }
        }
        i += W;
    }
    let mut out = [0f32; 4];
    for (r, row) in rows.iter().enumerate() {
        let tail: f32 = a[n..]
            .iter()
            .zip(&row[n..])
            .map(|(p, q)| p * q.widen())
            .sum();
        out[r] = acc[r].iter().sum::<f32>() + tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_sum() {
        for len in [0, 1, 15, 16, 17, 576, 1000] {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.25)
                .collect();
            let b: Vec<f32> = (0..len).map(|i| ((i * 3 % 5) as f32 - 2.0) * 0.5).collect();
            let bb: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let four = dot4(&a, [&b[..], &b[..], &b[..], &b[..]]);
            assert!(four.iter().all(|v| (v - want).abs() < 1e-3), "{len}");
            let four = dot4(&a, [&bb[..], &bb[..], &bb[..], &bb[..]]);
            assert!(four.iter().all(|v| (v - want).abs() < 1e-3), "{len}");
            let four = dot4_generic::<f32, false>(&a, [&b[..], &b[..], &b[..], &b[..]]);
            assert!(four.iter().all(|v| (v - want).abs() < 1e-3), "{len}");
        }
    }
}
