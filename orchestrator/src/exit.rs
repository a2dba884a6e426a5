//! The process exit codes, documented in docs/operations.md. Scripts (cron, Slurm requeue)
//! depend on them, so they never change meaning.
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The command did what was asked (for `run`: every sample exists and the npz is written).
    Complete = 0,
    /// An unexpected runtime failure (I/O, libtorch); the message says what.
    Failure = 1,
    /// Invalid config, checkpoint, VAE folder or command line; nothing was changed.
    InvalidInput = 2,
    /// Finished, but some shards exhausted their retries (`status` names the missing ranges).
    ShardsFailed = 3,
    /// Another coordinator holds this job's out dir.
    Locked = 4,
    /// Interrupted (SIGTERM/SIGINT/SIGUSR1); what finished is recorded; run again to resume.
    /// EX_TEMPFAIL from sysexits.h, the code Slurm requeue scripts test for.
    Interrupted = 75,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// An error that carries the exit code it should produce.
#[derive(Debug, thiserror::Error)]
#[error("{err:#}")]
pub(crate) struct Fatal {
    pub code: Exit,
    pub err: anyhow::Error,
}

impl Fatal {
    pub fn input(e: impl Into<anyhow::Error>) -> Self {
        Fatal {
            code: Exit::InvalidInput,
            err: e.into(),
        }
    }
}

/// Maps an error from anywhere to its exit code: typed `Fatal` wins, an engine input error is
/// `InvalidInput`, anything else `Failure`.
pub(crate) fn code_of(err: &anyhow::Error) -> Exit {
    if let Some(f) = err.downcast_ref::<Fatal>() {
        return f.code;
    }
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<fidshard_worker::EngineError>() {
            return if e.is_input_error() {
                Exit::InvalidInput
            } else {
                Exit::Failure
            };
        }
    }
    Exit::Failure
}
