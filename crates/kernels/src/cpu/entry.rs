//! The crate's one dispatch point. Every `#[target_feature]` entry function is made by the
//! [`entries!`] table below, and every kernel reaches an instruction set through one of
//! [`run_lanes`], [`run_int8`] and [`run_bf16`], given a [`Cpu`] — which exists only for
//! paths this CPU has, so the `unsafe` calls here are sound by construction.
//!
//! A kernel body is written once as an *op*: a value implementing [`LanesOp`] (generic
//! over the f32 vector token), [`Int8Op`] (over the integer token of the quantized
//! products) or [`Bf16Op`]. An entry creates its token and runs the op; the op's code and
//! everything it calls are `#[inline(always)]`, so they are compiled with the entry's
//! features. The table also holds each path's register blocking, which the ops receive as
//! const parameters (array sizes must be compile-time constants of the instantiation).

use crate::cpu::lanes::Lanes;
use crate::cpu::scalar::Scalar;
use crate::cpu::{Cpu, Isa};
use crate::products::quant::tile::{QLanes, ScalarQ};

/// A kernel body over f32 vectors.
pub(crate) trait LanesOp {
    /// What the body returns.
    type Output;
    /// Runs with `lanes`. The path's register blocking: `KEYS`, keys per register block of
    /// the rows-shaped attention tile; `ROWS` x `VECS`, activation rows by weight vectors
    /// per register block of a dense product.
    fn run<L: Lanes, const KEYS: usize, const ROWS: usize, const VECS: usize>(
        self,
        lanes: L,
    ) -> Self::Output;
}

/// A kernel body over the integer lanes of the quantized products.
pub(crate) trait Int8Op {
    /// What the body returns.
    type Output;
    /// Runs with `q`; `RX`: activation rows per tile on this path.
    fn run<Q: QLanes, const RX: usize>(self, q: Q) -> Self::Output;
}

/// A kernel body using AVX-512 BF16 dot products.
pub(crate) trait Bf16Op {
    /// What the body returns.
    type Output;
    /// Runs with the token that proves the CPU has AVX-512 BF16.
    #[cfg(target_arch = "x86_64")]
    fn run(self, t: crate::cpu::bf16::Bf16Dot) -> Self::Output;
}

/// Makes one `#[target_feature]` entry per row: `fn name(op: Trait) with Token = "features"
/// => { call };` — the entry creates the token and runs `op.call(token)`, the call naming
/// the row's constants.
macro_rules! entries {
    ($(
        $(#[$attr:meta])*
        fn $name:ident(op: $op:ident) with $token:ty = $features:literal => { $($call:tt)+ };
    )*) => {$(
        $(#[$attr])*
        ///
        /// # Safety
        #[doc = concat!("The CPU must have `", $features, "` (a [`Cpu`] that selects this path proves it).")]
        #[target_feature(enable = $features)]
        unsafe fn $name<O: $op>(op: O) -> O::Output {
            // SAFETY: this function's own contract, and it is the `#[target_feature]` entry
            // the token's code is inlined into.
            let token = unsafe { <$token>::new() };
            op.$($call)+(token)
        }
    )*};
}

// The table. Register blocking per row: f32 paths `run::<_, KEYS, ROWS, VECS>`, integer
// paths `run::<_, RX>` (the scalar rows are in `run_lanes` and `run_int8`).
entries! {
    /// f32 kernels with AVX2 + FMA + F16C (16 vector registers).
    #[cfg(target_arch = "x86_64")]
    fn lanes_avx2(op: LanesOp) with crate::cpu::avx2::Avx2 = "avx2,fma,f16c"
        => { run::<_, 8, 6, 2> };
    /// f32 kernels with AVX-512 (32 vector registers).
    #[cfg(target_arch = "x86_64")]
    fn lanes_avx512(op: LanesOp) with crate::cpu::avx512::Avx512 =
        "avx512f,avx512bw,avx512vl,avx2,fma,f16c" => { run::<_, 16, 8, 2> };
    /// f32 kernels with NEON (32 vector registers of 4 lanes).
    #[cfg(target_arch = "aarch64")]
    fn lanes_neon(op: LanesOp) with crate::cpu::neon::Neon = "neon" => { run::<_, 8, 6, 4> };
    /// Quantized products with AVX2 (`vpmaddubsw` + `vpmaddwd`).
    #[cfg(target_arch = "x86_64")]
    fn int8_avx2(op: Int8Op) with crate::products::quant::x86::Avx2Q = "avx2,fma,f16c"
        => { run::<_, 4> };
    /// Quantized products with AVX-512 VNNI (`vpdpbusd`).
    #[cfg(target_arch = "x86_64")]
    fn int8_vnni(op: Int8Op) with crate::products::quant::x86::VnniQ =
        "avx2,fma,f16c,avx512f,avx512vl,avx512vnni" => { run::<_, 8> };
    /// bf16 products with AVX-512 BF16 (`vdpbf16ps`).
    #[cfg(target_arch = "x86_64")]
    fn bf16_dot(op: Bf16Op) with crate::cpu::bf16::Bf16Dot =
        "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c" => { run };
}

/// Runs `op` on `cpu`'s vector instruction set.
#[inline]
pub(crate) fn run_lanes<O: LanesOp>(cpu: Cpu, op: O) -> O::Output {
    match cpu.isa() {
        // SAFETY: a `Cpu` names only instruction sets this CPU has (`Cpu` docs).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { lanes_avx512(op) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { lanes_avx2(op) },
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { lanes_neon(op) },
        _ => op.run::<_, 4, 4, 4>(Scalar::token()),
    }
}

/// Runs `op` on `cpu`'s integer path: VNNI where `cpu` has it, AVX2 under AVX2 or
/// AVX-512, else scalar.
#[inline]
pub(crate) fn run_int8<O: Int8Op>(cpu: Cpu, op: O) -> O::Output {
    match cpu.isa() {
        // SAFETY: `cpu.vnni()` is set only when this CPU has AVX-512 VNNI (`Cpu` docs).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if cpu.vnni() => unsafe { int8_vnni(op) },
        // SAFETY: AVX-512 and AVX2 paths both imply AVX2, FMA and F16C.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => unsafe { int8_avx2(op) },
        _ => op.run::<_, 1>(ScalarQ),
    }
}

/// Runs `op` with AVX-512 BF16 if `cpu` has it; `None` otherwise.
#[inline]
pub(crate) fn run_bf16<O: Bf16Op>(cpu: Cpu, op: O) -> Option<O::Output> {
    #[cfg(target_arch = "x86_64")]
    if cpu.bf16() {
        // SAFETY: `cpu.bf16()` is set only when this CPU has AVX-512 BF16 (`Cpu` docs).
        return Some(unsafe { bf16_dot(op) });
    }
    let _ = (cpu, op);
    None
}
