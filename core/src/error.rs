//! Errors of the tch-free layer (configs, image files). Each message names the file, the key and,
//! where there is one, the fix: it is what a user sees on one line before a non-zero exit.
use crate::exit::{Exit, Fatal};
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
    /// The I/O error inside, for a caller with an error type of its own that names the path
    /// itself (any other variant, which an I/O helper never returns, becomes `Other`).
    pub fn into_io(self) -> std::io::Error {
        match self {
            CoreError::Io { source, .. } => source,
            other => std::io::Error::other(other),
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

/// The exit code of an error: the first error in its chain whose type knows its code decides
/// (`Fatal`, [`CoreError`], [`RespaceError`](crate::diffusion::RespaceError),
/// and whatever `more` recognises, e.g. the engine's error in the worker binary); anything
/// else is `Failure`. Walking the whole chain means a `.context(...)` or a new `?` can never
/// turn a documented code into 1.
pub fn code_of_with(
    err: &anyhow::Error,
    more: &dyn Fn(&(dyn std::error::Error + 'static)) -> Option<Exit>,
) -> Exit {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Fatal>() {
            return f.code;
        }
        if let Some(e) = cause.downcast_ref::<CoreError>() {
            return e.exit();
        }
        if cause
            .downcast_ref::<crate::diffusion::RespaceError>()
            .is_some()
        {
            return Exit::InvalidInput;
        }
        if let Some(code) = more(cause) {
            return code;
        }
    }
    Exit::Failure
}

/// [`code_of_with`] for the types this crate knows.
pub fn code_of(err: &anyhow::Error) -> Exit {
    code_of_with(err, &|_| None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn context_keeps_the_code() {
        let e: anyhow::Error = Fatal::input(anyhow::anyhow!("bad key")).into();
        let e = Err::<(), _>(e)
            .context("loading x")
            .context("run")
            .unwrap_err();
        assert_eq!(code_of(&e), Exit::InvalidInput);
        let io = CoreError::io("/x", std::io::Error::other("disk"));
        let e = Err::<(), _>(io).context("writing").unwrap_err();
        assert_eq!(code_of(&e), Exit::Failure);
        let png = CoreError::Png("bad".into());
        assert_eq!(code_of(&anyhow::Error::new(png)), Exit::Failure);
        assert_eq!(code_of(&anyhow::anyhow!("other")), Exit::Failure);
    }
}
