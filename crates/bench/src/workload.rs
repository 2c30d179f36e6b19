//! Workloads: who asks for how many tokens, and when.
//!
//! Synthetic length distributions are log-normal, fitted to the means the vLLM paper
//! reports for its datasets (ShareGPT: input 161.31, output 337.99 tokens; Alpaca: 19.31
//! and 58.45), with `mu = ln(mean) - sigma^2 / 2` so the mean before filtering is the
//! paper's. Requests that do not fit (ShareGPT's filter: prompt <= 1024, prompt + output
//! <= max length) are redrawn. Real traces come from CSV files of request lengths.
//! Everything is seeded: the same arguments give the same requests.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal};
use serde::{Deserialize, Serialize};

/// Errors building a workload.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line of a trace or JSONL file is malformed.
    #[error("{path}:{line}: {what}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// Parameters that describe no workload.
    #[error("invalid workload: {0}")]
    Invalid(String),
}

/// One request of a workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRequest {
    /// Arrival time in seconds from the start.
    pub arrival: f64,
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Output tokens to generate (forced: end-of-sequence is ignored).
    pub output_len: usize,
    /// The conversation the request belongs to (the prefix-shared workload's group): a
    /// load balancer can keep a conversation on the replica that caches its prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
}

/// Length distribution of a synthetic workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Lengths {
    /// ShareGPT-like conversations.
    ShareGpt,
    /// Alpaca-like instructions.
    Alpaca,
    /// Shared system prompts of `prefix_len` tokens, then an Alpaca-like suffix and
    /// output. Request `i` belongs to conversation `i % groups`, whose prompt it shares.
    PrefixShared {
        /// Length of the common prefix.
        prefix_len: usize,
        /// Distinct prefixes (conversations), at least 1.
        groups: usize,
    },
    /// Prompt and output lengths uniform in the given inclusive ranges.
    Uniform {
        /// Prompt lengths.
        prompt: (usize, usize),
        /// Output lengths.
        output: (usize, usize),
    },
    /// (prompt, output, arrival) rows of a trace file, sampled in file order from a
    /// seeded start, keeping those that fit.
    Trace(Vec<(usize, usize, Option<f64>)>),
}

/// When requests arrive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arrivals {
    /// All at time 0 (a burst: the memory-bound regime).
    AllAtOnce,
    /// A Poisson process of this many requests per second.
    Poisson(f64),
    /// The trace's own timestamps (falls back to all at once for traces without them).
    FromTrace,
}

/// Workload parameters.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Length distribution.
    pub lengths: Lengths,
    /// Arrival process.
    pub arrivals: Arrivals,
    /// Requests to draw.
    pub requests: usize,
    /// Longest prompt + output allowed.
    pub max_len: usize,
    /// Longest prompt allowed.
    pub max_prompt: usize,
    /// Token ids are drawn from `2 .. vocab_size` (0 and 1 are left to special tokens).
    pub vocab_size: usize,
    /// Seed.
    pub seed: u64,
}

/// Draws per requested request before a length distribution that rarely fits the maximum
/// length is given up on (with an error naming the smallest maximum that would work).
pub const MAX_DRAWS_PER_REQUEST: usize = 1000;

/// Largest token count a trace row may give (a prompt or an output), far beyond any model.
pub const MAX_TRACE_TOKENS: f64 = 1e9;

fn lognormal(mean: f64, sigma: f64) -> LogNormal<f64> {
    LogNormal::new(mean.ln() - sigma * sigma / 2.0, sigma).expect("valid log-normal")
}

