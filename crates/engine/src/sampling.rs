//! Picking the next token from a row of logits: greedy, temperature, top-k, top-p, with
//! the sequence's own seeded random stream.

use crate::request::SamplingParams;
use pagedattn_kv::TokenId;
use rand::Rng;

/// Samples one token id from `logits` under `params`.
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut impl Rng) -> TokenId {
    if params.temperature == 0.0 || params.top_k == 1 {
        return argmax(logits);
    }
    let mut cand: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
    cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if params.top_k > 0 {
        cand.truncate(params.top_k);
    }
    let max = cand[0].1;
    let inv_t = 1.0 / params.temperature;
    let mut probs: Vec<f64> = cand
        .iter()
        .map(|&(_, l)| f64::from((l - max) * inv_t).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    for p in &mut probs {
        *p /= total;
    }
    if params.top_p < 1.0 {
        let mut acc = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                acc += p;
                acc >= f64::from(params.top_p)
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut r = rng.random::<f64>() * total;
    for (i, p) in probs.iter().enumerate() {
        r -= p;
        if r <= 0.0 {
            return cand[i].0 as TokenId;
        }
    }
    cand[probs.len() - 1].0 as TokenId
}

/// Index of the largest logit (the lowest index among ties).
pub fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as TokenId
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            ..SamplingParams::default()
        }
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(sample(&[0.1, 3.0, 2.0], &params(0.0, 0, 1.0), &mut rng), 1);
        assert_eq!(argmax(&[1.0, 1.0]), 0);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let logits = [5.0, 4.9, 0.0, -1.0];
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            assert!(sample(&logits, &params(1.0, 2, 1.0), &mut rng) < 2);
            // p(0) ~ 0.52 >= 0.5: only token 0 survives.
            assert_eq!(sample(&logits, &params(1.0, 0, 0.5), &mut rng), 0);
        }
    }

    #[test]
    fn temperature_sampling_follows_the_distribution_and_the_seed() {
        let logits = [0.0, (3.0f32).ln()]; // p = 0.25, 0.75
        let mut rng = StdRng::seed_from_u64(7);
        let ones = (0..4000)
            .filter(|_| sample(&logits, &params(1.0, 0, 1.0), &mut rng) == 1)
            .count();
        assert!((2850..3150).contains(&ones), "{ones}");
        let draw = |seed| {
            let mut r = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| sample(&logits, &params(1.0, 0, 1.0), &mut r))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
    }
}
