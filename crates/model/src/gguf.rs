//! A GGUF reader: header, metadata and tensor directory (GGUF v2 and v3, little-endian).
//!
//! The file is read into memory once; tensor data is borrowed from that buffer until the
//! weights are dequantized, then dropped. Every length read from the file is checked against
//! the bytes that remain before anything is allocated, so a truncated or hostile file is a
//! [`ModelError::CorruptGguf`], not a huge allocation or an out-of-bounds read.

use crate::error::{ModelError, Result};
use crate::quant::GgmlType;
use std::collections::BTreeMap;
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: u32 = 4;

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
    /// Array of values (of one type).
    Array(Vec<Value>),
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
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
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

/// A parsed GGUF file with its bytes.
#[derive(Debug)]
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata key-value pairs.
    pub metadata: BTreeMap<String, Value>,
    /// Tensor directory, in file order.
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

impl GgufFile {
    /// Reads and parses a file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::parse(bytes)
    }

    /// Parses a file already in memory.
    pub fn parse(bytes: Vec<u8>) -> Result<Self> {
        let mut r = Reader {
            bytes: &bytes,
            pos: 0,
        };
        if r.take(4)? != MAGIC {
            return Err(corrupt("not a GGUF file (bad magic)"));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(corrupt(format!("unsupported GGUF version {version}")));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string()?;
            let kind = r.u32()?;
            let value = r.value(kind, 0)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::new();
        for _ in 0..tensor_count {
            tensors.push(r.tensor_info()?);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .filter(|&a| a > 0)
                .ok_or_else(|| corrupt("bad general.alignment"))?,
        };
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        let data_start =
            usize::try_from(data_start).map_err(|_| corrupt("data offset overflows"))?;
        let data_len = bytes.len().saturating_sub(data_start);
        for t in &tensors {
            if t.offset
                .checked_add(t.size)
                .is_none_or(|end| end > data_len)
            {
                return Err(corrupt(format!(
                    "tensor {} extends past the end of the file (truncated?)",
                    t.name
                )));
            }
        }
        Ok(Self {
            version,
            metadata,
            tensors,
            bytes,
            data_start,
        })
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// The directory entry of a tensor.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor (bounds were checked at parse time).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        let start = self.data_start + t.offset;
        &self.bytes[start..start + t.size]
    }
}

fn corrupt(msg: impl Into<String>) -> ModelError {
    ModelError::CorruptGguf(msg.into())
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| corrupt(format!("truncated at byte {}", self.pos)))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items of at least `min_item_bytes` each, checked against what remains.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_item_bytes.max(1) as u64) > remaining {
            return Err(corrupt(format!(
                "length {n} at byte {} exceeds the file",
                self.pos - 8
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.count(1)?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| corrupt(format!("invalid UTF-8 string at byte {}", self.pos - n)))
    }

    fn value(&mut self, kind: u32, depth: u32) -> Result<Value> {
        Ok(match kind {
            0 => Value::U64(u64::from(self.array::<1>()?[0])),
            1 => Value::I64(i64::from(i8::from_le_bytes(self.array()?))),
            2 => Value::U64(u64::from(u16::from_le_bytes(self.array()?))),
            3 => Value::I64(i64::from(i16::from_le_bytes(self.array()?))),
            4 => Value::U64(u64::from(self.u32()?)),
            5 => Value::I64(i64::from(i32::from_le_bytes(self.array()?))),
            6 => Value::F64(f64::from(f32::from_le_bytes(self.array()?))),
            7 => Value::Bool(self.array::<1>()?[0] != 0),
            8 => Value::Str(self.string()?),
            9 if depth == 0 => {
                let inner = self.u32()?;
                let n = self.count(1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            _ => {
                return Err(corrupt(format!(
                    "unknown metadata value type {kind} at byte {}",
                    self.pos
                )))
            }
        })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo> {
        let name = self.string()?;
        let n_dims = self.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(corrupt(format!("tensor {name}: {n_dims} dimensions")));
        }
        let mut dims = Vec::new();
        for _ in 0..n_dims {
            let d = usize::try_from(self.u64()?)
                .map_err(|_| corrupt(format!("tensor {name}: dimension overflows")))?;
            dims.push(d);
        }
        let kind_id = self.u32()?;
        let offset = usize::try_from(self.u64()?)
            .map_err(|_| corrupt(format!("tensor {name}: offset overflows")))?;
        let kind = GgmlType::from_id(kind_id).ok_or_else(|| ModelError::UnsupportedTensorType {
            name: name.clone(),
            kind: GgmlType::id_name(kind_id),
        })?;
        let elems = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let size = elems.and_then(|e| kind.byte_size(e)).ok_or_else(|| {
            corrupt(format!(
                "tensor {name}: {dims:?} is not a whole number of {} blocks",
                kind.name()
            ))
        })?;
        Ok(TensorInfo {
            name,
            dims,
            kind,
            offset,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal GGUF v3 file with one u32 metadata entry and one F32 tensor.
    fn tiny_file() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        let key = b"llama.block_count";
        b.extend_from_slice(&(key.len() as u64).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&7u32.to_le_bytes());
        let name = b"w";
        b.extend_from_slice(&(name.len() as u64).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&3u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for i in 0..6 {
            b.extend_from_slice(&(i as f32).to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_a_minimal_file() {
        let f = GgufFile::parse(tiny_file()).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.get("llama.block_count").and_then(Value::as_u64), Some(7));
        let t = f.tensor("w").unwrap();
        assert_eq!(
            (t.dims.clone(), t.kind, t.size),
            (vec![2, 3], GgmlType::F32, 24)
        );
        assert_eq!(&f.tensor_bytes(t)[4..8], &1f32.to_le_bytes());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = tiny_file();
        for len in 0..full.len() {
            let r = GgufFile::parse(full[..len].to_vec());
            assert!(
                matches!(r, Err(ModelError::CorruptGguf(_))),
                "len {len}: {r:?}"
            );
        }
    }

    #[test]
    fn bad_magic_and_huge_lengths_are_errors() {
        let mut f = tiny_file();
        f[0] = b'X';
        assert!(matches!(
            GgufFile::parse(f),
            Err(ModelError::CorruptGguf(_))
        ));
        let mut f = tiny_file();
        f[24..32].copy_from_slice(&u64::MAX.to_le_bytes()); // key length
        assert!(matches!(
            GgufFile::parse(f),
            Err(ModelError::CorruptGguf(_))
        ));
    }

    #[test]
    fn unknown_tensor_type_is_reported_by_name() {
        let mut f = tiny_file();
        // The tensor type field sits after name (8 + 1), n_dims (4) and two dims (16).
        let start = 4 + 4 + 8 + 8 + (8 + 17 + 4 + 4) + (8 + 1 + 4 + 16);
        for (id, kind) in [(2u32, "Q4_0"), (14, "Q6_K"), (99, "#99")] {
            f[start..start + 4].copy_from_slice(&id.to_le_bytes());
            let err = GgufFile::parse(f.clone()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("tensor w: unsupported tensor type {kind}")
            );
        }
    }
}
