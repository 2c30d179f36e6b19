//! What a GGUF file's metadata says about its tokenizer, read the same way by the BPE
//! (`gguf.rs`) and SentencePiece (`spm.rs`) builders.

use super::tok_err;
use crate::error::Result;
use crate::gguf::{GgufFile, Value};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
pub(super) const TOKEN_TYPE_UNKNOWN: u64 = 2;
pub(super) const TOKEN_TYPE_CONTROL: u64 = 3;
pub(super) const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// A GGUF boolean that may be absent.
pub(super) fn gguf_bool(file: &GgufFile, key: &str, default: bool) -> Result<bool> {
    match file.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(tok_err(format!("{key} {v:?} is not a boolean"))),
    }
}
