//! Storage element types. K and V may be stored as f32, f16 or bf16; arithmetic is always
//! f32, so the narrow types only halve the bytes read — which is what decode is bound by.

use half::{bf16, f16};
use std::fmt;

/// Element type of a KV store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16 (the top half of an f32).
    Bf16,
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    /// Lower-case name, as accepted by [`DType::parse`].
    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }

    /// Parses `f32`, `f16` or `bf16`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Some(Self::F32),
            "f16" | "fp16" | "float16" => Some(Self::F16),
            "bf16" | "bfloat16" => Some(Self::Bf16),
            _ => None,
        }
    }

    /// Rounds `x` to this type and back, as storing and loading it would.
    pub fn round(self, x: f32) -> f32 {
        match self {
            Self::F32 => x,
            Self::F16 => f16::from_f32(x).to_f32(),
            Self::Bf16 => bf16::from_f32(x).to_f32(),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A storage element: converts from f32 on write and widens to f32 on read.
pub trait KvElem: bytemuck::Pod + Send + Sync + Default + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Rounds an f32 to this type.
    fn from_f32(x: f32) -> Self;
    /// Widens to f32 (exact).
    fn to_f32(self) -> f32;
    /// The slice itself when the type is f32, so f32 tiles are read in place.
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
    /// The raw 16-bit patterns when the type is f16 or bf16, for SIMD widening.
    fn as_bits(s: &[Self]) -> Option<&[u16]>;
}

impl KvElem for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    #[inline(always)]
    fn as_bits(_: &[Self]) -> Option<&[u16]> {
        None
    }
}

impl KvElem for f16 {
    const DTYPE: DType = DType::F16;
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline(always)]
    fn as_bits(s: &[Self]) -> Option<&[u16]> {
        use half::slice::HalfFloatSliceExt;
        Some(s.reinterpret_cast())
    }
}

impl KvElem for bf16 {
    const DTYPE: DType = DType::Bf16;
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline(always)]
    fn as_bits(s: &[Self]) -> Option<&[u16]> {
        use half::slice::HalfFloatSliceExt;
        Some(s.reinterpret_cast())
    }
}
