//! Workloads in files: CSV length traces in, JSONL requests in and out. Every field is
//! checked (whole, finite, in range) and every error names its line.

use super::{Lengths, WorkloadError, WorkloadRequest, MAX_TRACE_TOKENS};
use std::path::Path;

/// Reads a length trace: CSV with a header naming `num_prefill_tokens` and
/// `num_decode_tokens`, and optionally `arrived_at` (seconds).
pub fn read_trace(path: &Path) -> Result<Lengths, WorkloadError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Io {
        path: p.clone(),
        source,
    })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(pc), Some(dc)) = (col("num_prefill_tokens"), col("num_decode_tokens")) else {
        return Err(WorkloadError::Parse {
            path: p,
            line: 1,
            what: "header must name num_prefill_tokens and num_decode_tokens".into(),
        });
    };
    let ac = col("arrived_at");
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |what: String| WorkloadError::Parse {
            path: p.clone(),
            line: i + 2,
            what,
        };
        let num = |c: usize| -> Result<f64, WorkloadError> {
            let s = f
                .get(c)
                .ok_or_else(|| bad(format!("missing column {} ({})", c + 1, header[c])))?;
            let v = s
                .parse::<f64>()
                .map_err(|_| bad(format!("{}: not a number: {s:?}", header[c])))?;
            if !v.is_finite() || v < 0.0 {
                return Err(bad(format!(
                    "{}: {s:?} is not a finite number >= 0",
                    header[c]
                )));
            }
            Ok(v)
        };
        let count = |c: usize| -> Result<usize, WorkloadError> {
            let v = num(c)?;
            if v.fract() != 0.0 || v > MAX_TRACE_TOKENS {
                return Err(bad(format!(
                    "{}: {:?} is not a whole number of tokens up to {MAX_TRACE_TOKENS}",
                    header[c], f[c]
                )));
            }
            Ok(v as usize)
        };
        rows.push((count(pc)?, count(dc)?, ac.map(num).transpose()?));
    }
    if rows.is_empty() {
        return Err(WorkloadError::Parse {
            path: p,
            line: 1,
            what: "no rows".into(),
        });
    }
    Ok(Lengths::Trace(rows))
}

/// Writes requests as JSON lines.
pub fn write_jsonl(path: &Path, reqs: &[WorkloadRequest]) -> Result<(), WorkloadError> {
    let mut s = String::new();
    for r in reqs {
        s.push_str(&serde_json::to_string(r).expect("serializable"));
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|source| WorkloadError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads requests written by [`write_jsonl`].
pub fn read_jsonl(path: &Path) -> Result<Vec<WorkloadRequest>, WorkloadError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Io {
        path: p.clone(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let bad = |what: String| WorkloadError::Parse {
                path: p.clone(),
                line: i + 1,
                what,
            };
            let r: WorkloadRequest = serde_json::from_str(l).map_err(|e| bad(e.to_string()))?;
            if !(r.arrival.is_finite() && r.arrival >= 0.0) {
                return Err(bad(format!(
                    "arrival {} is not a finite time >= 0",
                    r.arrival
                )));
            }
            if r.prompt.is_empty() || r.output_len == 0 {
                return Err(bad("a request needs a prompt and output_len >= 1".into()));
            }
            Ok(r)
        })
        .collect()
}
