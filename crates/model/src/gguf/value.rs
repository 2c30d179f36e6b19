//! What a GGUF file's metadata and tensor directory hold, as plain values.

use crate::quant::GgmlType;

/// Dimensions a tensor may have, at most.
pub(crate) const MAX_DIMS: u32 = 4;
/// The metadata value type id of an array.
pub(crate) const ARRAY_TYPE: u32 = 9;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// `f32` or `f64`.
    F64(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values of one type.
    Array(Array),
}

/// A metadata array, stored by element kind; element types map as the scalar ones do
/// (`u8`..`u64` to [`Array::U64`], `i8`..`i64` to [`Array::I64`], `f32`/`f64` to
/// [`Array::F64`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    /// Elements of any unsigned integer type.
    U64(Vec<u64>),
    /// Elements of any signed integer type.
    I64(Vec<i64>),
    /// `f32` or `f64` elements.
    F64(Vec<f64>),
    /// Booleans.
    Bool(Vec<bool>),
    /// UTF-8 strings.
    Str(Vec<String>),
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::Str(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as an unsigned integer, if it exists and is a non-negative integer.
    pub fn u64_at(&self, i: usize) -> Option<u64> {
        match self {
            Array::U64(v) => v.get(i).copied(),
            Array::I64(v) => v.get(i).and_then(|&x| u64::try_from(x).ok()),
            _ => None,
        }
    }

    /// The elements, if they are strings.
    pub fn as_strs(&self) -> Option<&[String]> {
        match self {
            Array::Str(v) => Some(v),
            _ => None,
        }
    }
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The value as an array of strings.
    pub fn as_strs(&self) -> Option<&[String]> {
        self.as_array().and_then(Array::as_strs)
    }
}

/// One entry of the tensor directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, fastest-varying first (GGUF order): a `[out, in]` matrix is `[in, out]`.
    pub dims: Vec<usize>,
    /// Element type.
    pub kind: GgmlType,
    /// Byte offset of the data within the data section.
    pub offset: usize,
    /// Bytes of data.
    pub size: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elems(&self) -> usize {
        self.dims.iter().product()
    }
}
