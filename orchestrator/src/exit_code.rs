//! The exit-code map of `fidshard`, at the top of the binary (docs/operations.md lists the
//! codes). Every typed error of the coordinator gets its code here and nowhere else; the error
//! types themselves only say what went wrong. `main` is the only caller: the lower layers
//! return their typed errors with `?` and never decide a code.
//!
//! The code of an error is that of the first error in its chain with a known code, so a
//! `.context(...)` or a new `?` can never turn a documented code into 1. fidshard-core's walk
//! ([`code_of_with`]) knows `Fatal` (a code attached where no typed error carries one),
//! `CoreError` and `RespaceError`; this map adds the coordinator's types.
use crate::fetch::FetchError;
use crate::outdir::claim::ClaimError;
use crate::outdir::lock::LockError;
use crate::outdir::state::StateError;
use fidshard_core::error::code_of_with;
use fidshard_core::Exit;

/// The exit code `err` ends the process with; anything unknown is `Failure`.
pub(crate) fn code_of(err: &anyhow::Error) -> Exit {
    code_of_with(err, &|cause| {
        if let Some(e) = cause.downcast_ref::<LockError>() {
            return Some(lock(e));
        }
        if let Some(e) = cause.downcast_ref::<ClaimError>() {
            return Some(claim(e));
        }
        if let Some(e) = cause.downcast_ref::<StateError>() {
            return Some(state(e));
        }
        cause.downcast_ref::<FetchError>().map(fetch)
    })
}

/// Another coordinator holds the out dir: 4; an out dir that is not fidshard's: as the claim.
fn lock(e: &LockError) -> Exit {
    match e {
        LockError::Held { .. } => Exit::Locked,
        LockError::Io { .. } => Exit::Failure,
        LockError::Claim(e) => claim(e),
    }
}

/// A folder the user named that fidshard must not write into: 2 (nothing was changed).
fn claim(e: &ClaimError) -> Exit {
    match e {
        ClaimError::NotADir(_)
        | ClaimError::Foreign { .. }
        | ClaimError::ReadOnly { .. }
        | ClaimError::SamplesNotOwn { .. } => Exit::InvalidInput,
        ClaimError::Io { .. } => Exit::Failure,
    }
}

/// A different job in the out dir is the user's to fix (2); a state database open elsewhere
/// is another process at work (4).
fn state(e: &StateError) -> Exit {
    match e {
        StateError::FingerprintChanged { .. } => Exit::InvalidInput,
        StateError::Busy { .. } => Exit::Locked,
        StateError::Db { .. } | StateError::Corrupt { .. } => Exit::Failure,
    }
}

/// Temporary failures (the network, the server, a stop signal) are 75, "try again later", like
/// an interrupted run; what the user must fix is 2.
fn fetch(e: &FetchError) -> Exit {
    match e {
        FetchError::Exhausted { .. } | FetchError::Interrupted { .. } => Exit::Interrupted,
        FetchError::Input(_) => Exit::InvalidInput,
        FetchError::Io { .. } => Exit::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use std::path::PathBuf;

    fn io() -> std::io::Error {
        std::io::Error::other("disk")
    }

    /// The code of `e` as main sees it: behind a context, as errors reach main.
    fn code(e: impl std::error::Error + Send + Sync + 'static) -> Exit {
        code_of(&Err::<(), _>(e).context("doing the job").unwrap_err())
    }

    #[test]
    fn every_error_type_maps_to_its_documented_code() {
        let dir = PathBuf::from("/out");
        let claim_input = || ClaimError::NotADir(dir.clone());
        let held = LockError::Held {
            pid: 7,
            host: None,
            since: 0,
            path: dir.clone(),
        };
        assert_eq!(code(held), Exit::Locked);
        let lock_io = LockError::Io {
            path: dir.clone(),
            source: io(),
        };
        assert_eq!(code(lock_io), Exit::Failure);
        assert_eq!(code(LockError::Claim(claim_input())), Exit::InvalidInput);

        assert_eq!(code(claim_input()), Exit::InvalidInput);
        let foreign = ClaimError::Foreign {
            dir: dir.clone(),
            found: "thesis.tex".into(),
        };
        assert_eq!(code(foreign), Exit::InvalidInput);
        let read_only = ClaimError::ReadOnly {
            dir: dir.clone(),
            source: io(),
        };
        assert_eq!(code(read_only), Exit::InvalidInput);
        let not_own = ClaimError::SamplesNotOwn {
            dir: dir.clone(),
            what: "a symlink".into(),
        };
        assert_eq!(code(not_own), Exit::InvalidInput);
        let claim_io = ClaimError::Io {
            path: dir.clone(),
            source: io(),
        };
        assert_eq!(code(claim_io), Exit::Failure);

        let changed = StateError::FingerprintChanged {
            out_dir: dir.clone(),
            changed: Vec::new(),
        };
        assert_eq!(code(changed), Exit::InvalidInput);
        assert_eq!(code(StateError::Busy { path: dir.clone() }), Exit::Locked);
        let corrupt = StateError::Corrupt {
            path: dir.clone(),
            key: "meta".into(),
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        };
        assert_eq!(code(corrupt), Exit::Failure);
        let db = StateError::Db {
            path: dir.clone(),
            source: sled::Error::Unsupported("x".into()),
        };
        assert_eq!(code(db), Exit::Failure);

        let exhausted = FetchError::Exhausted {
            url: "http://h/x".into(),
            attempts: 3,
            last: "HTTP 500".into(),
        };
        assert_eq!(code(exhausted), Exit::Interrupted);
        let stopped = FetchError::Interrupted {
            signal: "SIGTERM",
            what: "model.pt".into(),
        };
        assert_eq!(code(stopped), Exit::Interrupted);
        assert_eq!(code(FetchError::Input("no".into())), Exit::InvalidInput);
        assert_eq!(code(FetchError::io(&dir)(io())), Exit::Failure);
    }

    #[test]
    fn core_errors_and_attached_codes_keep_theirs() {
        let e = fidshard_core::CoreError::config("/job.yaml", "steps", "not a number");
        assert_eq!(code(e), Exit::InvalidInput);
        let e = fidshard_core::Fatal::new(Exit::Interrupted, anyhow::anyhow!("stopped"));
        assert_eq!(code(e), Exit::Interrupted);
        assert_eq!(code_of(&anyhow::anyhow!("anything else")), Exit::Failure);
    }
}
