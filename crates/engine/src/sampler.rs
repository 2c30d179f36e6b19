//! Choosing the next token from a row of logits: greedy, or temperature with optional
//! top-k and top-p (nucleus) truncation, from a per-sequence seeded RNG so a request's
//! output is reproducible whatever else is in the batch.
//!
//! No step sorts the vocabulary: top-k is a partial selection and a sort of k entries;
//! top-p selects the most likely tokens in growing chunks until their mass reaches p
//! (almost always one chunk of 64), so a token costs O(vocabulary) plus a little.

use crate::ids::TokenId;
use crate::request::SamplingParams;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Log-probability of a sampled token and of the most likely alternatives, from the
/// model's own distribution (before temperature and truncation, as vLLM reports them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The sampled token.
    pub token: TokenId,
    /// Its natural-log probability.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, best first (as many as asked).
    pub top: Vec<(TokenId, f32)>,
}

/// Greedy choice: the index of the largest logit (the first, on ties); NaN is never chosen.
pub fn argmax(logits: &[f32]) -> TokenId {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &x) in logits.iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0 as TokenId
}

/// First chunk of candidates examined for top-p; grown four-fold while the mass falls short.
const TOP_P_CHUNK: usize = 64;

/// One sequence's sampler: its truncation rules and its random stream.
#[derive(Clone, Debug)]
pub(crate) struct Sampler {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    logprobs: Option<usize>,
    rng: StdRng,
    /// Reused candidate buffer (token ids), so a step allocates nothing per token.
    idx: Vec<u32>,
}

impl Sampler {
    /// A sampler for `params` (already validated) with its own stream seeded `seed`.
    pub(crate) fn new(params: &SamplingParams, seed: u64) -> Self {
        Self {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            logprobs: params.logprobs,
            rng: StdRng::seed_from_u64(seed),
            idx: Vec::new(),
        }
    }

    /// Picks a token from one row of logits (NaN logits are never chosen), with its
    /// log-probabilities when the request asked for them.
    pub(crate) fn sample(&mut self, logits: &[f32]) -> (TokenId, Option<TokenLogprob>) {
        let token = if self.temperature == 0.0 || self.top_k == 1 {
            argmax(logits)
        } else {
            self.draw(logits)
        };
        let lp = self
            .logprobs
            .map(|n| logprobs(logits, token, n, &mut self.idx));
        (token, lp)
    }

    fn draw(&mut self, logits: &[f32]) -> TokenId {
        let inv_t = 1.0 / f64::from(self.temperature);
        let max = logits
            .iter()
            .copied()
            .filter(|x| !x.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return argmax(logits);
        }
        let weight = |i: u32| (f64::from(logits[i as usize] - max) * inv_t).exp();
        self.idx.clear();
        self.idx
            .extend((0..logits.len() as u32).filter(|&i| !logits[i as usize].is_nan()));
        let idx = &mut self.idx;
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        let truncated_k = self.top_k > 0 && self.top_k < idx.len();
        if truncated_k {
            idx.select_nth_unstable_by(self.top_k - 1, by_logit);
            idx.truncate(self.top_k);
        }
        if self.top_p >= 1.0 {
            // Every candidate stays: draw from them directly, in any order.
            let total: f64 = idx.iter().map(|&i| weight(i)).sum();
            return pick(idx, weight, self.rng.random::<f64>() * total);
        }
        // Nucleus: the shortest run of most likely tokens whose mass reaches top_p (of the
        // mass left after top-k), found by sorting only as many candidates as it takes.
        let total: f64 = idx.iter().map(|&i| weight(i)).sum();
        let goal = f64::from(self.top_p) * total;
        let (mut sorted, mut acc, mut chunk) = (0, 0.0, TOP_P_CHUNK);
        let keep = loop {
            let end = (sorted + chunk).min(idx.len());
            if end < idx.len() {
                idx[sorted..].select_nth_unstable_by(end - sorted - 1, by_logit);
            }
            idx[sorted..end].sort_unstable_by(by_logit);
            let mut found = None;
            for (j, &i) in idx[sorted..end].iter().enumerate() {
                acc += weight(i);
                if acc >= goal {
                    found = Some(sorted + j + 1);
                    break;
                }
            }
            if let Some(k) = found {
                break k;
            }
            if end == idx.len() {
                break end; // rounding: the whole set
            }
            sorted = end;
            chunk *= 4;
        };
        let kept = &idx[..keep];
        let mass: f64 = kept.iter().map(|&i| weight(i)).sum();
        pick(kept, weight, self.rng.random::<f64>() * mass)
    }
}

/// The candidate where the running weight passes `r` (the last one on rounding).
fn pick(cands: &[u32], weight: impl Fn(u32) -> f64, mut r: f64) -> TokenId {
    for &i in cands {
        let w = weight(i);
        if r < w {
            return i;
        }
        r -= w;
    }
    cands[cands.len() - 1]
}

