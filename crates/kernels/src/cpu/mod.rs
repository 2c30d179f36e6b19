//! What this CPU can run, as one value ([`Cpu`]), and the one place kernels are compiled
//! per instruction set (`entry.rs`).
//!
//! The kernels are written once, generically over small token types — [`Lanes`] (f32
//! vectors, `lanes.rs`), the integer operations of the quantized products and the AVX-512
//! BF16 dot product — and compiled once per instruction set inside a `#[target_feature]`
//! entry function. Every entry is made by one table (`entry.rs`); everything between an
//! entry and the intrinsics is `#[inline(always)]`, so the generic code is compiled with
//! the entry's features. A token is zero-sized and only an entry creates it, after the CPU
//! was checked: holding one is the proof that its intrinsics may run.
//!
//! A [`Cpu`] is the vector instruction set ([`Isa`]) plus the dot-product extensions the
//! products use (AVX-512 VNNI, AVX-512 BF16). It is resolved once per process
//! ([`Cpu::selected`]: everything this CPU has, or the path `PAGEDATTN_ISA` names) and
//! passed down to every kernel call; its fields are private, so a `Cpu` exists only for
//! paths this CPU can run, and kernels taking one need no check of their own.
//!
//! [`Lanes`]: lanes::Lanes

use crate::error::{KernelError, Result};
use std::fmt;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod bf16;
pub(crate) mod entry;
pub(crate) mod lanes;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
pub(crate) mod scalar;

/// A vector instruction set: the width and the instructions of the f32 kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, one lane; the fallback on every CPU.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C, 8 lanes.
    Avx2,
    /// x86-64 AVX-512F (+BW/VL), 16 lanes.
    Avx512,
    /// aarch64 Advanced SIMD, 4 lanes.
    Neon,
}

