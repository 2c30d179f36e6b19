//! GGML element types and their dequantization to f32.
//!
//! A tensor is floats (`F32`, `F16`, `BF16`) or blocks of a quantized type; the quantized
//! types, their block layouts and their dequantization live with the products that read
//! them ([`pagedattn_kernels::QuantType`]).

use crate::error::{ModelError, Result};
use half::f16;
use pagedattn_kernels::{dequantize_blocks, QuantType};
use rayon::prelude::*;

/// Blocks per rayon task when dequantizing.
const BLOCKS_PER_TASK: usize = 1024;

/// The tensor element types this crate can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
    /// Blocks of a quantized type.
    Quant(QuantType),
}

impl GgmlType {
    /// The type with GGML's numeric id, if supported.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            30 => Self::Bf16,
            2 => Self::Quant(QuantType::Q4_0),
            3 => Self::Quant(QuantType::Q4_1),
            8 => Self::Quant(QuantType::Q8_0),
            12 => Self::Quant(QuantType::Q4K),
            13 => Self::Quant(QuantType::Q5K),
            14 => Self::Quant(QuantType::Q6K),
            _ => return None,
        })
    }

    /// GGML's name for any type id, supported or not (for error messages).
    pub fn id_name(id: u32) -> String {
        const NAMES: [&str; 31] = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
            "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
            "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
            "BF16",
        ];
        NAMES
            .get(id as usize)
            .map_or_else(|| format!("#{id}"), |n| (*n).to_string())
    }

    /// GGML's name for the type.
    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
            Self::Quant(q) => q.name(),
        }
    }

    /// Bytes holding `elems` values, or `None` if `elems` is not a whole number of blocks
    /// or the size does not fit in `usize`.
    pub fn byte_size(self, elems: usize) -> Option<usize> {
        match self {
            Self::F32 => elems.checked_mul(4),
            Self::F16 | Self::Bf16 => elems.checked_mul(2),
            // Checked: 34 bytes per 32 values can wrap to a small size that would pass the
            // file's bounds check (found by the cargo-fuzz target).
            Self::Quant(q) => elems
                .is_multiple_of(q.block_values())
                .then(|| (elems / q.block_values()).checked_mul(q.block_bytes()))
                .flatten(),
        }
    }
}

/// Dequantizes `bytes` of type `kind` into `out` (whose length is the element count).
/// The caller guarantees `bytes.len() == kind.byte_size(out.len())`; a mismatch is an error.
pub fn dequantize(kind: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    if kind.byte_size(out.len()) != Some(bytes.len()) {
        return Err(ModelError::CorruptGguf(format!(
            "{} data of {} bytes cannot hold {} values",
            kind.name(),
            bytes.len(),
            out.len()
        )));
    }
    // Chunks of whole blocks, so every type can be split the same way across threads.
    let (block_bytes, block_elems) = match kind {
        GgmlType::F32 => (4, 1),
        GgmlType::F16 | GgmlType::Bf16 => (2, 1),
        GgmlType::Quant(q) => (q.block_bytes(), q.block_values()),
    };

    out.par_chunks_mut(block_elems * BLOCKS_PER_TASK)
        .zip(bytes.par_chunks(block_bytes * BLOCKS_PER_TASK))
        .try_for_each(|(o, b)| match kind {
            GgmlType::F32 => {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(4)) {
                    *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
                Ok(())
            }
            GgmlType::F16 => {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *x = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
                Ok(())
            }
            GgmlType::Bf16 => {
                for (x, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *x = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
                Ok(())
            }
            // Whole blocks of the checked total: the lengths agree.
            GgmlType::Quant(q) => dequantize_blocks(q, b, o).map_err(ModelError::Kernel),
        })
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // dequantized values are exact here
mod tests {
    use super::*;
    use pagedattn_kernels::QK;

    #[test]
    fn block_type_sizes_that_would_overflow_are_none() {
        // The crash input the GGUF fuzz target found: a Q8_0 tensor of ~usize::MAX / 2
        // elements, whose byte size wrapped (a panic with overflow checks, a small
        // bogus size without).
        let huge = usize::MAX / QK * QK;
        // (Q4_1's 20 bytes per 32 values cannot overflow.)
        for kind in [
            GgmlType::Quant(QuantType::Q8_0),
            GgmlType::F32,
            GgmlType::F16,
        ] {
            assert_eq!(kind.byte_size(huge), None, "{kind:?}");
        }
        assert_eq!(GgmlType::Quant(QuantType::Q8_0).byte_size(64), Some(68));
        assert_eq!(GgmlType::Quant(QuantType::Q4_1).byte_size(33), None);
    }

    #[test]
    fn q4_1_block_layout() {
        let mut b = Vec::new();
        b.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = vec![0.0; QK];
        dequantize(GgmlType::Quant(QuantType::Q4_1), &b, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], j as f32 * 0.5 - 1.0);
            assert_eq!(out[j + 16], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn q8_0_block_layout() {
        let mut b = Vec::new();
        b.extend_from_slice(&f16::from_f32(0.25).to_le_bytes());
        b.extend((0..32).map(|j: i32| (j - 16) as i8 as u8));
        let mut out = vec![0.0; QK];
        dequantize(GgmlType::Quant(QuantType::Q8_0), &b, &mut out).unwrap();
        for (j, x) in out.iter().enumerate() {
            assert_eq!(*x, (j as f32 - 16.0) * 0.25);
        }
    }

    #[test]
    fn float_types_and_size_checks() {
        let mut out = vec![0.0; 2];
        let b: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        dequantize(GgmlType::F32, &b, &mut out).unwrap();
        assert_eq!(out, [1.5, -2.0]);
        let b: Vec<u8> = [f16::from_f32(3.0), f16::from_f32(0.5)]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        dequantize(GgmlType::F16, &b, &mut out).unwrap();
        assert_eq!(out, [3.0, 0.5]);
        assert!(dequantize(GgmlType::F32, &b[..3], &mut out).is_err());
        assert_eq!(GgmlType::Quant(QuantType::Q4_1).byte_size(33), None);
        assert_eq!(GgmlType::from_id(6), None);
    }
}
