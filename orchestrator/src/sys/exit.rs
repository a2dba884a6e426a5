//! Exit codes (documented in docs/operations.md; defined in fidshard-core so that both binaries
//! use the same numbers) and the walk that finds an error's code.
pub(crate) use fidshard_core::exit::{Exit, Fatal};

/// The exit code of `err`: the first error in its chain whose type knows its code decides;
/// anything unknown is `Failure`. Each error type of the coordinator is listed here once.
pub(crate) fn code_of(err: &anyhow::Error) -> Exit {
    fidshard_core::exit::code_of_with(err, &|cause| {
        if let Some(e) = cause.downcast_ref::<crate::outdir::lock::LockError>() {
            return Some(e.exit());
        }
        if let Some(e) = cause.downcast_ref::<crate::outdir::claim::ClaimError>() {
            return Some(e.exit());
        }
        if let Some(e) = cause.downcast_ref::<crate::outdir::state::StateError>() {
            return Some(e.exit());
        }
        if let Some(e) = cause.downcast_ref::<crate::fetch::FetchError>() {
            return Some(e.exit());
        }
        None
    })
}
