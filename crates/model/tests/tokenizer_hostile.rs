//! `tokenizer.json` files as a user might download them: whatever the bytes, loading is a
//! tokenizer or a typed error, never a panic.

use pagedattn_model::{ModelError, Tokenizer};
use proptest::prelude::*;
use std::path::PathBuf;

/// A scratch file, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(bytes: &[u8]) -> Self {
        let p = std::env::temp_dir().join(format!(
            "pagedattn-tok-{}-{:?}.json",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&p, bytes).unwrap();
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn valid() -> String {
    Tokenizer::byte_level().inner().to_string(false).unwrap()
}

fn load(bytes: &[u8]) -> Result<Tokenizer, ModelError> {
    let f = Scratch::new(bytes);
    Tokenizer::from_file(&f.0)
}

#[test]
fn the_valid_file_loads_and_round_trips() {
    let t = load(valid().as_bytes()).unwrap();
    assert_eq!(
        t.decode(&t.encode("héllo 🦀").unwrap()).unwrap(),
        "héllo 🦀"
    );
}

#[test]
fn a_tokenizer_cut_anywhere_is_an_error() {
    let v = valid();
    // Every 97th offset (the file is ~100 KB), plus the last few bytes.
    let cuts: Vec<usize> = (0..v.len())
        .step_by(97)
        .chain(v.len() - 8..v.len())
        .collect();
    for cut in cuts {
        assert!(
            matches!(load(&v.as_bytes()[..cut]), Err(ModelError::Tokenizer(_))),
            "cut at {cut}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_bytes_are_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(load(&bytes).is_err());
    }

    #[test]
    fn overwritten_bytes_load_or_fail_cleanly(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut v = valid().into_bytes();
        for (at, b) in edits {
            let i = at.index(v.len());
            v[i] = b;
        }
        if let Ok(t) = load(&v) {
            // Whatever loaded still encodes and decodes without panicking.
            let ids = t.encode("a b c").unwrap_or_default();
            let _ = t.decode(&ids);
        }
    }
}
