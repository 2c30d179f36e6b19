//! This machine's facts for benchmark reports: CPU name, last-level cache size, and
//! DRAM read bandwidth measured STREAM-style.

use pagedattn_kernels::{sum_f32, Cpu};
use std::time::Instant;

/// STREAM-style read bandwidth with `rayon::current_num_threads()` threads: each sums its
/// share of an array four times the last-level cache (at least 1 GiB); best of five.
pub fn read_bandwidth_gbps(cpu: Cpu, llc: usize) -> f64 {
    use rayon::prelude::*;
    let bytes = (4 * llc).max(1 << 30);
    let data: Vec<f32> = (0..bytes / 4).map(|i| (i % 1024) as f32).collect();
    let threads = rayon::current_num_threads();
    let chunk = data.len().div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let total: f32 = data.par_chunks(chunk).map(|c| sum_f32(cpu, c)).sum();
        std::hint::black_box(total);
        best = best.min(t.elapsed().as_secs_f64());
    }
    bytes as f64 / best / 1e9
}

/// Size of the last-level cache in bytes, from sysfs (a large default where unknown).
pub fn llc_bytes() -> usize {
    let parse = |s: &str| {
        let s = s.trim();
        let (num, mul) = match s.chars().last() {
            Some('K') => (&s[..s.len() - 1], 1 << 10),
            Some('M') => (&s[..s.len() - 1], 1 << 20),
            _ => (s, 1),
        };
        num.parse::<usize>().ok().map(|n| n * mul)
    };
    (0..8)
        .filter_map(|i| {
            std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size"))
                .ok()
        })
        .filter_map(|s| parse(&s))
        .max()
        .unwrap_or(256 << 20)
}

/// The CPU's model name, from /proc/cpuinfo.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
