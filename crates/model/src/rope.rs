//! Rotary position embeddings.
//!
//! Frequencies `theta^(-2i / head_dim)` and angles are computed in f64 and rounded once,
//! so a position's rotation does not drift with its size. Which elements form a rotated
//! pair depends on the checkpoint ([`RopeStyle`]): GGUF's converter permutes Q/K rows so
//! pairs are adjacent; Hugging Face weights pair `i` with `i + head_dim / 2`. Using the
//! wrong one still runs, but the model degrades badly.

use crate::config::{RopeScaling, RopeStyle};

/// Precomputed inverse frequencies for one head size.
#[derive(Clone, Debug)]
pub(crate) struct Rope {
    inv_freq: Vec<f64>,
    style: RopeStyle,
}

impl Rope {
    /// Frequencies for `head_dim`, divided by `scaling`'s factors when it is given
    /// (validated with the config: one positive factor per frequency).
    pub(crate) fn new(
        head_dim: usize,
        theta: f32,
        style: RopeStyle,
        scaling: Option<&RopeScaling>,
    ) -> Self {
        let half = head_dim / 2;
        let mut inv_freq: Vec<f64> = (0..half)
            .map(|i| f64::from(theta).powf(-((2 * i) as f64) / head_dim as f64))
            .collect();
        if let Some(s) = scaling {
            let divisors = s.divisors(&inv_freq);
            for (f, d) in inv_freq.iter_mut().zip(divisors) {
                *f /= d;
            }
        }
        Self { inv_freq, style }
    }

    /// `(cos, sin)` for `position`, `head_dim / 2` each, into `out` (length `head_dim`).
    pub(crate) fn table(&self, position: usize, out: &mut [f32]) {
        let half = self.inv_freq.len();
        let (cos, sin) = out.split_at_mut(half);
        for (i, f) in self.inv_freq.iter().enumerate() {
            let (s, c) = (position as f64 * f).sin_cos();
            cos[i] = c as f32;
            sin[i] = s as f32;
        }
    }

    /// Rotates every head in `x` (`[heads, head_dim]` for one token) by the angles in
    /// `table` (from [`Rope::table`]).
    pub(crate) fn apply(&self, x: &mut [f32], table: &[f32]) {
        let half = self.inv_freq.len();
        let (cos, sin) = table.split_at(half);
        for head in x.chunks_exact_mut(2 * half) {
            match self.style {
                RopeStyle::AdjacentPairs => {
                    for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                        let (a, b) = (pair[0], pair[1]);
                        pair[0] = a * cos[i] - b * sin[i];
                        pair[1] = a * sin[i] + b * cos[i];
                    }
                }
                RopeStyle::HalfSplit => {
                    let (lo, hi) = head.split_at_mut(half);
                    for i in 0..half {
                        let (a, b) = (lo[i], hi[i]);
                        lo[i] = a * cos[i] - b * sin[i];
                        hi[i] = a * sin[i] + b * cos[i];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles_agree_up_to_the_row_permutation() {
        let d = 8;
        let (adj, split) = (
            Rope::new(d, 10_000.0, RopeStyle::AdjacentPairs, None),
            Rope::new(d, 10_000.0, RopeStyle::HalfSplit, None),
        );
        let hf: Vec<f32> = (0..d).map(|i| i as f32 - 3.5).collect();
        // GGUF order: element 2i is HF element i, element 2i + 1 is HF element i + d/2.
        let mut gg: Vec<f32> = (0..d).map(|j| hf[j / 2 + (j % 2) * d / 2]).collect();
        let mut hf2 = hf.clone();
        let mut t = vec![0.0; d];
        adj.table(37, &mut t);
        adj.apply(&mut gg, &t);
        split.apply(&mut hf2, &t);
        for j in 0..d {
            assert!((gg[j] - hf2[j / 2 + (j % 2) * d / 2]).abs() < 1e-6);
        }
        // Rotation keeps the norm.
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>();
        assert!((n(&hf) - n(&hf2)).abs() < 1e-3);
    }

    #[test]
    fn position_zero_is_identity() {
        let r = Rope::new(4, 100.0, RopeStyle::AdjacentPairs, None);
        let mut t = vec![0.0; 4];
        r.table(0, &mut t);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        r.apply(&mut x, &t);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn llama3_scaling_keeps_high_divides_low_and_smooths_between() {
        // theta 10000, head_dim 16: wavelengths 2 pi 10^(i / 2) = 6.3, 19.9, 62.8, 199, ...
        let s = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 64,
        };
        let base = Rope::new(16, 10_000.0, RopeStyle::HalfSplit, None);
        let scaled = Rope::new(16, 10_000.0, RopeStyle::HalfSplit, Some(&s));
        let ratio: Vec<f64> = (0..8)
            .map(|i| base.inv_freq[i] / scaled.inv_freq[i])
            .collect();
        assert!((ratio[0] - 1.0).abs() < 1e-12, "{ratio:?}");
        for &r in &ratio[3..] {
            assert!((r - 8.0).abs() < 1e-12, "{ratio:?}");
        }
        // Between the bands: 1 / ((1 - s) / 8 + s), s = (64 / wavelength - 1) / 3.
        for (&r, &f) in ratio[1..3].iter().zip(&base.inv_freq[1..3]) {
            let wavelen = std::f64::consts::TAU / f;
            let smooth = (64.0 / wavelen - 1.0) / 3.0;
            let want = 1.0 / ((1.0 - smooth) / 8.0 + smooth);
            assert!((r - want).abs() < 1e-12 && r > 1.0 && r < 8.0);
        }
        let linear = Rope::new(
            16,
            10_000.0,
            RopeStyle::HalfSplit,
            Some(&RopeScaling::Linear { factor: 2.0 }),
        );
        assert!((0..8).all(|i| (base.inv_freq[i] / linear.inv_freq[i] - 2.0).abs() < 1e-12));
    }
}
