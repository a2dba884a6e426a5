//! The model check `run` and `validate` make before any worker samples: the DiT and the VAE
//! built from their files on the CPU, in a worker process, then dropped.
use crate::job::config::Job;
use crate::worker::{describe_output, no_answer, run_task_limited, Output};
use anyhow::Result;
use fidshard_core::task::{Task, TaskAnswer};
use std::time::Duration;

/// The model check's time limit unless `FIDSHARD_CHECK_TIMEOUT` (seconds) says otherwise:
/// loading a DiT-XL checkpoint and the VAE from a slow network file system takes minutes.
const CHECK_TIMEOUT: Duration = Duration::from_secs(600);
const CHECK_TIMEOUT_ENV: &str = "FIDSHARD_CHECK_TIMEOUT";

/// Builds the DiT and the VAE from their files on the CPU in a worker process (names, shapes,
/// label table, VAE config), then drops them. A problem is reported once, with its exit code;
/// a worker binary that exits 0 without the check's answer is exit 2; a check that outlives
/// its time limit is stopped (exit 1), and a stop signal stops it (exit 75) in `run`.
pub(crate) fn check_models(job: &Job) -> Result<()> {
    let task = Task::Check {
        settings: Box::new(job.settings.clone()),
    };
    let setting = format!("{CHECK_TIMEOUT_ENV}=SECONDS");
    let stdout = run_task_limited(&task, Output::Capture, Some((check_timeout()?, &setting)))?;
    if !TaskAnswer::answered(&stdout, "check") {
        return Err(no_answer("the model check", &describe_output(&stdout)));
    }
    Ok(())
}

/// [`CHECK_TIMEOUT`], or `FIDSHARD_CHECK_TIMEOUT` (whole seconds, 1 to 86400).
fn check_timeout() -> Result<Duration> {
    let Some(v) = std::env::var_os(CHECK_TIMEOUT_ENV) else {
        return Ok(CHECK_TIMEOUT);
    };
    let v = v.to_string_lossy();
    match v.trim().parse::<u64>() {
        Ok(s) if (1..=86_400).contains(&s) => Ok(Duration::from_secs(s)),
        _ => Err(fidshard_core::input_error!(
            "{CHECK_TIMEOUT_ENV}={v}: not a number of seconds in 1..=86400; set it to the model check's time limit (default 600) or unset it"
        )),
    }
}
