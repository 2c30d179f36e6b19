//! What the dense and quantized products share: checking a product's shapes, and splitting
//! its output features across the rayon pool.

use crate::error::{KernelError, Result};
use rayon::prelude::*;

/// Below this many multiply-adds a call runs on the calling thread.
const PARALLEL_MIN_FMAS: usize = 1 << 16;

/// Runs `task(c0, c1, out)` over ranges of output features in whole units of `unit`
/// (`c1` padded to the unit), `out` holding every row's columns of the range: on this
/// thread for small products, else `per_thread` ranges per thread of the rayon pool.
pub(crate) fn split(
    (m, n, k): (usize, usize, usize),
    y: &mut [f32],
    unit: usize,
    per_thread: usize,
    task: impl Fn(usize, usize, &mut [&mut [f32]]) + Sync,
) {
    let threads = rayon::current_num_threads();
    if threads == 1 || m * n * k < PARALLEL_MIN_FMAS {
        let mut out: Vec<&mut [f32]> = y.chunks_exact_mut(n).collect();
        task(0, n.next_multiple_of(unit), &mut out);
        return;
    }
    // Ranges as equal as whole units allow: with a few dozen units per call, finer tasks
    // left one thread a unit or more behind the other.
    let chunk = n.div_ceil(unit).div_ceil(threads * per_thread) * unit;
    let tasks = n.div_ceil(chunk);
    // Task c gets the c-th column range of every row of y: disjoint slices, no aliasing.
    let mut cols: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::with_capacity(m)).collect();
    for row in y.chunks_exact_mut(n) {
        for (c, part) in row.chunks_mut(chunk).enumerate() {
            cols[c].push(part);
        }
    }
    cols.par_iter_mut().enumerate().for_each(|(c, out)| {
        let end = ((c + 1) * chunk).min(n).next_multiple_of(unit);
        task(c * chunk, end, out);
    });
}

/// The rows `m` of a product `y [m, n] = x [m, k] W^T`, checking that `x` is whole rows and
/// `y` has `m * n` elements (`what` names the two in the error).
pub(crate) fn product_rows(
    what: [&'static str; 2],
    x: &[f32],
    k: usize,
    y: &[f32],
    n: usize,
) -> Result<usize> {
    if !x.len().is_multiple_of(k) {
        return Err(KernelError::LengthMismatch {
            what: what[0],
            expected: x.len() / k * k,
            actual: x.len(),
        });
    }
    let m = x.len() / k;
    if y.len() != m * n {
        return Err(KernelError::LengthMismatch {
            what: what[1],
            expected: m * n,
            actual: y.len(),
        });
    }
    Ok(m)
}
