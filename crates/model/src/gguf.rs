//! A GGUF reader: header, metadata and tensor directory (GGUF v2 and v3, little-endian).
//!
//! The file is read into memory once; tensor data is borrowed from that buffer until the
//! weights are dequantized, then dropped. Every count and length read from the file is
//! checked against the bytes that remain before anything is allocated for it, and every
//! dimension, offset and the alignment with checked arithmetic against the end of the file,
//! so a truncated or hostile file is a [`ModelError::CorruptGguf`] (or
//! [`ModelError::UnsupportedTensorType`]) naming the field and the value, never a panic, an
//! out-of-bounds read or an allocation the file cannot justify.
//!
//! # Memory bound
//!
//! Besides the file's own bytes, parsing allocates at most 8 bytes of memory per byte of
//! file, plus the nodes of the metadata map (a `BTreeMap`). Each part of the file is
//! bounded on its own:
//!
//! * Metadata arrays are stored compactly ([`Array`]): a `u8` or `i8` element, widened to
//!   `u64`/`i64`, takes 8 bytes for its 1 byte on disk, the worst case; a `bool` 1 byte;
//!   2-byte types 4 bytes per byte, 4-byte types 2, 8-byte types 1. A string element takes
//!   its bytes plus a 24-byte `String` header, against its 8-byte length prefix plus its
//!   bytes on disk (at most 3 bytes per byte). Arrays of arrays are refused.
//! * A metadata entry takes its key's bytes, a 24-byte key header and a 32-byte [`Value`]
//!   (plus a string value's bytes), against at least 13 bytes plus the key on disk (8-byte
//!   key length, 4-byte type, a 1-byte value).
//! * A tensor directory entry takes a 72-byte [`TensorInfo`], its name's bytes and 8 bytes
//!   per dimension, against at least 24 bytes plus its name and 8 bytes per dimension on
//!   disk.
//!
//! The map's nodes are the one overhead not bounded per byte above; 200,000 entries with
//! 3-byte keys and 1-byte values (keys cannot be much shorter and stay distinct) take under
//! 6 bytes per byte of file with them (`tests/gguf_hostile.rs` checks both cases).
//!
//! Counts are never trusted to size an allocation before the bytes they claim are known to
//! remain, so one hostile count cannot make the parser reserve more than the file holds.

mod reader;
mod value;

pub use value::{Array, TensorInfo, Value};

use crate::error::{ModelError, Result};
use reader::{corrupt, Reader};
use std::collections::BTreeMap;
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// The smallest metadata entry on disk: key length (8), empty key, type (4), a 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// The smallest tensor directory entry on disk: name length (8), empty name, `n_dims` (4),
/// one dimension (8), type (4), offset (8).
const MIN_TENSOR_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

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
        r.check_count(&"kv_count", kv_count, MIN_KV_BYTES)?;
        r.check_count(&"tensor_count", tensor_count, MIN_TENSOR_BYTES)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string(&"metadata key")?;
            let kind = r.u32()?;
            let value = r.value(&key, kind)?;
            metadata.insert(key, value);
        }
        // Checked again now that the metadata has consumed its share of the file.
        let tensor_count = r.check_count(&"tensor_count", tensor_count, MIN_TENSOR_BYTES)?;
        let mut tensors = Vec::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            tensors.push(r.tensor_info()?);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                Some(a) => {
                    return Err(corrupt(format!(
                        "general.alignment {a} is not a power of two"
                    )))
                }
                None => {
                    return Err(corrupt(format!(
                        "general.alignment {v:?} is not an unsigned integer"
                    )))
                }
            },
        };
        let data_start = (r.pos as u64)
            .checked_next_multiple_of(alignment)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| {
                corrupt(format!(
                    "data section: byte {} aligned to general.alignment {alignment} overflows",
                    r.pos
                ))
            })?;
        let mut names = std::collections::HashSet::with_capacity(tensors.len());
        for t in &tensors {
            if !names.insert(t.name.as_str()) {
                return Err(corrupt(format!("tensor {}: named twice", t.name)));
            }
            if !(t.offset as u64).is_multiple_of(alignment) {
                return Err(corrupt(format!(
                    "tensor {}: offset {} is not a multiple of general.alignment {alignment}",
                    t.name, t.offset
                )));
            }
            let end = data_start
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.size));
            if end.is_none_or(|end| end > bytes.len()) {
                return Err(corrupt(format!(
                    "tensor {}: offset {} (+ {} bytes, data section at byte {data_start}) past \
                     the end of the file ({} bytes; truncated?)",
                    t.name,
                    t.offset,
                    t.size,
                    bytes.len()
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

    /// The raw bytes of a tensor of this file's directory (bounds were checked at parse
    /// time; an entry from elsewhere that does not fit yields an empty slice).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        self.data_start
            .checked_add(t.offset)
            .and_then(|start| self.bytes.get(start..start.checked_add(t.size)?))
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::GgmlType;

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
    fn value_and_tensor_info_sizes_match_the_module_docs() {
        assert_eq!(std::mem::size_of::<Value>(), 32);
        assert_eq!(std::mem::size_of::<TensorInfo>(), 72);
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
        for (id, kind) in [(6u32, "Q5_0"), (16, "IQ2_XXS"), (99, "#99")] {
            f[start..start + 4].copy_from_slice(&id.to_le_bytes());
            let err = GgufFile::parse(f.clone()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("tensor w: unsupported tensor type {kind}")
            );
        }
    }
}
