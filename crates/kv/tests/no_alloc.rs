//! Single-block operations, stats and lookups do not touch the heap once a sequence's
//! table has grown to its size. Counted with a global allocator wrapper that counts only
//! the calls made by the thread under test (the test harness's own threads allocate too).

use pagedattn_kv::{BlockManager, KvConfig, SeqId};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.with(Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
// This test's counting allocator is the one place outside the kernels crate with `unsafe`
// (the `GlobalAlloc` contract); the library crates forbid it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn single_block_operations_do_not_allocate() {
    for prefix_caching in [false, true] {
        let cfg = KvConfig::new(10_000).with_prefix_caching(prefix_caching);
        let mut m = BlockManager::new(cfg).unwrap();
        let s = SeqId(1);
        m.add_sequence(s).unwrap();
        m.append_tokens(s, &[7; 100]).unwrap();
        let warm = m.allocate_block(s).unwrap();
        m.free_block(s, warm).unwrap();

        let before = ALLOCS.load(Ordering::Relaxed);
        COUNTING.with(|c| c.set(true));
        for i in 0..10_000 {
            let b = m.allocate_block(s).unwrap();
            m.free_block(s, b).unwrap();
            black_box(m.stats());
            black_box(m.tables().lookup(s, i % 100).unwrap());
            black_box(m.tables().stats());
        }
        COUNTING.with(|c| c.set(false));
        assert_eq!(
            ALLOCS.load(Ordering::Relaxed) - before,
            0,
            "caching {prefix_caching}"
        );
    }
}
