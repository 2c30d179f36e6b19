//! A counting allocator for the hostile-input tests: the peak bytes the calling thread
//! allocates while a closure runs (per thread, so tests running in parallel do not disturb
//! each other's counts). A test binary installs it with
//! `#[global_allocator] static GLOBAL: counting::Counting = counting::Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting this thread's live and peak bytes while switched on.
pub struct Counting;

#[derive(Clone, Copy)]
struct Count {
    on: bool,
    live: isize,
    peak: isize,
}

thread_local! {
    static COUNT: Cell<Count> = const {
        Cell::new(Count {
            on: false,
            live: 0,
            peak: 0,
        })
    };
}

fn add(bytes: isize) {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    let _ = COUNT.try_with(|c| {
        let mut n = c.get();
        if n.on {
            n.live += bytes;
            n.peak = n.peak.max(n.live);
            c.set(n);
        }
    });
}

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
// This test's counting allocator is the one place outside the kernels crate with `unsafe`
// (the `GlobalAlloc` contract); the library crates forbid it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a new block before the old one is freed: the worst case.
        add(new_size as isize);
        add(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f`; returns the peak bytes it allocated beyond what was live before, and its result.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let start = Count {
        on: true,
        live: 0,
        peak: 0,
    };
    COUNT.with(|c| c.set(start));
    let r = f();
    let end = COUNT.with(|c| c.replace(Count { on: false, ..start }));
    (end.peak.max(0) as usize, r)
}
