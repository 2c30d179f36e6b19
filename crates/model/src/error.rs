//! The crate's one error type. Loading validates everything read from a file (magic,
//! lengths, tensor types, shapes) before using it, so a corrupt or unsupported model is one
//! of these, never a panic.

use std::path::PathBuf;
use thiserror::Error;

/// Everything loading, tokenizing, running or sampling can reject.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a well-formed GGUF file (bad magic, truncated, bad lengths).
    #[error("corrupt GGUF file: {0}")]
    CorruptGguf(String),
    /// A tensor uses an element type this crate cannot dequantize.
    #[error("tensor {name}: unsupported tensor type {kind}")]
    UnsupportedTensorType {
        /// Tensor name.
        name: String,
        /// Type name (or number, for types unknown to this crate).
        kind: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("missing tensor {0}")]
    MissingTensor(String),
    /// A tensor's shape is not what the configuration implies.
    #[error("tensor {name}: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Shape the config implies (rows, columns).
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A metadata key is missing or has the wrong type, or the config is inconsistent.
    #[error("invalid model config: {0}")]
    InvalidConfig(String),
    /// An unknown name was given for a built-in config.
    #[error("unknown model config {0:?} (known: smollm2-135m, tiny)")]
    UnknownConfig(String),
    /// The safetensors file could not be parsed or written.
    #[error("safetensors: {0}")]
    Safetensors(String),
    /// The tokenizer could not be built, or failed to encode or decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The model has no tokenizer (a random init, or a directory without tokenizer.json).
    #[error("this model has no tokenizer")]
    NoTokenizer,
    /// A batch passed to the forward pass is inconsistent.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// The KV store or attention kernel rejected a call.
    #[error(transparent)]
    Kernel(#[from] pagedattn_kernels::KernelError),
}

/// Result with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
