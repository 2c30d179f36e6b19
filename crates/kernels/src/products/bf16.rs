//! bf16 products with AVX-512 BF16 (`vdpbf16ps`), for CPUs that have it: the same panels as
//! [`crate::linear`] (`[k, 32]` bf16 per panel), two `k` steps per instruction.
//!
//! `vdpbf16ps` adds, per f32 lane, the products of a pair of bf16 values from each operand.
//! Two consecutive panel rows (`k` steps `2q` and `2q + 1`, 32 features each) are
//! interleaved 16 bits at a time (`vpunpcklwd` / `vpunpckhwd`), which puts a feature's two
//! weights in one 32-bit lane, in a fixed order of features (lane `i` of the low half holds
//! feature `8 (i / 4) + i % 4`, of the high half `8 (i / 4) + 4 + i % 4`); the activation
//! pair `(x[2q], x[2q + 1])`, rounded to bf16, is broadcast to every lane. Up to 8 rows x 2
//! accumulators; the lane order is undone when the outputs are stored. Activations rounded
//! to bf16 (8 significant bits) are the price: a relative error of at most 2^-8 per
//! activation, in f32 accumulation.

use crate::cpu::bf16::Bf16Dot;
use crate::cpu::entry::Bf16Op;
use crate::products::packed::PANEL;
use std::arch::x86_64::{
    __m512, __m512bh, __m512i, _mm512_add_ps, _mm512_dpbf16_ps, _mm512_loadu_si512,
    _mm512_set1_epi32, _mm512_setzero_ps, _mm512_setzero_si512, _mm512_storeu_ps,
    _mm512_unpackhi_epi16, _mm512_unpacklo_epi16,
};

/// Rows per register block.
pub(crate) const MR: usize = 8;

/// `x` (`[m, k]`) as bf16 pairs, in blocks of up to [`MR`] rows: block `b` starts at
/// `b * MR * ceil(k / 2)`, and its pair step `q` holds `(x[2q], x[2q + 1])` of each of its
/// rows side by side (low half first; a missing last element is zero).
pub(crate) fn pack_pairs(x: &[f32], k: usize) -> Vec<u32> {
    let m = x.len() / k;
    let kp = k.div_ceil(2);
    let bits = |v: f32| u32::from(half::bf16::from_f32(v).to_bits());
    let mut out = vec![0u32; m * kp];
    let mut i = 0;
    while i < m {
        let r = (m - i).min(MR);
        let block = &mut out[i * kp..(i + r) * kp];
        for a in 0..r {
            let row = &x[(i + a) * k..(i + a + 1) * k];
            for q in 0..kp {
                let hi = row.get(2 * q + 1).map_or(0, |&v| bits(v));
                block[q * r + a] = bits(row[2 * q]) | (hi << 16);
            }
        }
        i += r;
    }
    out
}

/// One task: `out[i][j] (+)= dot(x_i, w_j)` for the task's panels `w` (bf16 bits).
///
pub(crate) struct Panels<'a, 'o, 'r> {
    /// `x` as [`pack_pairs`] lays it out.
    pub xp: &'a [u32],
    pub k: usize,
    /// The task's panels, bf16 bits.
    pub w: &'a [u16],
    pub out: &'o mut [&'r mut [f32]],
    pub accumulate: bool,
}

impl Bf16Op for Panels<'_, '_, '_> {
    type Output = ();

    #[inline(always)]
    fn run(self, t: Bf16Dot) {
        panels(t, self.xp, self.k, self.w, self.out, self.accumulate);
    }
}

#[inline(always)]
fn panels(t: Bf16Dot, xp: &[u32], k: usize, w: &[u16], out: &mut [&mut [f32]], accumulate: bool) {
    let m = out.len();
    let kp = k.div_ceil(2);
    for (pi, panel) in w.chunks_exact(k * PANEL).enumerate() {
        let mut i = 0;
        while i < m {
            let r = (m - i).min(MR);
            let xb = &xp[i * kp..(i + r) * kp];
            let rows = &mut out[i..i + r];
            let c = pi * PANEL;
            match r {
                1 => block::<1>(t, xb, k, panel, rows, c, accumulate),
                2 => block::<2>(t, xb, k, panel, rows, c, accumulate),
                3 => block::<3>(t, xb, k, panel, rows, c, accumulate),
                4 => block::<4>(t, xb, k, panel, rows, c, accumulate),
                5 => block::<5>(t, xb, k, panel, rows, c, accumulate),
                6 => block::<6>(t, xb, k, panel, rows, c, accumulate),
                7 => block::<7>(t, xb, k, panel, rows, c, accumulate),
                _ => block::<MR>(t, xb, k, panel, rows, c, accumulate),
            }
            i += r;
        }
    }
}

#[inline(always)]
fn load_row(_: Bf16Dot, panel: &[u16], p: usize) -> __m512i {
    let row = &panel[p * PANEL..(p + 1) * PANEL];
    // SAFETY: 32 readable u16 (64 bytes); unaligned load; the token proves AVX-512F.
    unsafe { _mm512_loadu_si512(row.as_ptr().cast()) }
}

