//! Parsers of the flags several commands share: sizes, element types, request rates. Each
//! error is one line naming the flag and the value.

use anyhow::{bail, Context, Result};
use pagedattn_kernels::DType;
use pagedattn_model::WeightDType;

/// Parses sizes like `64MiB`, `12GB`, `1.5GiB`, `4096`.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("not a size: {s:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => bail!("unknown size unit {u:?} in {s:?} (use B, KB, MB, GB, KiB, MiB or GiB)"),
    };
    if !(v.is_finite() && v > 0.0) {
        bail!("size must be positive: {s:?}");
    }
    let bytes = v * mult;
    // Checked before the cast: `as` would saturate a huge size and truncate a tiny one.
    if !(1.0..=(1u64 << 62) as f64).contains(&bytes) {
        bail!("size out of range (1 byte to 4 EiB): {s:?}");
    }
    Ok(bytes as u64)
}

/// `--kv-dtype`: f32, f16 or bf16.
pub fn parse_kv_dtype(s: &str) -> Result<DType> {
    Ok(match s {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::Bf16,
        d => bail!("--kv-dtype must be f32, f16 or bf16, not {d:?}"),
    })
}

/// `--weights`: native (the file's quantized blocks), bf16 or f32.
pub fn parse_weights(s: &str) -> Result<WeightDType> {
    Ok(match s {
        "native" => WeightDType::Native,
        "f32" => WeightDType::F32,
        "bf16" => WeightDType::Bf16,
        d => bail!("--weights must be native, bf16 or f32, not {d:?}"),
    })
}

/// `--rate`: a comma list of requests per second, `inf` (all at once) or `trace`.
pub fn parse_rates(s: &str) -> Result<Vec<Option<f64>>> {
    s.split(',')
        .map(|r| match r.trim() {
            "inf" => Ok(None),
            "" => bail!("empty entry in --rate {s:?}"),
            "trace" => Ok(Some(f64::NAN)),
            x => {
                let v: f64 = x
                    .parse()
                    .with_context(|| format!("not a request rate: {x:?}"))?;
                if !(v.is_finite() && v > 0.0) {
                    bail!("request rate must be > 0: {x:?}");
                }
                Ok(Some(v))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates_parse() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("12GB").unwrap(), 12_000_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("-1MiB").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
        assert_eq!(parse_rates("inf").unwrap(), vec![None]);
        assert_eq!(parse_rates("1,2.5").unwrap(), vec![Some(1.0), Some(2.5)]);
        assert!(parse_rates("0").is_err());
        for bad in [
            "1e30GB", "0.1", "0.5B", "inf", "NaN", "-0", "", "MiB", "1e400",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        for bad in ["-1", "inf2", "nan", "1e400", "0.0", ",", "1,,2x"] {
            assert!(parse_rates(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn size_and_rate_parsers_never_panic(s in ".{0,24}") {
            if let Ok(b) = parse_bytes(&s) {
                proptest::prop_assert!(b >= 1);
            }
            if let Ok(rates) = parse_rates(&s) {
                for r in rates.into_iter().flatten() {
                    proptest::prop_assert!(r.is_nan() || (r.is_finite() && r > 0.0));
                }
            }
        }
    }
}
