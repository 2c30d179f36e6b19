//! Hostile trace, workload and arrival inputs: every malformed file is a typed error with
//! its line, nothing panics, and no sampling loop runs unbounded.

use pagedattn_bench::workload::{
    read_jsonl, read_trace, Arrivals, Lengths, WorkloadError, WorkloadSpec,
};
use proptest::prelude::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A scratch file with `bytes`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str, bytes: &[u8]) -> Self {
        let p = std::env::temp_dir().join(format!(
            "pagedattn-hostile-{}-{tag}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&p, bytes).unwrap();
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const VALID_TRACE: &str =
    "arrived_at,num_prefill_tokens,num_decode_tokens\n0.5,10,5\n1.0,300,40\n2.25,20,7\n";

fn spec(lengths: Lengths, max_len: usize) -> WorkloadSpec {
    WorkloadSpec {
        lengths,
        arrivals: Arrivals::FromTrace,
        requests: 8,
        max_len,
        max_prompt: 1024,
        vocab_size: 1000,
        seed: 1,
    }
}

#[test]
fn each_bad_trace_field_is_an_error_naming_its_line_and_column() {
    let cases = [
        ("-1", "num_prefill_tokens"),
        ("1.5", "whole number"),
        ("inf", "finite"),
        ("NaN", "finite"),
        ("1e300", "whole number"),
        ("18446744073709551616", "whole number"),
        ("abc", "not a number"),
        ("", "not a number"),
    ];
    for (value, says) in cases {
        let text = VALID_TRACE.replace("300", value);
        let f = Scratch::new("field", text.as_bytes());
        match read_trace(&f.0) {
            Err(WorkloadError::Parse { line: 3, what, .. }) => {
                assert!(what.contains(says), "{value:?}: {what}");
            }
            other => panic!("{value:?}: {other:?}"),
        }
    }
    for value in ["inf", "-3", "NaN"] {
        let text = VALID_TRACE.replace("1.0", value);
        let f = Scratch::new("arrival", text.as_bytes());
        let e = read_trace(&f.0).unwrap_err();
        assert!(e.to_string().contains("arrived_at"), "{value}: {e}");
    }
}

#[test]
fn a_workload_no_request_fits_is_an_error_not_a_hang() {
    let t = Instant::now();
    for lengths in [
        Lengths::ShareGpt,
        Lengths::Alpaca,
        Lengths::Uniform {
            prompt: (1, 400),
            output: (1, 400),
        },
    ] {
        let mut s = spec(lengths.clone(), 3);
        s.arrivals = Arrivals::AllAtOnce;
        s.requests = 1000;
        let e = s.generate().unwrap_err().to_string();
        assert!(e.contains("maximum length"), "{lengths:?}: {e}");
        // The error names the smallest maximum length that takes every request, and that
        // length works.
        let need: usize = e
            .split("--max-model-len ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no suggested length in {e}"));
        s.max_len = need;
        let reqs = s
            .generate()
            .unwrap_or_else(|e| panic!("{lengths:?} at {need}: {e}"));
        assert!(reqs.iter().all(|r| r.prompt.len() + r.output_len <= need));
        s.max_len = need - 1;
        assert!(
            s.generate().is_err(),
            "{lengths:?}: {need} is not the smallest"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let mut s = spec(Lengths::ShareGpt, 2048);
    s.arrivals = Arrivals::Poisson(f64::INFINITY);
    assert!(s.generate().is_err());
}

#[test]
fn bad_jsonl_requests_are_errors_with_their_line() {
    for (line, says) in [
        (
            r#"{"arrival": -1.0, "prompt": [5], "output_len": 3}"#,
            "arrival",
        ),
        (
            r#"{"arrival": 0.0, "prompt": [], "output_len": 3}"#,
            "prompt",
        ),
        (
            r#"{"arrival": 0.0, "prompt": [5], "output_len": 0}"#,
            "output_len",
        ),
        (r#"{"arrival": 1e999, "prompt": [5], "output_len": 3}"#, ""),
        (r#"{"arrival": 0.0, "prompt": [-5], "output_len": 3}"#, ""),
        (
            r#"{"arrival": 0.0, "prompt": [5], "output_len": 18446744073709551616}"#,
            "",
        ),
        ("[1, 2", ""),
    ] {
        let text = format!("{{\"arrival\": 0.0, \"prompt\": [1, 2], \"output_len\": 4}}\n{line}\n");
        let f = Scratch::new("jsonl", text.as_bytes());
        match read_jsonl(&f.0) {
            Err(WorkloadError::Parse { line: 2, what, .. }) => {
                assert!(what.contains(says), "{line}: {what}");
            }
            other => panic!("{line}: {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let f = Scratch::new("bytes", &bytes);
        if let Ok(Lengths::Trace(rows)) = read_trace(&f.0) {
            prop_assert!(!rows.is_empty());
            // Whatever parsed makes a workload or a typed error, quickly.
            let _ = spec(Lengths::Trace(rows), 2048).generate();
        }
        if let Ok(reqs) = read_jsonl(&f.0) {
            prop_assert!(reqs.iter().all(|r| r.arrival.is_finite() && !r.prompt.is_empty()));
        }
    }

    #[test]
    fn a_valid_trace_cut_anywhere_parses_or_errs(cut in 0usize..VALID_TRACE.len()) {
        let f = Scratch::new("cut", &VALID_TRACE.as_bytes()[..cut]);
        match read_trace(&f.0) {
            Ok(Lengths::Trace(rows)) => {
                for (p, o, a) in rows {
                    prop_assert!(p <= 300 && o <= 40 && a.is_none_or(f64::is_finite));
                }
            }
            Ok(other) => prop_assert!(false, "{:?}", other),
            Err(_) => {}
        }
    }

    #[test]
    fn any_field_value_in_a_trace_is_handled(value in "[-+0-9.eEinfaNx]{0,12}", row in 1usize..4, col in 0usize..3) {
        let mut lines: Vec<Vec<String>> = VALID_TRACE
            .lines()
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect();
        lines[row][col] = value;
        let text: Vec<String> = lines.iter().map(|l| l.join(",")).collect();
        let f = Scratch::new("value", text.join("\n").as_bytes());
        if let Ok(Lengths::Trace(rows)) = read_trace(&f.0) {
            let r = spec(Lengths::Trace(rows), 2048).generate();
            if let Ok(reqs) = r {
                prop_assert!(reqs.iter().all(|q| q.arrival.is_finite() && q.arrival >= 0.0));
            }
        }
    }
}
