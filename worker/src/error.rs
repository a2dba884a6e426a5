//! Typed errors of the engine. Each message names the file, the key and, where there is one,
//! the fix, because it is what a user sees on one line before a non-zero exit.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    #[error("{path}: missing key `{key}` (the model expects shape {expected:?}); is this the right checkpoint for this architecture?")]
    MissingKey {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
    },

    #[error("{path}: unexpected key(s) {} not used by the model; the checkpoint is for another architecture or config", fmt_keys(.keys))]
    UnexpectedKeys { path: PathBuf, keys: Vec<String> },

    #[error("{path}: key `{key}` has shape {found:?} but the model expects {expected:?}{hint}")]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
        found: Vec<i64>,
        hint: String,
    },

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

    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

fn fmt_keys(keys: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    s
}

impl EngineError {
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        EngineError::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn config(
        file: impl Into<PathBuf>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        EngineError::Config {
            file: file.into(),
            key: key.into(),
            msg: msg.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
    /// True for errors caused by the user's input (config, checkpoint, VAE folder) rather than
    /// by the machine; the CLI maps them to the "invalid input" exit code.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, EngineError::Torch(_) | EngineError::Io { .. })
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