#[inline(always)]
fn block<const R: usize>(
    t: Bf16Dot,
    xb: &[u32],
    k: usize,
    panel: &[u16],
    rows: &mut [&mut [f32]],
    c: usize,
    accumulate: bool,
) {
    let kp = k.div_ceil(2);
    // Every intrinsic below needs AVX-512F/BW and BF16, which the token `t` proves.
    // SAFETY: the token proves AVX-512F.
    let zero = unsafe { _mm512_setzero_ps() };
    let (mut lo, mut hi): ([__m512; R], [__m512; R]) = ([zero; R], [zero; R]);
    for q in 0..kp {
        let r0 = load_row(t, panel, 2 * q);
        let r1 = if 2 * q + 1 < k {
            load_row(t, panel, 2 * q + 1)
        } else {
            // SAFETY: the token proves AVX-512F.
            unsafe { _mm512_setzero_si512() }
        };
        // SAFETY: the token proves AVX-512BW; the transmutes reinterpret 512 bits as 32
        // bf16, the same size.
        let (wl, wh): (__m512bh, __m512bh) = unsafe {
            (
                std::mem::transmute::<__m512i, __m512bh>(_mm512_unpacklo_epi16(r0, r1)),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_unpackhi_epi16(r0, r1)),
            )
        };
        let xs = &xb[q * R..(q + 1) * R];
        for a in 0..R {
            // SAFETY: the token proves AVX-512F and BF16; the transmute reinterprets the
            // broadcast pair as 32 bf16, the same size.
            unsafe {
                let xv = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                    xs[a].cast_signed(),
                ));
                lo[a] = _mm512_dpbf16_ps(lo[a], wl, xv);
                hi[a] = _mm512_dpbf16_ps(hi[a], wh, xv);
            }
        }
    }
    for (row, (l, h)) in rows.iter_mut().zip(lo.iter().zip(&hi)) {
        let (mut tl, mut th) = ([0.0f32; 16], [0.0f32; 16]);
        // SAFETY: 16 writable f32 each; unaligned stores.
        unsafe {
            _mm512_storeu_ps(tl.as_mut_ptr(), *l);
            _mm512_storeu_ps(th.as_mut_ptr(), *h);
        }
        let end = row.len().min(c + PANEL);
        for (f, o) in row[c..end].iter_mut().enumerate() {
            let lane = f / 8 * 4 + f % 4;
            let v = if f % 8 < 4 { tl[lane] } else { th[lane] };
            *o = if accumulate { *o + v } else { v };
        }
    }
}

/// `iters` rounds of `C` independent `vdpbf16ps` on fixed operands (the machine probe of
/// `probe.rs`); returns a value that depends on all of them.
#[inline(always)]
pub(crate) fn dot_chains<const C: usize>(_: Bf16Dot, iters: usize) -> f32 {
    // SAFETY: the token proves AVX-512F/BW and BF16; the transmutes reinterpret 512 bits
    // as 32 bf16, the same size.
    unsafe {
        let w = std::hint::black_box(std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
            0x3f80_3f80,
        )));
        let x = std::hint::black_box(std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
            0x3c00_3c00,
        )));
        let mut acc = [_mm512_setzero_ps(); C];
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm512_dpbf16_ps(*a, w, x);
            }
        }
        // A loop, not a fold: a closure would not inherit the entry's target features.
        let mut total = _mm512_setzero_ps();
        for a in acc {
            total = _mm512_add_ps(total, a);
        }
        let mut out = [0.0f32; 16];
        _mm512_storeu_ps(out.as_mut_ptr(), total);
        out.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::{pack_pairs, Panels, MR};
    use crate::cpu::entry::run_bf16;
    use crate::products::packed::{PackedMatrix, PANEL};
    use crate::Cpu;
    use half::bf16;

    #[test]
    fn pairs_match_the_f64_product_of_the_rounded_inputs() {
        let Ok(cpu) = Cpu::parse("avx512+bf16") else {
            crate::testing::skipped("avx512+bf16");
            return;
        };
        let run = |xp: &[u32], k: usize, bits: &[u16], y: &mut [f32], n: usize, accumulate| {
            let mut out: Vec<&mut [f32]> = y.chunks_exact_mut(n).collect();
            let op = Panels {
                xp,
                k,
                w: bits,
                out: &mut out,
                accumulate,
            };
            run_bf16(cpu, op).expect("the path has BF16");
        };
        for &(m, n, k) in &[
            (1, 70, 33),
            (3, 32, 64),
            (9, 40, 17),
            (MR, 96, 576),
            (13, 5, 2),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.3)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.1)
                .collect();
            let packed = PackedMatrix::<bf16>::from_f32(&w, k).unwrap();
            let bits: Vec<u16> = packed.panels().iter().map(|v| v.to_bits()).collect();
            let xp = pack_pairs(&x, k);
            let mut y = vec![f32::NAN; m * n];
            run(&xp, k, &bits, &mut y, n, false);
            let r = |v: f32| f64::from(bf16::from_f32(v).to_f32());
            for i in 0..m {
                for j in 0..n {
                    let (mut want, mut mag, mut exact) = (0.0, 0.0, 0.0);
                    for p in 0..k {
                        want += r(w[j * k + p]) * r(x[i * k + p]);
                        mag += (r(w[j * k + p]) * r(x[i * k + p])).abs();
                        exact += r(w[j * k + p]) * f64::from(x[i * k + p]);
                    }
                    let got = f64::from(y[i * n + j]);
                    assert!(
                        (got - want).abs() <= 1e-5 * mag + 1e-6,
                        "{m}x{n}x{k} [{i},{j}]: {got} vs {want}"
                    );
                    // Rounding x to bf16 (8 significant bits): at most 2^-8 relative each.
                    assert!(
                        (got - exact).abs() <= mag / 256.0 + 1e-5,
                        "{got} vs {exact}"
                    );
                }
            }
            // Accumulating adds the same again.
            let before = y.clone();
            run(&xp, k, &bits, &mut y, n, true);
            for (a, b) in y.iter().zip(&before) {
                assert!((a - 2.0 * b).abs() <= 1e-5 * (1.0 + b.abs()));
            }
            assert_eq!(packed.panels().len(), n.div_ceil(PANEL) * PANEL * k);
        }
    }
}