impl WorkloadSpec {
    /// Draws the requests.
    pub fn generate(&self) -> Result<Vec<WorkloadRequest>, WorkloadError> {
        if self.requests == 0 || self.max_len < 2 || self.vocab_size < 3 {
            return Err(WorkloadError::Invalid(
                "need at least 1 request, max length >= 2 and a vocabulary of >= 3 tokens".into(),
            ));
        }
        let mut rng = StdRng::seed_from_u64(self.seed);
        let max_prompt = self.max_prompt.min(self.max_len - 1);
        let fits = |p: usize, o: usize| {
            p >= 1
                && o >= 1
                && p <= max_prompt
                && p.checked_add(o).is_some_and(|t| t <= self.max_len)
        };
        // Rejection sampling stops after a bounded number of draws.
        let budget = self
            .requests
            .saturating_mul(MAX_DRAWS_PER_REQUEST)
            .max(10_000);
        // Draws `(prompt, output)` pairs until `requests` fit, at most `budget` times; if too
        // few fit, the error names the smallest maximum length that would have taken the
        // `requests` shortest draws (prompts within the configured maximum prompt).
        let sample = |mut next: Box<dyn FnMut() -> (usize, usize) + '_>| {
            let mut kept = Vec::with_capacity(self.requests);
            let mut shortest = std::collections::BinaryHeap::with_capacity(self.requests + 1);
            for _ in 0..budget {
                if kept.len() == self.requests {
                    return Ok(kept);
                }
                let (p, o) = next();
                if fits(p, o) {
                    kept.push((p, o, None));
                }
                if p <= self.max_prompt {
                    shortest.push(p.saturating_add(o));
                    if shortest.len() > self.requests {
                        shortest.pop();
                    }
                }
            }
            if kept.len() == self.requests {
                return Ok(kept);
            }
            let hint = match shortest.peek() {
                Some(&need) if shortest.len() == self.requests => {
                    format!("--max-model-len {need} would take them")
                }
                _ => "raise the maximum length".to_string(),
            };
            Err(WorkloadError::Invalid(format!(
                "only {} of {} requests fit the maximum length {} (prompt <= {max_prompt}) in {budget} draws; {hint}",
                kept.len(),
                self.requests,
                self.max_len
            )))
        };
        let mut lens: Vec<(usize, usize, Option<f64>)> = Vec::with_capacity(self.requests);
        // A log-normal draw is finite and positive; `as` saturates the rare huge one, which
        // then fails `fits`.
        let draw = |rng: &mut StdRng, d: &LogNormal<f64>| (d.sample(rng).round() as usize).max(1);
        match &self.lengths {
            Lengths::ShareGpt | Lengths::Alpaca | Lengths::PrefixShared { .. } => {
                let (pi, po) = match self.lengths {
                    Lengths::ShareGpt => (lognormal(161.31, 0.85), lognormal(337.99, 0.55)),
                    _ => (lognormal(19.31, 0.7), lognormal(58.45, 0.8)),
                };
                let prefix = match self.lengths {
                    Lengths::PrefixShared { groups: 0, .. } => {
                        return Err(WorkloadError::Invalid(
                            "the prefix-shared workload needs at least 1 prefix group".into(),
                        ))
                    }
                    Lengths::PrefixShared { prefix_len, .. } => prefix_len,
                    _ => 0,
                };
                if !fits(prefix.saturating_add(1), 1) {
                    return Err(WorkloadError::Invalid(format!(
                        "a shared prefix of {prefix} tokens leaves no room under the maximum length"
                    )));
                }
                let rng = &mut rng;
                lens = sample(Box::new(move || {
                    let p = prefix.saturating_add(draw(rng, &pi));
                    (p, draw(rng, &po))
                }))?;
            }
            Lengths::Uniform { prompt, output } => {
                if prompt.0 > prompt.1 || output.0 > output.1 {
                    return Err(WorkloadError::Invalid("empty uniform ranges".into()));
                }
                if !fits(prompt.0, output.0) {
                    return Err(WorkloadError::Invalid(format!(
                        "the shortest uniform request ({} + {} tokens) does not fit the maximum length {}",
                        prompt.0, output.0, self.max_len
                    )));
                }
                let (prompt, output) = (*prompt, *output);
                let rng = &mut rng;
                lens = sample(Box::new(move || {
                    (
                        rng.random_range(prompt.0..=prompt.1),
                        rng.random_range(output.0..=output.1),
                    )
                }))?;
            }
            Lengths::Trace(rows) => {
                let usable: Vec<_> = rows.iter().filter(|r| fits(r.0, r.1)).copied().collect();
                if usable.is_empty() {
                    return Err(WorkloadError::Invalid(
                        "no trace row fits the maximum length".into(),
                    ));
                }
                let start = if self.arrivals == Arrivals::FromTrace {
                    0
                } else {
                    rng.random_range(0..usable.len())
                };
                lens.extend((0..self.requests).map(|i| usable[(start + i) % usable.len()]));
            }
        }
        let arrivals = self.arrival_times(&mut rng, &lens)?;
        let shared: Vec<Vec<u32>> = match self.lengths {
            Lengths::PrefixShared { prefix_len, groups } => (0..groups)
                .map(|_| (0..prefix_len).map(|_| self.token(&mut rng)).collect())
                .collect(),
            _ => Vec::new(),
        };
        Ok(lens
            .iter()
            .zip(arrivals)
            .enumerate()
            .map(|(i, (&(p, o, _), arrival))| {
                let session = (!shared.is_empty()).then(|| i % shared.len());
                let mut prompt = session.map_or_else(Vec::new, |g| shared[g].clone());
                prompt.extend((prompt.len()..p).map(|_| self.token(&mut rng)));
                WorkloadRequest {
                    arrival,
                    prompt,
                    output_len: o,
                    session: session.map(|g| g as u64),
                }
            })
            .collect())
    }

    fn token(&self, rng: &mut StdRng) -> u32 {
        rng.random_range(2..self.vocab_size as u32)
    }

    fn arrival_times(
        &self,
        rng: &mut StdRng,
        lens: &[(usize, usize, Option<f64>)],
    ) -> Result<Vec<f64>, WorkloadError> {
        Ok(match self.arrivals {
            Arrivals::AllAtOnce => vec![0.0; lens.len()],
            Arrivals::Poisson(rate) => {
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(WorkloadError::Invalid(format!(
                        "request rate {rate} must be > 0"
                    )));
                }
                let gap = Exp::new(rate).expect("positive rate");
                let mut t = 0.0;
                lens.iter()
                    .map(|_| {
                        let a = t;
                        t += gap.sample(rng);
                        a
                    })
                    .collect()
            }
            Arrivals::FromTrace => {
                let t0 = lens.first().and_then(|l| l.2).unwrap_or(0.0);
                lens.iter()
                    .map(|l| l.2.map_or(0.0, |t| (t - t0).max(0.0)))
                    .collect()
            }
        })
    }
}

