//! Choosing the next token from logits: greedy, or temperature with optional top-k and
//! top-p (nucleus) truncation, drawn from a per-request seeded RNG so a request's output
//! is reproducible regardless of what else is in the batch.

use crate::error::{ModelError, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// How to sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (`0`: no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (`1`: no limit).
    pub top_p: f32,
    /// RNG seed for this request.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Checks ranges: temperature finite and `>= 0`, `top_p` in `(0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(ModelError::InvalidSampling(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::InvalidSampling(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// A sampler for one request: its parameters and its RNG.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// A sampler seeded with `params.seed`.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            params,
            rng: StdRng::seed_from_u64(params.seed),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token id from one row of logits. NaN logits are never chosen.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = self.params;
        if p.temperature == 0.0 || p.top_k == 1 {
            return argmax(logits);
        }
        // Candidates sorted by logit, best first; truncated by top-k.
        let mut idx: Vec<u32> = (0..logits.len() as u32)
            .filter(|&i| !logits[i as usize].is_nan())
            .collect();
        if idx.is_empty() {
            return 0;
        }
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        if p.top_k > 0 && p.top_k < idx.len() {
            idx.select_nth_unstable_by(p.top_k - 1, by_logit);
            idx.truncate(p.top_k);
        }
        idx.sort_unstable_by(by_logit);
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| f64::from((logits[i as usize] - max) / p.temperature).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        // Nucleus: the shortest prefix whose mass reaches top_p (at least one token).
        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (j, &q) in probs.iter().enumerate() {
                acc += q / total;
                if acc >= f64::from(p.top_p) {
                    keep = j + 1;
                    break;
                }
            }
        }
        probs.truncate(keep);
        let mass: f64 = probs.iter().sum();
        let mut r = self.rng.random::<f64>() * mass;
        for (j, &q) in probs.iter().enumerate() {
            if r < q {
                return idx[j];
            }
            r -= q;
        }
        idx[keep - 1]
    }
}

/// Index of the largest logit (the first, on ties); NaN is skipped.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &x) in logits.iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0 as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed,
        }
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, f32::NAN, 2.9]), 1);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let logits = [0.0, 1.0, 2.0, 3.0, 10.0, 9.5];
        let mut k2 = Sampler::new(params(5.0, 2, 1.0, 7)).unwrap();
        let mut p = Sampler::new(params(1.0, 0, 0.5, 7)).unwrap();
        for _ in 0..200 {
            assert!([4, 5].contains(&k2.sample(&logits)));
            assert_eq!(p.sample(&logits), 4); // token 4 alone holds > 50%
        }
    }

    #[test]
    fn same_seed_same_tokens_and_temperature_spreads() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(1.0, 0, 1.0, seed)).unwrap();
            (0..64).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        let distinct: std::collections::HashSet<_> = run(3).into_iter().collect();
        assert!(distinct.len() > 5);
    }

    proptest::proptest! {
        #[test]
        fn samples_stay_inside_the_truncated_support(
            logits in proptest::collection::vec(-20.0f32..20.0, 1..64),
            temperature in 0.05f32..3.0, top_k in 0usize..8, top_p in 0.05f32..=1.0, seed: u64,
        ) {
            let mut s = Sampler::new(params(temperature, top_k, top_p, seed)).unwrap();
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            for _ in 0..8 {
                let t = s.sample(&logits) as usize;
                proptest::prop_assert!(t < logits.len());
                // Within the top-k (ties with the k-th logit count as inside).
                if top_k > 0 && top_k < logits.len() {
                    proptest::prop_assert!(logits[t] >= logits[order[top_k - 1]]);
                }
            }
        }
    }

    #[test]
    fn bad_params_are_rejected() {
        assert!(Sampler::new(params(-1.0, 0, 1.0, 0)).is_err());
        assert!(Sampler::new(params(f32::NAN, 0, 1.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 0, 0.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 0, 1.5, 0)).is_err());
    }
}
