//! Row-wise elementwise operations of the decoder: RMSNorm and the SwiGLU activation.
//! Rows are independent, so large batches are split across the rayon pool.

use pagedattn_kernels::{self as kernels, Cpu, KernelError};
use rayon::prelude::*;

/// Rows per rayon task; below twice this a batch runs on the calling thread. A decode
/// step's few rows take microseconds, less than waking the pool's other threads (whose
/// sleep and wake-up calls showed up as ~13% of a profiled serving run).
pub(crate) const ROWS_PER_TASK: usize = 32;

/// `out[r] = x[r] / rms(x[r]) * weight` for every row of width `weight.len()`.
pub(crate) fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    let row = |(xr, o): (&[f32], &mut [f32])| {
        // Sum in f64 (the norm exact to f32 precision), in eight independent partial sums:
        // one chain of dependent f64 additions waits ~4 cycles per value.
        let mut lanes = [0.0f64; 8];
        let mut chunks = xr.chunks_exact(8);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += f64::from(v) * f64::from(v);
            }
        }
        let tail: f64 = chunks
            .remainder()
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum();
        let ss = lanes.iter().sum::<f64>() + tail;
        let inv = (1.0 / (ss / d as f64 + f64::from(eps)).sqrt()) as f32;
        for ((o, &v), &w) in o.iter_mut().zip(xr).zip(weight) {
            *o = v * inv * w;
        }
    };
    if x.len() / d >= 2 * ROWS_PER_TASK {
        x.par_chunks(d)
            .zip(out.par_chunks_mut(d))
            .with_min_len(ROWS_PER_TASK)
            .for_each(row);
    } else {
        x.chunks(d).zip(out.chunks_mut(d)).for_each(row);
    }
}

/// SwiGLU: `out[r] = silu(gate) * up` where row `r` of `gate_up` is `[gate | up]`, each
/// `ffn` wide, on `cpu`'s vector path ([`pagedattn_kernels::swiglu`]).
pub(crate) fn swiglu(
    cpu: Cpu,
    gate_up: &[f32],
    ffn: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    if ffn == 0 {
        return Ok(());
    }
    let rows = out.len() / ffn;
    if rows >= 2 * ROWS_PER_TASK {
        gate_up
            .par_chunks(2 * ffn * ROWS_PER_TASK)
            .zip(out.par_chunks_mut(ffn * ROWS_PER_TASK))
            .try_for_each(|(gu, o)| kernels::swiglu(cpu, gu, ffn, o))
    } else {
        kernels::swiglu(cpu, gate_up, ffn, out)
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // silu(0) and unit rows are exact
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_rows() {
        let x = [3.0, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let mut out = [0.0; 8];
        rms_norm(&x, &[1.0, 1.0, 2.0, 1.0], 0.0, &mut out);
        assert!((out[0] - 1.2).abs() < 1e-6 && (out[1] - 1.6).abs() < 1e-6);
        assert_eq!(&out[4..], &[1.0, 1.0, 2.0, 1.0]);
    }

    #[test]
    fn swiglu_rows() {
        let gu = [0.0, 1.0, 5.0, 7.0, 100.0, -100.0, 2.0, 3.0];
        let mut out = [0.0; 4];
        swiglu(Cpu::selected(), &gu, 2, &mut out).unwrap();
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 1.0 / (1.0 + (-1f32).exp()) * 7.0).abs() < 1e-5);
        assert!((out[2] - 200.0).abs() < 1e-3);
        assert!(out[3].abs() < 1e-3);
    }
}