/// Log-softmax of `token` and of the `n` most likely tokens.
fn logprobs(logits: &[f32], token: TokenId, n: usize, idx: &mut Vec<u32>) -> TokenLogprob {
    let max = logits
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| f64::from(x - max).exp())
        .sum();
    let log_z = f64::from(max) + sum.ln();
    let lp = |i: u32| {
        let x = logits.get(i as usize).copied().unwrap_or(f32::NAN);
        if x.is_nan() {
            f32::NEG_INFINITY
        } else {
            (f64::from(x) - log_z) as f32
        }
    };
    idx.clear();
    idx.extend((0..logits.len() as u32).filter(|&i| !logits[i as usize].is_nan()));
    let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
    let n = n.min(idx.len());
    if n > 0 && n < idx.len() {
        idx.select_nth_unstable_by(n - 1, by_logit);
    }
    idx.truncate(n);
    idx.sort_unstable_by(by_logit);
    TokenLogprob {
        token,
        logprob: lp(token),
        top: idx.iter().map(|&i| (i, lp(i))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Sampler {
        Sampler::new(
            &SamplingParams {
                temperature,
                top_p,
                top_k,
                ..SamplingParams::default()
            },
            seed,
        )
    }

    /// The support top-k and top-p leave, computed the slow way: sort everything.
    fn support(logits: &[f32], t: f32, k: usize, p: f32) -> Vec<u32> {
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        if k > 0 && k < order.len() {
            order.truncate(k);
        }
        let max = logits[order[0] as usize];
        let w: Vec<f64> = order
            .iter()
            .map(|&i| (f64::from(logits[i as usize] - max) / f64::from(t)).exp())
            .collect();
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        for (j, x) in w.iter().enumerate() {
            acc += x;
            if acc >= f64::from(p) * total {
                order.truncate(j + 1);
                break;
            }
        }
        order
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = sampler(0.0, 0, 1.0, 0);
        assert_eq!(s.sample(&[0.1, 3.0, f32::NAN, 2.9]).0, 1);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let logits = [0.0, 1.0, 2.0, 3.0, 10.0, 9.5];
        let mut k2 = sampler(5.0, 2, 1.0, 7);
        let mut p = sampler(1.0, 0, 0.5, 7);
        for _ in 0..200 {
            assert!([4, 5].contains(&k2.sample(&logits).0));
            assert_eq!(p.sample(&logits).0, 4); // token 4 alone holds > 50%
        }
    }

    #[test]
    fn top_p_over_a_flat_vocabulary_grows_past_the_first_chunk() {
        // 1000 equal logits: top_p 0.5 keeps 500 tokens, beyond the first chunk of 64.
        let logits = vec![1.0f32; 1000];
        let mut s = sampler(1.0, 0, 0.5, 3);
        let seen: std::collections::HashSet<u32> = (0..4000).map(|_| s.sample(&logits).0).collect();
        assert!(seen.len() > 300, "only {} distinct tokens", seen.len());
    }

    #[test]
    fn same_seed_same_tokens_and_temperature_spreads() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = sampler(1.0, 0, 1.0, seed);
            (0..64).map(|_| s.sample(&logits).0).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        let distinct: std::collections::HashSet<_> = run(3).into_iter().collect();
        assert!(distinct.len() > 5);
    }

    #[test]
    fn logprobs_are_the_log_softmax_best_first() {
        let logits = [1.0f32, 3.0, 2.0, f32::NAN];
        let mut s = Sampler::new(
            &SamplingParams {
                logprobs: Some(2),
                ..SamplingParams::default()
            },
            0,
        );
        let (t, lp) = s.sample(&logits);
        let lp = lp.unwrap();
        let z = (1f64.exp() + 3f64.exp() + 2f64.exp()).ln();
        assert_eq!(t, 1);
        assert!((f64::from(lp.logprob) - (3.0 - z)).abs() < 1e-5);
        assert_eq!(lp.top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((f64::from(lp.top[1].1) - (2.0 - z)).abs() < 1e-5);
    }

    proptest::proptest! {
        #[test]
        fn samples_stay_inside_the_truncated_support(
            logits in proptest::collection::vec(-20.0f32..20.0, 1..300),
            temperature in 0.05f32..3.0, top_k in 0usize..8, top_p in 0.05f32..=1.0, seed: u64,
        ) {
            let mut s = sampler(temperature, top_k, top_p, seed);
            let allowed = support(&logits, temperature, top_k, top_p);
            let floor = logits[*allowed.last().unwrap() as usize];
            for _ in 0..8 {
                let t = s.sample(&logits).0;
                // Inside the support (ties with its last logit count as inside).
                proptest::prop_assert!(allowed.contains(&t) || logits[t as usize] >= floor,
                    "token {} outside {:?}", t, allowed);
            }
        }
    }
}