impl Isa {
    /// Lower-case name (`scalar`, `avx2`, `avx512`, `neon`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
            Self::Neon => "neon",
        }
    }

    /// Parses a name as [`Isa::name`] spells it.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Scalar, Self::Avx2, Self::Avx512, Self::Neon]
            .into_iter()
            .find(|i| i.name() == s.trim().to_ascii_lowercase())
    }

    /// Whether this CPU can run the instruction set (checked once, then cached).
    pub fn is_available(self) -> bool {
        detected().isa[self as usize]
    }

    /// Every instruction set this CPU can run, fastest first (scalar last).
    pub fn available() -> Vec<Self> {
        [Self::Avx512, Self::Avx2, Self::Neon, Self::Scalar]
            .into_iter()
            .filter(|i| i.is_available())
            .collect()
    }

    /// Vector width in f32 lanes.
    pub const fn lanes(self) -> usize {
        match self {
            Self::Scalar => 1,
            Self::Avx2 => 8,
            Self::Avx512 => 16,
            Self::Neon => 4,
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the CPU reports, read once.
#[derive(Clone, Copy, Debug)]
struct Detected {
    /// Indexed by `Isa as usize`.
    isa: [bool; 4],
    /// AVX-512 VNNI (`vpdpbusd`), with AVX-512F/VL.
    vnni: bool,
    /// AVX-512 BF16 (`vdpbf16ps`), with AVX-512F/BW/VL.
    bf16: bool,
}

fn detected() -> Detected {
    static CACHE: OnceLock<Detected> = OnceLock::new();
    *CACHE.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Detected {
    use std::arch::is_x86_feature_detected as has;
    let avx2 = has!("avx2") && has!("fma") && has!("f16c");
    let avx512 = avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl");
    Detected {
        isa: [true, avx2, avx512, false],
        vnni: avx512 && has!("avx512vnni"),
        bf16: avx512 && has!("avx512bf16"),
    }
}

#[cfg(target_arch = "aarch64")]
fn detect() -> Detected {
    Detected {
        isa: [
            true,
            false,
            false,
            std::arch::is_aarch64_feature_detected!("neon"),
        ],
        vnni: false,
        bf16: false,
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> Detected {
    Detected {
        isa: [true, false, false, false],
        vnni: false,
        bf16: false,
    }
}

/// A code path this CPU can run: a vector instruction set and the dot-product extensions
/// the products may use. Obtained only from detection or a checked constructor, so holding
/// one proves the CPU has it (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cpu {
    isa: Isa,
    vnni: bool,
    bf16: bool,
}

impl Cpu {
    /// The scalar path, which every CPU runs.
    pub const fn scalar() -> Self {
        Self {
            isa: Isa::Scalar,
            vnni: false,
            bf16: false,
        }
    }

    /// `isa` without extensions, if this CPU has it.
    pub fn new(isa: Isa) -> Result<Self> {
        if !isa.is_available() {
            return Err(KernelError::IsaUnavailable(isa.name()));
        }
        Ok(Self {
            isa,
            vnni: false,
            bf16: false,
        })
    }

    /// The same path with AVX-512 VNNI int8 products, if this CPU has them (AVX-512 only).
    pub fn with_vnni(self) -> Result<Self> {
        if self.isa != Isa::Avx512 || !detected().vnni {
            return Err(KernelError::IsaUnavailable("avx512+vnni"));
        }
        Ok(Self { vnni: true, ..self })
    }

    /// The same path with AVX-512 BF16 products, if this CPU has them (AVX-512 only).
    pub fn with_bf16(self) -> Result<Self> {
        if self.isa != Isa::Avx512 || !detected().bf16 {
            return Err(KernelError::IsaUnavailable("avx512+bf16"));
        }
        Ok(Self { bf16: true, ..self })
    }

    /// Everything this CPU has: the fastest instruction set with every extension.
    pub fn best() -> Self {
        let d = detected();
        let isa = Isa::available()[0];
        Self {
            isa,
            vnni: isa == Isa::Avx512 && d.vnni,
            bf16: isa == Isa::Avx512 && d.bf16,
        }
    }

    /// The process-wide path: the one `PAGEDATTN_ISA` names (see [`Cpu::parse`]) when this
    /// CPU has it, else [`Cpu::best`]. Read once; a name this CPU cannot run is reported on
    /// standard error and ignored.
    pub fn selected() -> Self {
        static SELECTED: OnceLock<Cpu> = OnceLock::new();
        *SELECTED.get_or_init(|| match std::env::var("PAGEDATTN_ISA") {
            Ok(name) => Self::parse(&name).unwrap_or_else(|e| {
                let best = Self::best();
                eprintln!("PAGEDATTN_ISA={name}: {e}; using {best}");
                best
            }),
            Err(_) => Self::best(),
        })
    }

    /// Every distinct path this CPU can run, [`Cpu::best`] first and scalar last: each
    /// instruction set, and under AVX-512 each combination of the extensions. Tests run
    /// every kernel on each.
    pub fn paths() -> Vec<Self> {
        let mut out = Vec::new();
        for isa in Isa::available() {
            let base = Self {
                isa,
                vnni: false,
                bf16: false,
            };
            for (vnni, bf16) in [(true, true), (true, false), (false, true), (false, false)] {
                let mut c = Ok(base);
                if vnni {
                    c = c.and_then(Self::with_vnni);
                }
                if bf16 {
                    c = c.and_then(Self::with_bf16);
                }
                if let Ok(c) = c {
                    out.push(c);
                }
            }
        }
        out
    }

    /// Parses a path name as [`fmt::Display`] writes it: an instruction set, then `+vnni`
    /// and/or `+bf16` (`scalar`, `avx2`, `avx512`, `avx512+vnni`, `avx512+vnni+bf16`,
    /// `neon`, ...). Errors if the name is unknown or this CPU cannot run the path.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let mut parts = s.split('+');
        let isa = parts.next().unwrap_or_default();
        let isa = Isa::parse(isa).ok_or_else(|| {
            KernelError::InvalidShape(format!(
                "unknown instruction set '{isa}' (expected scalar, avx2, avx512 or neon, \
                 optionally followed by +vnni and/or +bf16)"
            ))
        })?;
        let mut cpu = Self::new(isa)?;
        for ext in parts {
            cpu = match ext {
                "vnni" => cpu.with_vnni()?,
                "bf16" => cpu.with_bf16()?,
                other => {
                    return Err(KernelError::InvalidShape(format!(
                        "unknown extension '+{other}' (expected +vnni or +bf16)"
                    )))
                }
            };
        }
        Ok(cpu)
    }

    /// The vector instruction set.
    pub const fn isa(self) -> Isa {
        self.isa
    }

    /// Whether int8 products use AVX-512 VNNI.
    pub const fn vnni(self) -> bool {
        self.vnni
    }

    /// Whether bf16 products may use AVX-512 BF16.
    pub const fn bf16(self) -> bool {
        self.bf16
    }

    /// The instruction the int8 (quantized) products run on this path: `vpdpbusd` (AVX-512
    /// VNNI), `vpmaddubsw` (AVX2, also under AVX-512 without VNNI) or `scalar`.
    pub const fn int8_instruction(self) -> &'static str {
        match self.isa {
            _ if self.vnni => "vpdpbusd",
            Isa::Avx512 | Isa::Avx2 => "vpmaddubsw",
            _ => "scalar",
        }
    }

    /// The instruction bf16 products run on this path: `vdpbf16ps` (AVX-512 BF16), else the
    /// f32 FMA on widened values (`fma`, or `scalar`).
    pub const fn bf16_instruction(self) -> &'static str {
        match self.isa {
            _ if self.bf16 => "vdpbf16ps",
            Isa::Avx512 | Isa::Avx2 | Isa::Neon => "fma",
            Isa::Scalar => "scalar",
        }
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.isa.name())?;
        if self.vnni {
            f.write_str("+vnni")?;
        }
        if self.bf16 {
            f.write_str("+bf16")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Cpu, Isa};

    #[test]
    fn names_round_trip() {
        for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon] {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
        }
        for cpu in Cpu::paths() {
            assert_eq!(Cpu::parse(&cpu.to_string()), Ok(cpu));
        }
        assert_eq!(Cpu::paths().first(), Some(&Cpu::best()));
        assert_eq!(Cpu::paths().last(), Some(&Cpu::scalar()));
    }

    #[test]
    fn paths_this_cpu_lacks_and_bad_names_are_refused() {
        for isa in [Isa::Avx2, Isa::Avx512, Isa::Neon] {
            assert_eq!(Cpu::new(isa).is_ok(), isa.is_available());
        }
        assert!(Cpu::scalar().with_vnni().is_err());
        assert!(Cpu::scalar().with_bf16().is_err());
        assert!(Cpu::parse("avx9").is_err());
        assert!(Cpu::parse("scalar+vnni").is_err());
        assert!(Cpu::parse("avx512+fast").is_err());
    }

    #[test]
    fn each_path_names_the_instructions_its_products_run() {
        assert_eq!(Cpu::scalar().int8_instruction(), "scalar");
        assert_eq!(Cpu::scalar().bf16_instruction(), "scalar");
        for cpu in Cpu::paths() {
            let int8 = match cpu.to_string() {
                s if s.contains("vnni") => "vpdpbusd",
                s if s.starts_with("avx") => "vpmaddubsw",
                _ => "scalar",
            };
            assert_eq!(cpu.int8_instruction(), int8, "{cpu}");
            assert_eq!(
                cpu.bf16_instruction() == "vdpbf16ps",
                cpu.to_string().ends_with("+bf16"),
                "{cpu}"
            );
        }
    }
}
