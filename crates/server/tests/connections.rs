//! 1,000 concurrent streaming connections, five times over: every stream completes with no
//! error, nothing stays in flight, and once the allocator is warm the process's memory does
//! not grow from round to round (what one round left behind, the next would add to).

mod common;

use common::{assemble, post_stream, tiny};
use pagedattn_server::ServerOptions;
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes in use: heap growth measured exactly, where
/// the resident set also moves with the allocator's arenas and caches.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call goes to the system allocator unchanged; the counter only observes.
// This test's counting allocator is the one place outside the kernels crate with `unsafe`
// (the `GlobalAlloc` contract); the library crates forbid it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as i64 - l.size() as i64, Ordering::Relaxed);
        // SAFETY: `p` came from this allocator with layout `l`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const CONNECTIONS: u32 = 1000;
/// Rounds in all, of which the first `WARM_UP` warm the allocator.
const ROUNDS: usize = 5;
const WARM_UP: usize = 1;

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

async fn round(url: &str) -> Duration {
    let t = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let url = url.to_string();
            tokio::spawn(async move {
                let body = json!({
                    "prompt": [i % 250 + 1, 3, 5, 7], "max_tokens": 16,
                    "temperature": 0, "ignore_eos": true, "stream": true,
                });
                let (texts, reasons, _) =
                    assemble(&post_stream(&url, "/v1/completions", &body).await);
                assert_eq!(reasons[0].as_deref(), Some("length"));
                texts.len()
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a stream hung")
            .expect("a stream failed");
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_without_memory_growth() {
    let srv = tiny(ServerOptions {
        max_waiting: 2 * CONNECTIONS as usize,
        ..ServerOptions::default()
    })
    .await;
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let mut rss_after = vec![rss()];
    let mut heap_after = vec![LIVE.load(Ordering::Relaxed)];
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        times.push(round(&srv.url).await.as_secs_f64());
        srv.wait_idle().await;
        // Let closed connections' tasks finish dropping their buffers.
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss_after.push(rss());
        heap_after.push(LIVE.load(Ordering::Relaxed));
    }
    let st = srv.state.engine.stats();
    assert_eq!(
        st.totals.finished_requests,
        ROUNDS as u64 * u64::from(CONNECTIONS)
    );
    assert_eq!(
        st.totals.output_tokens,
        ROUNDS as u64 * 16 * u64::from(CONNECTIONS)
    );
    eprintln!(
        "{CONNECTIONS} concurrent streams x {ROUNDS} rounds: seconds {times:.2?}; heap in use, MiB, before and after each round {:.2?}; RSS MiB {:.1?}",
        heap_after.iter().map(|&b| b as f64 / f64::from(1 << 20)).collect::<Vec<_>>(),
        rss_after.iter().map(|&b| mib(b)).collect::<Vec<_>>()
    );
    // After the first round (which sizes pools and caches), a round may reuse what earlier
    // ones left, not add to it: under 256 bytes per request and round.
    let warm = heap_after[WARM_UP];
    let last = heap_after[ROUNDS];
    let per_request = (last - warm) / ((ROUNDS - WARM_UP) as i64 * i64::from(CONNECTIONS));
    assert!(
        per_request < 256,
        "heap grew after warm-up: {warm} -> {last} bytes ({per_request} bytes per request)"
    );
    srv.shutdown().await.unwrap();
}
