//! The GGUF reader on arbitrary bytes: it must return a file or a typed error, never
//! panic, and never read past the buffer. Run with a nightly toolchain:
//! `cargo +nightly fuzz run gguf -- -max_total_time=600` (see docs/RELIABILITY.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagedattn_model::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = GgufFile::parse(data.to_vec()) {
        // Every tensor the reader accepted lies inside the buffer.
        for t in &file.tensors {
            assert_eq!(file.tensor_bytes(t).len(), t.size);
        }
    }
});
