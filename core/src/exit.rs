//! The process exit codes, documented in docs/operations.md. Scripts (cron, Slurm requeue)
//! depend on them, so they never change meaning.
//!
//! A leaf: the codes and [`Fatal`] (an error that carries its code) name no other error type.
//! Which error produces which code is decided by the walk in [`crate::error::code_of_with`] and
//! by each binary's own map at its top (orchestrator/src/exit_code.rs, the worker's main.rs).
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
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
    /// Interrupted (SIGTERM/SIGINT/SIGHUP/SIGUSR1); what finished is recorded; run again to resume.
    /// EX_TEMPFAIL from sysexits.h, the code Slurm requeue scripts test for.
    Interrupted = 75,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

impl Exit {
    /// Every code, for documentation and the exit-code walk test.
    pub const ALL: [Exit; 6] = [
        Exit::Complete,
        Exit::Failure,
        Exit::InvalidInput,
        Exit::ShardsFailed,
        Exit::Locked,
        Exit::Interrupted,
    ];

    /// The code a process exited with, if it is one of ours.
    pub fn from_code(code: i32) -> Option<Exit> {
        Exit::ALL.into_iter().find(|e| *e as i32 == code)
    }

    /// One line for docs and `--help`.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Complete => "done",
            Exit::Failure => "unexpected runtime failure (I/O, libtorch)",
            Exit::InvalidInput => {
                "invalid config, model file, command line or environment; nothing changed"
            }
            Exit::ShardsFailed => "finished, but some shards exhausted their retries",
            Exit::Locked => "another coordinator holds this out dir",
            Exit::Interrupted => "interrupted; run again to resume",
        }
    }
}

/// An error that carries the exit code it should produce.
#[derive(Debug, thiserror::Error)]
#[error("{err:#}")]
pub struct Fatal {
    pub code: Exit,
    pub err: anyhow::Error,
}

impl Fatal {
    pub fn new(code: Exit, e: impl Into<anyhow::Error>) -> Self {
        Fatal {
            code,
            err: e.into(),
        }
    }
    pub fn input(e: impl Into<anyhow::Error>) -> Self {
        Fatal::new(Exit::InvalidInput, e)
    }
}

/// Shorthand: an input error (exit 2) with a formatted one-line message.
#[macro_export]
macro_rules! input_error {
    ($($arg:tt)*) => {
        anyhow::Error::new($crate::exit::Fatal::input(anyhow::anyhow!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for e in Exit::ALL {
            assert_eq!(Exit::from_code(e as i32), Some(e));
            assert!(!e.meaning().is_empty());
        }
        assert_eq!(Exit::from_code(101), None);
    }
}
