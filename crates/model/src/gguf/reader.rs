//! The byte-level reader of a GGUF file: every length, count and offset checked against the
//! bytes that remain, with checked arithmetic, before anything is allocated.

use crate::error::{ModelError, Result};
use crate::gguf::value::{Array, TensorInfo, Value, ARRAY_TYPE, MAX_DIMS};
use crate::quant::GgmlType;
use std::fmt::Display;

/// The most bytes of an error message built from the file's names and keys.
const MAX_MESSAGE_BYTES: usize = 300;

/// Makes text that may come from the file fit one short line: control characters (a key
/// whose length field was overwritten can swallow newlines and NULs) are escaped, and the
/// text is cut once it reaches [`MAX_MESSAGE_BYTES`] (escapes included).
pub(super) fn printable(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() >= MAX_MESSAGE_BYTES {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn corrupt(msg: impl Into<String>) -> ModelError {
    ModelError::CorruptGguf(printable(&msg.into()))
}

/// Copies a slice known to hold `N` bytes into an array.
fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(c);
    a
}

pub(super) struct Reader<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            corrupt(format!(
                "truncated at byte {} ({n} bytes needed, {} remain)",
                self.pos,
                self.remaining()
            ))
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(le(self.take(N)?))
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Checks that `n` items of at least `min_item_bytes` each fit in what remains.
    pub(super) fn check_count(
        &self,
        what: &dyn Display,
        n: u64,
        min_item_bytes: u64,
    ) -> Result<usize> {
        let remaining = self.remaining();
        n.checked_mul(min_item_bytes)
            .filter(|&b| b <= remaining as u64)
            .and_then(|_| usize::try_from(n).ok())
            .ok_or_else(|| {
                corrupt(format!(
                    "{what} {n} exceeds the file ({min_item_bytes} bytes each, {remaining} \
                     remain after byte {})",
                    self.pos
                ))
            })
    }

    pub(super) fn string(&mut self, what: &dyn Display) -> Result<String> {
        let at = self.pos;
        let n = self.u64()?;
        let n = self.check_count(&format_args!("{what} at byte {at}: length"), n, 1)?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| corrupt(format!("{what} at byte {at}: invalid UTF-8")))
    }

    pub(super) fn value(&mut self, key: &str, kind: u32) -> Result<Value> {
        Ok(match kind {
            0 => Value::U64(u64::from(self.array::<1>()?[0])),
            1 => Value::I64(i64::from(i8::from_le_bytes(self.array()?))),
            2 => Value::U64(u64::from(u16::from_le_bytes(self.array()?))),
            3 => Value::I64(i64::from(i16::from_le_bytes(self.array()?))),
            4 => Value::U64(u64::from(self.u32()?)),
            5 => Value::I64(i64::from(i32::from_le_bytes(self.array()?))),
            6 => Value::F64(f64::from(f32::from_le_bytes(self.array()?))),
            7 => Value::Bool(self.array::<1>()?[0] != 0),
            8 => Value::Str(self.string(&format_args!("metadata {key}: string"))?),
            ARRAY_TYPE => Value::Array(self.array_value(key)?),
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            _ => {
                return Err(corrupt(format!(
                    "metadata {key}: unknown value type {kind} at byte {}",
                    self.pos - 4
                )))
            }
        })
    }

    /// An array: element type, count, elements. The count is checked against the bytes that
    /// remain at the element type's size on disk (at least 8 for a string's length prefix),
    /// and the elements are stored by kind, so memory stays within 8 bytes per file byte.
    pub(super) fn array_value(&mut self, key: &str) -> Result<Array> {
        let inner = self.u32()?;
        let at = self.pos;
        let n = self.u64()?;
        let elem_bytes: u64 = match inner {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            ARRAY_TYPE => {
                return Err(corrupt(format!(
                    "metadata {key}: nested array at byte {} (arrays of arrays are not \
                     supported)",
                    at - 4
                )))
            }
            _ => {
                return Err(corrupt(format!(
                    "metadata {key}: unknown array element type {inner} at byte {}",
                    at - 4
                )))
            }
        };
        let n = self.check_count(
            &format_args!("metadata {key}: array length at byte {at}:"),
            n,
            elem_bytes,
        )?;
        if inner == 8 {
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(self.string(&format_args!("metadata {key}: array element"))?);
            }
            return Ok(Array::Str(items));
        }
        // `n * elem_bytes` fits: it was just checked against what remains.
        #[allow(clippy::cast_possible_truncation)]
        let raw = self.take(n * elem_bytes as usize)?;
        let size = elem_bytes as usize;
        let chunks = raw.chunks_exact(size);
        Ok(match inner {
            0 => Array::U64(chunks.map(|c| u64::from(c[0])).collect()),
            1 => Array::I64(
                chunks
                    .map(|c| i64::from(i8::from_le_bytes(le(c))))
                    .collect(),
            ),
            2 => Array::U64(
                chunks
                    .map(|c| u64::from(u16::from_le_bytes(le(c))))
                    .collect(),
            ),
            3 => Array::I64(
                chunks
                    .map(|c| i64::from(i16::from_le_bytes(le(c))))
                    .collect(),
            ),
            4 => Array::U64(
                chunks
                    .map(|c| u64::from(u32::from_le_bytes(le(c))))
                    .collect(),
            ),
            5 => Array::I64(
                chunks
                    .map(|c| i64::from(i32::from_le_bytes(le(c))))
                    .collect(),
            ),
            6 => Array::F64(
                chunks
                    .map(|c| f64::from(f32::from_le_bytes(le(c))))
                    .collect(),
            ),
            7 => Array::Bool(chunks.map(|c| c[0] != 0).collect()),
            10 => Array::U64(chunks.map(|c| u64::from_le_bytes(le(c))).collect()),
            11 => Array::I64(chunks.map(|c| i64::from_le_bytes(le(c))).collect()),
            _ => Array::F64(chunks.map(|c| f64::from_le_bytes(le(c))).collect()),
        })
    }

    pub(super) fn tensor_info(&mut self) -> Result<TensorInfo> {
        let name = self.string(&"tensor name")?;
        let n_dims = self.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(corrupt(format!(
                "tensor {name}: n_dims {n_dims} (1 to {MAX_DIMS} supported)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for i in 0..n_dims {
            let d = self.u64()?;
            let d = usize::try_from(d)
                .map_err(|_| corrupt(format!("tensor {name}: dimension {i} = {d} overflows")))?;
            dims.push(d);
        }
        let kind_id = self.u32()?;
        let offset = self.u64()?;
        let offset = usize::try_from(offset).map_err(|_| {
            corrupt(format!(
                "tensor {name}: offset {offset} past the end of the file"
            ))
        })?;
        let kind = GgmlType::from_id(kind_id).ok_or_else(|| ModelError::UnsupportedTensorType {
            name: printable(&name),
            kind: GgmlType::id_name(kind_id),
        })?;
        let elems = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                corrupt(format!(
                    "tensor {name}: element count of {dims:?} overflows"
                ))
            })?;
        let size = kind.byte_size(elems).ok_or_else(|| {
            corrupt(format!(
                "tensor {name}: {dims:?} ({elems} elements) is not a whole number of {} blocks \
                 or its byte size overflows",
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
