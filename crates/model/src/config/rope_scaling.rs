//! RoPE frequency scaling: linear, Llama 3.1's rule, or per-frequency factors.

use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};

/// How RoPE's frequencies are stretched for contexts longer than the model was first
/// trained on. Each rotation frequency `theta^(-2i / head_dim)` is divided by a factor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeScaling {
    /// Every frequency divided by `factor` (positions interpolated).
    Linear {
        /// The divisor.
        factor: f32,
    },
    /// Llama 3.1's rule (`rope_type: llama3`): wavelengths shorter than
    /// `original_max_position / high_freq_factor` are kept, longer than
    /// `original_max_position / low_freq_factor` divided by `factor`, and the ones between
    /// interpolated smoothly.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f32,
        /// Wavelength bound (as a fraction of the original context) of the divided band.
        low_freq_factor: f32,
        /// Wavelength bound (as a fraction of the original context) of the kept band.
        high_freq_factor: f32,
        /// The context the model was pretrained with.
        original_max_position: usize,
    },
    /// One divisor per frequency (`head_dim / 2` values), as GGUF files store Llama 3.1's
    /// rule (`rope_freqs.weight`).
    FreqFactors(Vec<f32>),
}

impl RopeScaling {
    /// The divisor of each of `inv_freq`'s frequencies.
    pub fn divisors(&self, inv_freq: &[f64]) -> Vec<f64> {
        match self {
            Self::Linear { factor } => vec![f64::from(*factor); inv_freq.len()],
            Self::FreqFactors(f) => f.iter().map(|&x| f64::from(x)).collect(),
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                let (factor, low, high) = (
                    f64::from(*factor),
                    f64::from(*low_freq_factor),
                    f64::from(*high_freq_factor),
                );
                let old = *original_max_position as f64;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                inv_freq
                    .iter()
                    .map(|&f| {
                        let wavelen = std::f64::consts::TAU / f;
                        if wavelen < high_wavelen {
                            1.0
                        } else if wavelen > low_wavelen {
                            factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            1.0 / ((1.0 - smooth) / factor + smooth)
                        }
                    })
                    .collect()
            }
        }
    }

    /// Checks the parameters: finite, positive, ordered, one factor per frequency.
    pub(super) fn validate(&self, head_dim: usize) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidConfig(format!("RoPE scaling: {m}")));
        let positive = |x: f32| x.is_finite() && x > 0.0;
        match self {
            Self::Linear { factor } if !positive(*factor) => {
                bad(format!("factor {factor} must be finite and > 0"))
            }
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                if !(positive(*factor) && positive(*low_freq_factor) && positive(*high_freq_factor))
                {
                    bad(format!(
                        "factor {factor}, low_freq_factor {low_freq_factor} and high_freq_factor {high_freq_factor} must be finite and > 0"
                    ))
                } else if low_freq_factor >= high_freq_factor {
                    bad(format!(
                        "low_freq_factor {low_freq_factor} must be below high_freq_factor {high_freq_factor}"
                    ))
                } else if *original_max_position == 0 {
                    bad("original_max_position_embeddings must be > 0".into())
                } else {
                    Ok(())
                }
            }
            Self::FreqFactors(f) if f.len() != head_dim / 2 => bad(format!(
                "{} frequency factors for {} frequencies (head_dim {head_dim} / 2)",
                f.len(),
                head_dim / 2
            )),
            Self::FreqFactors(f) => match f.iter().position(|&x| !positive(x)) {
                Some(i) => bad(format!(
                    "frequency factor {i} is {}; must be finite and > 0",
                    f[i]
                )),
                None => Ok(()),
            },
            Self::Linear { .. } => Ok(()),
        }
    }
}
