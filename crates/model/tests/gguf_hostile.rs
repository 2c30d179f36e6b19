//! The GGUF reader on hostile input: every truncation, structured mutations of each count,
//! length, dimension, offset, type id and the alignment, arbitrary bytes and random
//! overwrites are errors (or valid parses), never panics; and the memory a parse allocates
//! stays within the bound the module documents (8 bytes per byte of file).

use pagedattn_model::gguf::{Array, GgufFile, Value};
use pagedattn_model::ModelError;
use proptest::prelude::*;

mod counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// Peak bytes allocated (beyond what was live before) while parsing `bytes`, and the result.
fn peak_while_parsing(bytes: Vec<u8>) -> (usize, Result<GgufFile, ModelError>) {
    counting::peak_during(|| GgufFile::parse(bytes))
}

// ---- a small GGUF writer that records where each field lies ----

/// A field of the written file a mutation can target.
#[derive(Clone, Copy, Debug)]
struct Field {
    name: &'static str,
    at: usize,
    width: usize,
}

#[derive(Default)]
struct Writer {
    b: Vec<u8>,
    fields: Vec<Field>,
}

impl Writer {
    fn u32(&mut self, name: &'static str, v: u32) {
        self.fields.push(Field {
            name,
            at: self.b.len(),
            width: 4,
        });
        self.b.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, name: &'static str, v: u64) {
        self.fields.push(Field {
            name,
            at: self.b.len(),
            width: 8,
        });
        self.b.extend_from_slice(&v.to_le_bytes());
    }

    fn str(&mut self, name: &'static str, s: &str) {
        self.u64(name, s.len() as u64);
        self.b.extend_from_slice(s.as_bytes());
    }
}

const TOKENS: [&str; 3] = ["a", "bc", "<|end|>"];
const INTS: [i32; 3] = [1, -2, 300_000];

/// A valid GGUF v3 file: five metadata keys (a string, the alignment as u64, a string
/// array, an i32 array, a u32) and two small F32 tensors.
fn valid_file() -> (Vec<u8>, Vec<Field>) {
    let mut w = Writer::default();
    w.b.extend_from_slice(b"GGUF");
    w.u32("version", 3);
    w.u64("tensor_count", 2);
    w.u64("kv_count", 5);

    w.str("key length", "general.architecture");
    w.u32("value type", 8);
    w.str("string length", "llama");

    w.str("key length", "general.alignment");
    w.u32("value type", 10);
    w.u64("alignment", 32);

    w.str("key length", "tokenizer.ggml.tokens");
    w.u32("value type", 9);
    w.u32("array element type", 8);
    w.u64("array length", TOKENS.len() as u64);
    for t in TOKENS {
        w.str("string length", t);
    }

    w.str("key length", "test.ints");
    w.u32("value type", 9);
    w.u32("array element type", 5);
    w.u64("array length", INTS.len() as u64);
    for i in INTS {
        w.b.extend_from_slice(&i.to_le_bytes());
    }

    w.str("key length", "llama.block_count");
    w.u32("value type", 4);
    w.u32("u32 value", 2);

    for (name, dims, offset) in [("t0", &[2u64, 3][..], 0u64), ("t1", &[4][..], 32)] {
        w.str("tensor name length", name);
        w.u32("n_dims", dims.len() as u32);
        for &d in dims {
            w.u64("dim", d);
        }
        w.u32("tensor type", 0);
        w.u64("tensor offset", offset);
    }
    while w.b.len() % 32 != 0 {
        w.b.push(0);
    }
    for i in 0..8 {
        w.b.extend_from_slice(&(i as f32).to_le_bytes());
    }
    for i in 0..4 {
        w.b.extend_from_slice(&(10.0 + i as f32).to_le_bytes());
    }
    (w.b, w.fields)
}

fn set(bytes: &mut [u8], f: Field, v: u64) {
    if f.width == 4 {
        bytes[f.at..f.at + 4].copy_from_slice(&(v as u32).to_le_bytes());
    } else {
        bytes[f.at..f.at + 8].copy_from_slice(&v.to_le_bytes());
    }
}

/// Parses, and on success reads every tensor's bytes (which must have the stated size).
fn parse_fully(bytes: Vec<u8>) -> Result<GgufFile, ModelError> {
    let f = GgufFile::parse(bytes)?;
    for t in &f.tensors {
        assert_eq!(f.tensor_bytes(t).len(), t.size, "tensor {}", t.name);
    }
    Ok(f)
}

