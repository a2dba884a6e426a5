//! The ways fetching weights ends badly: temporary failures (the network, the server), which
//! exit 75, "try again later", like an interrupted run; what the user must fix (a repo that
//! does not exist, a missing token, offline mode, a wrong `sha256:`), which exits 2. The codes
//! are given in exit_code.rs at the top of the binary.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// Every attempt failed on something temporary.
    #[error(
        "{url}: download failed after {attempts} attempt(s); last error: {last}. Nothing else \
         of the job was changed and the bytes received so far are kept: run the same command \
         again later to resume"
    )]
    Exhausted {
        url: String,
        attempts: u32,
        last: String,
    },
    /// A stop signal arrived while downloading.
    #[error("{signal} while downloading {what}; the bytes received so far are kept: run again to resume")]
    Interrupted { signal: &'static str, what: String },
    /// Not found, not allowed, offline, a checksum the job file gives that the file does not
    /// have, a bad setting: one line that says what to do.
    #[error("{0}")]
    Input(String),
    /// The local disk failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FetchError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FetchError {
        let path = path.into();
        move |source| FetchError::Io { path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit_code::code_of;
    use anyhow::Context;
    use fidshard_core::Exit;

    #[test]
    fn codes_survive_context() {
        let e = FetchError::Exhausted {
            url: "http://h/x".into(),
            attempts: 3,
            last: "HTTP 500".into(),
        };
        let e = Err::<(), _>(e).context("fetching").unwrap_err();
        assert_eq!(code_of(&e), Exit::Interrupted);
        let e = anyhow::Error::new(FetchError::Input("no".into()));
        assert_eq!(code_of(&e), Exit::InvalidInput);
    }
}