mod files;
pub use files::{read_jsonl, read_trace, write_jsonl};

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(lengths: Lengths, n: usize) -> WorkloadSpec {
        WorkloadSpec {
            lengths,
            arrivals: Arrivals::AllAtOnce,
            requests: n,
            max_len: 2048,
            max_prompt: 1024,
            vocab_size: 1000,
            seed: 3,
        }
    }

    fn mean(v: impl Iterator<Item = usize>) -> f64 {
        let v: Vec<_> = v.collect();
        v.iter().sum::<usize>() as f64 / v.len() as f64
    }

    #[test]
    fn sharegpt_like_matches_the_paper_means_and_filter() {
        let r = spec(Lengths::ShareGpt, 20_000).generate().unwrap();
        let (p, o) = (
            mean(r.iter().map(|x| x.prompt.len())),
            mean(r.iter().map(|x| x.output_len)),
        );
        // The filter trims the long tail a little below the unfiltered means.
        assert!((135.0..170.0).contains(&p), "prompt mean {p}");
        assert!((315.0..345.0).contains(&o), "output mean {o}");
        assert!(r
            .iter()
            .all(|x| x.prompt.len() <= 1024 && x.prompt.len() + x.output_len <= 2048));
        assert!(r
            .iter()
            .flat_map(|x| &x.prompt)
            .all(|&t| (2..1000).contains(&t)));
    }

    #[test]
    fn seeded_and_prefix_shared() {
        let a = spec(
            Lengths::PrefixShared {
                prefix_len: 100,
                groups: 1,
            },
            50,
        )
        .generate()
        .unwrap();
        assert_eq!(
            a,
            spec(
                Lengths::PrefixShared {
                    prefix_len: 100,
                    groups: 1
                },
                50
            )
            .generate()
            .unwrap()
        );
        assert!(a
            .iter()
            .all(|r| r.prompt.len() > 100 && r.prompt[..100] == a[0].prompt[..100]));
        let alpaca = spec(Lengths::Alpaca, 5000).generate().unwrap();
        let p = mean(alpaca.iter().map(|x| x.prompt.len()));
        assert!((17.0..22.0).contains(&p), "{p}");
        assert!(alpaca.iter().all(|r| r.session.is_none()));
    }

    #[test]
    fn prefix_groups_are_conversations() {
        let lengths = Lengths::PrefixShared {
            prefix_len: 40,
            groups: 3,
        };
        let r = spec(lengths, 30).generate().unwrap();
        for (i, x) in r.iter().enumerate() {
            assert_eq!(x.session, Some(i as u64 % 3));
            let first = &r[i % 3];
            assert_eq!(x.prompt[..40], first.prompt[..40]);
        }
        assert_ne!(r[0].prompt[..40], r[1].prompt[..40]);
        assert_ne!(r[1].prompt[..40], r[2].prompt[..40]);
        let none = Lengths::PrefixShared {
            prefix_len: 40,
            groups: 0,
        };
        assert!(spec(none, 3).generate().is_err());
    }

    #[test]
    fn poisson_arrivals_have_the_rate() {
        let mut s = spec(
            Lengths::Uniform {
                prompt: (4, 8),
                output: (4, 8),
            },
            4000,
        );
        s.arrivals = Arrivals::Poisson(5.0);
        let r = s.generate().unwrap();
        let rate = r.len() as f64 / r.last().unwrap().arrival;
        assert!((4.7..5.3).contains(&rate), "{rate}");
        assert!(r.windows(2).all(|w| w[0].arrival <= w[1].arrival));
    }

    #[test]
    fn traces_and_jsonl_round_trip() {
        let dir = std::env::temp_dir().join(format!("pa-wl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("t.csv");
        std::fs::write(
            &csv,
            "arrived_at,num_prefill_tokens,num_decode_tokens\n1.5,10,5\n2.0,4000,5\n3.5,20,7\n",
        )
        .unwrap();
        let mut s = spec(read_trace(&csv).unwrap(), 4);
        s.arrivals = Arrivals::FromTrace;
        let r = s.generate().unwrap();
        // The 4000-token row does not fit and is skipped; rows cycle.
        assert_eq!(
            r.iter().map(|x| x.prompt.len()).collect::<Vec<_>>(),
            [10, 20, 10, 20]
        );
        assert!((r[1].arrival - 2.0).abs() < 1e-12, "{}", r[1].arrival);
        let jl = dir.join("w.jsonl");
        write_jsonl(&jl, &r).unwrap();
        assert_eq!(read_jsonl(&jl).unwrap(), r);
        std::fs::write(&csv, "a,b\n1,2\n").unwrap();
        assert!(matches!(read_trace(&csv), Err(WorkloadError::Parse { .. })));
        std::fs::write(&csv, "num_prefill_tokens,num_decode_tokens\n1,x\n").unwrap();
        assert!(matches!(
            read_trace(&csv),
            Err(WorkloadError::Parse { line: 2, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
