//! Errors of the tch-free layer (configs, image files). Each message names the file, the key and,
//! where there is one, the fix: it is what a user sees on one line before a non-zero exit.
use crate::exit::Exit;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A model file or folder that is not what it should be.
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    #[error("{file}: `{key}`: {msg}")]
    Config {
        file: PathBuf,
        key: String,
        msg: String,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Encoding an image failed: a runtime failure, not the user's input.
    #[error("PNG encoding failed: {0}")]
    Png(String),
}

impl CoreError {
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        CoreError::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn config(
        file: impl Into<PathBuf>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        CoreError::Config {
            file: file.into(),
            key: key.into(),
            msg: msg.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io {
            path: path.into(),
            source,
        }
    }
    /// The documented exit code this error produces.
    pub fn exit(&self) -> Exit {
        match self {
            CoreError::Checkpoint { .. } | CoreError::Config { .. } => Exit::InvalidInput,
            CoreError::Io { .. } | CoreError::Png(_) => Exit::Failure,
        }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// The message of a caught panic (`catch_unwind`): its `&str` or `String` payload, else
/// `(no message)` for payloads of another type. libtorch errors reach Rust as panics through
/// tch's infallible API; this is how the worker reports them.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
