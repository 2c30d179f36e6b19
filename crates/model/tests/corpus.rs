//! The crafted bad files in `tests/fixtures/hostile/`: each must fail with exactly the
//! message in its `.error` file. Adding a file adds a case (and the test fails until its
//! `.error` exists); `PAGEDATTN_BLESS=1 cargo test --test corpus` writes the missing
//! `.error` files from the current messages, to be read and committed by hand.

use pagedattn_model::gguf::GgufFile;
use pagedattn_model::{ModelConfig, Tokenizer};
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile")
}

/// The error the loader for this kind of file gives, or `None` if it loaded.
fn load(path: &Path) -> Option<String> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let bytes = std::fs::read(path).unwrap();
    let err = if path.extension().is_some_and(|x| x == "gguf") {
        GgufFile::parse(bytes).err().map(|e| e.to_string())
    } else if name.starts_with("config-") {
        match std::str::from_utf8(&bytes) {
            Ok(text) => ModelConfig::from_hf_json(text).err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        }
    } else if name.starts_with("tokenizer-") {
        Tokenizer::from_file(path).err().map(|e| e.to_string())
    } else {
        panic!("{name}: no loader for this kind of file (name it *.gguf, config-*, tokenizer-*)")
    };
    // Messages that name the file name it by its path: keep only the file name.
    err.map(|e| e.replace(&path.display().to_string(), name))
}

#[test]
fn every_crafted_file_fails_with_its_exact_message() {
    let bless = std::env::var_os("PAGEDATTN_BLESS").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x != "error"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{} files", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let got = load(path).unwrap_or_else(|| "(loaded without an error)".into());
        let want_path = PathBuf::from(format!("{}.error", path.display()));
        match std::fs::read_to_string(&want_path) {
            Ok(want) if want.trim_end() == got => {}
            Ok(want) => failures.push(format!(
                "{}:\n  want {:?}\n  got  {got:?}",
                path.display(),
                want.trim_end()
            )),
            Err(_) if bless => std::fs::write(&want_path, format!("{got}\n")).unwrap(),
            Err(_) => failures.push(format!("{}: no .error file (got {got:?})", path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
