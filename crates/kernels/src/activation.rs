//! The MLP's activation on the vector path: SwiGLU, `silu(gate) * up`, with the vector
//! `exp` the attention softmax uses (a library `expf` per value cost about 3% of a decode
//! step of 16 sequences).

use crate::cpu::entry::{run_lanes, LanesOp};
use crate::cpu::lanes::{exp, Lanes};
use crate::cpu::Cpu;
use crate::error::{KernelError, Result};

/// `out[r] = silu(gate[r]) * up[r]` for every row `r`, where row `r` of `gate_up` is
/// `[gate | up]`, each `ffn` wide; `silu(g) = g / (1 + e^-g)`. A NaN in `gate` or `up`
/// gives NaN. Relative error about 1e-6 (the vector `exp`).
///
/// ```
/// use pagedattn_kernels::{swiglu, Cpu};
/// let mut out = [0.0f32; 2];
/// swiglu(Cpu::selected(), &[0.0, 10.0, 5.0, 2.0], 2, &mut out)?;
/// assert_eq!(out[0], 0.0);
/// assert!((out[1] - 10.0 / (1.0 + (-10f32).exp()) * 2.0).abs() < 1e-4);
/// # Ok::<(), pagedattn_kernels::KernelError>(())
/// ```
pub fn swiglu(cpu: Cpu, gate_up: &[f32], ffn: usize, out: &mut [f32]) -> Result<()> {
    if ffn == 0 || !out.len().is_multiple_of(ffn) || gate_up.len() != 2 * out.len() {
        return Err(KernelError::LengthMismatch {
            what: "swiglu gate_up",
            expected: 2 * out.len(),
            actual: gate_up.len(),
        });
    }
    run_lanes(cpu, Swiglu { gate_up, ffn, out });
    Ok(())
}

struct Swiglu<'a> {
    gate_up: &'a [f32],
    ffn: usize,
    out: &'a mut [f32],
}

impl LanesOp for Swiglu<'_> {
    type Output = ();

    #[inline(always)]
    fn run<L: Lanes, const KEYS: usize, const ROWS: usize, const VECS: usize>(self, l: L) {
        let f = self.ffn;
        let w = L::W;
        let one = l.splat(1.0);
        for (gu, o) in self
            .gate_up
            .chunks_exact(2 * f)
            .zip(self.out.chunks_exact_mut(f))
        {
            let (g, u) = gu.split_at(f);
            let body = f / w * w;
            for j in (0..body).step_by(w) {
                let gv = l.load(&g[j..]);
                let e = exp(l, l.sub(l.zero(), gv));
                l.store(
                    &mut o[j..],
                    l.mul(l.div(gv, l.add(one, e)), l.load(&u[j..])),
                );
            }
            for j in body..f {
                o[j] = g[j] / (1.0 + (-g[j]).exp()) * u[j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::swiglu;
    use crate::testing::every_path;

    #[test]
    fn every_path_matches_the_scalar_definition() {
        // 37 wide: vector body and scalar tail on every path; values from -100 to 100.
        let ffn = 37;
        let rows = 3;
        let gate_up: Vec<f32> = (0..rows * 2 * ffn)
            .map(|i| ((i * 37 % 201) as f32 - 100.0) * if i % 3 == 0 { 0.05 } else { 1.0 })
            .collect();
        every_path(|cpu| {
            let mut out = vec![f32::NAN; rows * ffn];
            swiglu(cpu, &gate_up, ffn, &mut out).unwrap();
            for r in 0..rows {
                for j in 0..ffn {
                    let g = f64::from(gate_up[r * 2 * ffn + j]);
                    let u = f64::from(gate_up[r * 2 * ffn + ffn + j]);
                    let want = g / (1.0 + (-g).exp()) * u;
                    let got = f64::from(out[r * ffn + j]);
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs() + 1e-30,
                        "{cpu} [{r},{j}] silu({g}) * {u}: {got} vs {want}"
                    );
                }
            }
        });
    }

    #[test]
    fn nan_propagates_and_bad_lengths_are_errors() {
        every_path(|cpu| {
            let mut gu = vec![1.0f32; 32];
            gu[3] = f32::NAN;
            gu[16 + 5] = f32::NAN;
            let mut out = vec![0.0; 16];
            swiglu(cpu, &gu, 16, &mut out).unwrap();
            assert!(out[3].is_nan() && out[5].is_nan(), "{cpu}: {out:?}");
            assert!(out[0].is_finite());
        });
        let cpu = crate::Cpu::selected();
        assert!(swiglu(cpu, &[0.0; 7], 2, &mut [0.0; 4]).is_err());
        assert!(swiglu(cpu, &[0.0; 8], 0, &mut [0.0; 4]).is_err());
        assert!(swiglu(cpu, &[0.0; 8], 3, &mut [0.0; 4]).is_err());
    }
}
