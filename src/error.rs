//! Error kinds callers branch on, and the process exit codes they map to.

use std::path::PathBuf;

/// Exit codes of the `facegate` binary. Documented in the README; a service manager or a
/// script can tell "no match" from "fix the input" from "some inputs failed".
pub mod exit {
    /// Success; for `verify`, the face matched.
    pub const OK: i32 = 0;
    /// `verify`: a face was found but it is not the claimed person.
    pub const NO_MATCH: i32 = 1;
    /// Error: bad arguments, unreadable input, no usable face, gallery or model problem.
    pub const ERROR: i32 = 2;
    /// A batch command (`analyze`, `identify`, `enroll --tree`) finished, but at least one
    /// input failed.
    pub const PARTIAL: i32 = 3;
    /// The gallery file cannot be used: corrupt, truncated, another format version, or made
    /// with another embedding model. The file was not changed.
    pub const GALLERY: i32 = 4;
    /// Another process is writing to the gallery (it holds the lock); try again.
    pub const BUSY: i32 = 5;
    /// `verify --require-live`: the face was judged not live (a print or a screen), whoever
    /// it looks like.
    pub const SPOOF: i32 = 6;
}

/// A frame (image file or camera buffer) that could not be turned into pixels.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read {path:?}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not a supported image (JPEG or PNG): {0}")]
    Format(String),
    #[error("corrupt or truncated image: {0}")]
    Corrupt(String),
    #[error("image is {width}x{height}, outside the supported {min}..={max} pixels per side")]
    Size { width: u32, height: u32, min: u32, max: u32 },
    #[error("image declares {width}x{height} pixels, more than the budget of {budget} (FACEGATE_MAX_PIXELS); not decoded")]
    Pixels { width: u32, height: u32, budget: u64 },
}

/// A model that does not satisfy its manifest's contract.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no embedded model named {0:?}")]
    Missing(String),
    #[error("manifest of model {model:?}: {detail}")]
    Manifest { model: String, detail: String },
    #[error("model {model:?} breaks its contract: {detail}")]
    Contract { model: String, detail: String },
    #[error("model {model:?}: {source:#}")]
    Runtime { model: String, source: anyhow::Error },
}