fn message(r: Result<GgufFile, ModelError>) -> String {
    match r {
        Ok(_) => "parsed".into(),
        Err(e @ (ModelError::CorruptGguf(_) | ModelError::UnsupportedTensorType { .. })) => {
            e.to_string()
        }
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
}

/// What any input must give: a parse whose every tensor lies inside the file with the size
/// its type and shape imply, or a typed error that reads as one short line naming what is
/// wrong.
fn well_behaved(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let len = bytes.len();
    match parse_fully(bytes) {
        Ok(f) => {
            for t in &f.tensors {
                prop_assert_eq!(t.kind.byte_size(t.elems()), Some(t.size), "{}", t.name);
                prop_assert!(
                    t.size <= len,
                    "{} claims {} of {} bytes",
                    t.name,
                    t.size,
                    len
                );
            }
        }
        Err(e) => {
            let m = message(Err(e));
            prop_assert!(
                !m.is_empty() && !m.contains('\n') && m.len() < 400,
                "{:?}",
                m
            );
        }
    }
    Ok(())
}

/// A key or tensor name length that grows over the bytes after it takes in newlines and
/// NULs; the error still reads as one line, with those bytes escaped, and is cut short if
/// the name is long.
#[test]
fn a_key_that_swallows_control_bytes_is_named_on_one_line() {
    let (valid, fields) = valid_file();
    let key_lengths: Vec<Field> = fields
        .iter()
        .copied()
        .filter(|f| f.name == "key length" || f.name == "tensor name length")
        .collect();
    for extra in [1u64, 5, 13, 40, 90, 200] {
        for &f in &key_lengths {
            let mut bytes = valid.clone();
            let len = u64::from_le_bytes(bytes[f.at..f.at + 8].try_into().unwrap());
            set(&mut bytes, f, len + extra);
            let m = message(parse_fully(bytes));
            assert!(
                !m.contains('\n') && !m.contains('\0') && m.len() < 400,
                "{} +{extra} at byte {}: {m:?}",
                f.name,
                f.at
            );
        }
    }
}

#[test]
fn the_valid_file_parses() {
    let (bytes, _) = valid_file();
    let f = parse_fully(bytes).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(
        f.get("general.architecture").and_then(Value::as_str),
        Some("llama")
    );
    assert_eq!(f.get("general.alignment").and_then(Value::as_u64), Some(32));
    assert_eq!(
        f.get("tokenizer.ggml.tokens").and_then(Value::as_strs),
        Some(&TOKENS.map(String::from)[..])
    );
    let ints = f.get("test.ints").and_then(Value::as_array).unwrap();
    assert_eq!(
        ints,
        &Array::I64(INTS.iter().map(|&i| i64::from(i)).collect())
    );
    assert_eq!(
        (ints.len(), ints.u64_at(0), ints.u64_at(1)),
        (3, Some(1), None)
    );
    assert_eq!(ints.u64_at(2), Some(300_000));
    assert_eq!(f.get("llama.block_count").and_then(Value::as_u64), Some(2));
    let t1 = f.tensor("t1").unwrap();
    assert_eq!((t1.dims.clone(), t1.size), (vec![4], 16));
    assert_eq!(&f.tensor_bytes(t1)[..4], &10f32.to_le_bytes());
    assert_eq!(
        &f.tensor_bytes(f.tensor("t0").unwrap())[4..8],
        &1f32.to_le_bytes()
    );
}

#[test]
fn every_truncation_is_an_error() {
    let (full, _) = valid_file();
    for len in 0..full.len() {
        let r = parse_fully(full[..len].to_vec());
        assert!(
            matches!(r, Err(ModelError::CorruptGguf(_))),
            "len {len}: {r:?}"
        );
    }
}

/// Each count, length, dimension, offset and type id set to 0, the type's maximum, and just
/// past the end of the file: an error of the reader's kinds or a valid parse, never a panic.
#[test]
fn mutated_fields_are_errors_or_valid_parses() {
    let (full, fields) = valid_file();
    let len = full.len() as u64;
    let mut cases = 0;
    for &f in &fields {
        let max = if f.width == 4 {
            u64::from(u32::MAX)
        } else {
            u64::MAX
        };
        let remaining = len - (f.at + f.width) as u64;
        for v in [0, 1, max, max - 1, len, remaining, remaining + 1, 1 << 40] {
            let mut bytes = full.clone();
            set(&mut bytes, f, v);
            let _ = message(parse_fully(bytes));
            cases += 1;
        }
    }
    assert!(cases >= 250, "{cases}");
}

fn mutated(name: &str, nth: usize, v: u64) -> String {
    let (mut bytes, fields) = valid_file();
    let f = *fields
        .iter()
        .filter(|f| f.name == name)
        .nth(nth)
        .unwrap_or_else(|| panic!("no field {name} #{nth}"));
    set(&mut bytes, f, v);
    message(parse_fully(bytes))
}

#[test]
fn mutations_name_the_field_and_the_value() {
    let max = u64::MAX;
    let cases: &[(&str, usize, u64, &str)] = &[
        (
            "tensor_count",
            0,
            max,
            "tensor_count 18446744073709551615 exceeds the file",
        ),
        (
            "kv_count",
            0,
            max,
            "kv_count 18446744073709551615 exceeds the file",
        ),
        ("kv_count", 0, 6, "tensor name at byte 279: length"),
        ("tensor_count", 0, 3, "tensor : n_dims 0"),
        (
            "key length",
            0,
            max,
            "metadata key at byte 24: length 18446744073709551615",
        ),
        (
            "string length",
            0,
            max,
            "metadata general.architecture: string at byte",
        ),
        (
            "array length",
            0,
            max,
            "metadata tokenizer.ggml.tokens: array length at byte",
        ),
        (
            "array length",
            1,
            1 << 40,
            "metadata test.ints: array length",
        ),
        (
            "array element type",
            0,
            9,
            "metadata tokenizer.ggml.tokens: nested array",
        ),
        ("array element type", 1, 13, "unknown array element type 13"),
        (
            "value type",
            4,
            99,
            "metadata llama.block_count: unknown value type 99",
        ),
        ("n_dims", 0, 0, "tensor t0: n_dims 0"),
        (
            "n_dims",
            1,
            u64::from(u32::MAX),
            "tensor t1: n_dims 4294967295",
        ),
        (
            "dim",
            0,
            max,
            "tensor t0: element count of [18446744073709551615, 3] overflows",
        ),
        (
            "dim",
            2,
            1 << 62,
            "tensor t1: [4611686018427387904] (4611686018427387904 elements)",
        ),
        ("dim", 2, 5, "tensor t1: offset 32 (+ 20 bytes"),
        (
            "tensor offset",
            1,
            max - 31,
            "tensor t1: offset 18446744073709551584 (+ 16 bytes",
        ),
        (
            "tensor offset",
            1,
            max,
            "tensor t1: offset 18446744073709551615 is not a multiple of general.alignment 32",
        ),
        (
            "tensor offset",
            0,
            8,
            "tensor t0: offset 8 is not a multiple of general.alignment 32",
        ),
        ("tensor offset", 0, 64, "tensor t0: offset 64 (+ 24 bytes"),
        (
            "tensor type",
            0,
            6,
            "tensor t0: unsupported tensor type Q5_0",
        ),
        (
            "tensor type",
            1,
            u64::from(u32::MAX),
            "unsupported tensor type #4294967295",
        ),
        (
            "alignment",
            0,
            0,
            "general.alignment 0 is not a power of two",
        ),
        (
            "alignment",
            0,
            3,
            "general.alignment 3 is not a power of two",
        ),
        (
            "alignment",
            0,
            max,
            "general.alignment 18446744073709551615 is not a power",
        ),
        (
            "alignment",
            0,
            1 << 40,
            "data section at byte 1099511627776) past the end",
        ),
        (
            "alignment",
            0,
            1 << 63,
            "data section at byte 9223372036854775808) past",
        ),
        ("version", 0, 4, "unsupported GGUF version 4"),
    ];
    let mut failures = Vec::new();
    for &(name, nth, v, want) in cases {
        let got = mutated(name, nth, v);
        if !got.contains(want) {
            failures.push(format!("{name} #{nth} = {v}: {got:?} lacks {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Legal values of self-contained fields parse.
    for (name, nth, v) in [
        ("alignment", 0, 1),
        ("alignment", 0, 16),
        ("dim", 0, 0),
        // Overlapping tensors: read-only views, legal (llama.cpp does not refuse them).
        ("tensor offset", 1, 0),
    ] {
        assert_eq!(mutated(name, nth, v), "parsed", "{name} #{nth} = {v}");
    }
}

#[test]
fn a_data_section_past_the_end_is_an_error_not_a_panic() {
    // A zero-sized tensor at offset 0 whose data section, after alignment, starts past the
    // end of the file: once a panic in `tensor_bytes`.
    let mut w = Writer::default();
    w.b.extend_from_slice(b"GGUF");
    w.u32("version", 3);
    w.u64("tensor_count", 1);
    w.u64("kv_count", 0);
    w.str("tensor name length", "z");
    w.u32("n_dims", 1);
    w.u64("dim", 0);
    w.u32("tensor type", 0);
    w.u64("tensor offset", 0);
    assert_ne!(w.b.len() % 32, 0);
    let got = message(parse_fully(w.b.clone()));
    assert!(
        got.contains("tensor z: offset 0 (+ 0 bytes, data section at byte 64) past the end"),
        "{got}"
    );
    // Padded to the alignment, the same file is valid.
    w.b.resize(64, 0);
    let f = parse_fully(w.b).unwrap();
    assert!(f.tensor_bytes(&f.tensors[0]).is_empty());
}

// ---- memory ----

/// A file with one metadata array of `n` elements of type `elem` (`elem_bytes` each on
/// disk, zero-filled: empty strings for type 8).
fn one_array_file(elem: u32, elem_bytes: usize, n: usize) -> Vec<u8> {
    let mut w = Writer::default();
    w.b.extend_from_slice(b"GGUF");
    w.u32("version", 3);
    w.u64("tensor_count", 0);
    w.u64("kv_count", 1);
    w.str("key length", "x");
    w.u32("value type", 9);
    w.u32("array element type", elem);
    w.u64("array length", n as u64);
    w.b.resize(w.b.len() + n * elem_bytes, 0);
    w.b
}

#[test]
fn parsing_allocates_at_most_8_bytes_per_file_byte() {
    const MIB: usize = 1 << 20;
    for (elem, elem_bytes) in [(0, 1), (1, 1), (7, 1), (3, 2), (6, 4), (10, 8), (8, 8)] {
        let bytes = one_array_file(elem, elem_bytes, 4 * MIB / elem_bytes);
        let len = bytes.len();
        let (peak, r) = peak_while_parsing(bytes);
        let f = r.unwrap();
        assert_eq!(
            f.get("x").and_then(Value::as_array).map(Array::len),
            Some(4 * MIB / elem_bytes)
        );
        assert!(
            peak <= 8 * len + MIB,
            "type {elem}: peak {peak} for a {len}-byte file"
        );
        if elem == 0 {
            // Stored as 8-byte elements, not as 32-byte values (which would be 4x this).
            assert!(peak >= 8 * (len - 64), "type {elem}: peak {peak}");
        }
    }
    // A count claiming more than the file holds is refused before anything is allocated.
    let mut bytes = one_array_file(0, 1, 4 * MIB);
    bytes.truncate(bytes.len() - 1);
    let (peak, r) = peak_while_parsing(bytes);
    assert!(matches!(r, Err(ModelError::CorruptGguf(_))), "{r:?}");
    assert!(peak < 4096, "peak {peak} for a refused array");
    // So is a string array whose count fits one byte per element but not eight.
    let bytes = one_array_file(8, 1, 4 * MIB);
    let (peak, r) = peak_while_parsing(bytes);
    assert!(matches!(r, Err(ModelError::CorruptGguf(_))), "{r:?}");
    assert!(peak < 4096, "peak {peak} for a refused string array");
}

// ---- properties ----

fn valid_prefix() -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        // Without a GGUF magic nothing parses.
        prop_assert!(bytes.starts_with(b"GGUF") || parse_fully(bytes.clone()).is_err());
        well_behaved(bytes.clone())?;
        // The same bytes behind a valid magic and version reach the counts and metadata.
        let mut b = valid_prefix();
        b.extend_from_slice(&bytes);
        well_behaved(b)?;
    }

    #[test]
    fn random_overwrites_of_a_valid_file_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let (mut bytes, _) = valid_file();
        let len = bytes.len();
        for (i, v) in edits {
            bytes[i.index(len)] = v;
        }
        well_behaved(bytes)?;
    }

    #[test]
    fn random_field_values_never_panic(
        picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<u64>()), 1..4),
    ) {
        let (mut bytes, fields) = valid_file();
        for (i, v) in picks {
            set(&mut bytes, fields[i.index(fields.len())], v);
        }
        well_behaved(bytes)?;
    }
}

/// The smallest entries the format allows (3-byte keys, 1-byte values), in scrambled key
/// order: the map's nodes included, still within the bound.
#[test]
fn many_small_metadata_entries_stay_within_the_bound() {
    const ALPHABET: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._";
    let n = 200_000u32;
    let mut w = Writer::default();
    w.b.extend_from_slice(b"GGUF");
    w.u32("version", 3);
    w.u64("tensor_count", 0);
    w.u64("kv_count", u64::from(n));
    for i in 0..n {
        let k = (i * 7919) % (1 << 18);
        let key: String = [k >> 12, (k >> 6) & 63, k & 63]
            .iter()
            .map(|&c| char::from(ALPHABET[c as usize]))
            .collect();
        w.str("key length", &key);
        w.u32("value type", 0);
        w.b.push(1);
    }
    let len = w.b.len();
    let (peak, r) = peak_while_parsing(w.b);
    assert_eq!(r.unwrap().metadata.len(), n as usize);
    eprintln!(
        "{n} entries: peak {peak} for {len} bytes ({:.2}x)",
        peak as f64 / len as f64
    );
    assert!(
        peak <= 8 * len + (1 << 20),
        "peak {peak} for a {len}-byte file"
    );
}
