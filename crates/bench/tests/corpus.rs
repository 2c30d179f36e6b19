//! The crafted bad traces and workload files in `tests/fixtures/hostile/`: each must fail
//! with exactly the message in its `.error` file (the file's path shown as its name).
//! Adding a file adds a case; `PAGEDATTN_BLESS=1 cargo test --test corpus` writes the
//! missing `.error` files from the current messages, to be read and committed by hand.

use pagedattn_bench::workload::{read_jsonl, read_trace};
use std::path::{Path, PathBuf};

fn load(path: &Path) -> Option<String> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let err = if path.extension().is_some_and(|x| x == "csv") {
        read_trace(path).err()
    } else if path.extension().is_some_and(|x| x == "jsonl") {
        read_jsonl(path).err()
    } else {
        panic!("{name}: no loader for this kind of file (name it *.csv or *.jsonl)")
    };
    err.map(|e| e.to_string().replace(&path.display().to_string(), name))
}

#[test]
fn every_crafted_file_fails_with_its_exact_message() {
    let bless = std::env::var_os("PAGEDATTN_BLESS").is_some();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x != "error"))
        .collect();
    files.sort();
    assert!(files.len() >= 14, "{} files", files.len());
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
