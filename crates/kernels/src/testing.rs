//! Test support: run a check on every code path this CPU has, and say loudly which paths
//! it lacks. A machine's expected paths can be named in `PAGEDATTN_EXPECT_PATHS`
//! (comma-separated [`Cpu`] names, as `scripts/cpu-paths.sh` derives them from
//! `/proc/cpuinfo`): a path named there that a test has to skip fails the test, so a CI
//! machine never passes while silently testing less than it has.

use crate::cpu::{Cpu, Isa};

/// Every path a kernel can take on some CPU, by name.
pub const ALL_PATHS: [&str; 7] = [
    "avx512+vnni+bf16",
    "avx512+vnni",
    "avx512+bf16",
    "avx512",
    "avx2",
    "neon",
    "scalar",
];

/// Reports that a test did not run `path` because this CPU lacks it: written to standard
/// error past the test harness's capture (so it shows for passing tests too), once per
/// process, and a panic if `PAGEDATTN_EXPECT_PATHS` says this machine has it.
pub fn skipped(path: &str) {
    use std::io::Write;
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !said.iter().any(|p| p == path) {
        said.push(path.to_string());
        // Once per test binary, written past the harness's capture.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: code path {path}: this CPU does not have it"
        );
    }
    if let Ok(expected) = std::env::var("PAGEDATTN_EXPECT_PATHS") {
        assert!(
            !expected.split(',').any(|p| p.trim() == path),
            "code path {path} is expected on this machine (PAGEDATTN_EXPECT_PATHS={expected}) \
             but the CPU check says it is missing"
        );
    }
}

/// Runs `check` on every path of [`ALL_PATHS`] this CPU has; reports the others with
/// [`skipped`].
pub fn every_path(mut check: impl FnMut(Cpu)) {
    for name in ALL_PATHS {
        match Cpu::parse(name) {
            Ok(cpu) => check(cpu),
            Err(_) => skipped(name),
        }
    }
}

/// Runs `check` on each instruction set this CPU has (without extensions); reports the
/// others with [`skipped`].
pub fn every_isa(mut check: impl FnMut(Cpu)) {
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar] {
        match Cpu::new(isa) {
            Ok(cpu) => check(cpu),
            Err(_) => skipped(isa.name()),
        }
    }
}
