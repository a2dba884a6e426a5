//! `fidshard validate CONFIG`: the config, the checkpoint and the VAE, without sampling; and the
//! model check `run` makes before spawning workers.
use crate::job::config::Job;
use crate::worker::{describe_output, no_answer, run_task_limited, Output};
use anyhow::Result;
use fidshard_core::task::{Task, TaskAnswer};
use std::path::Path;
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

pub(crate) fn run(config: &Path) -> Result<()> {
    crate::fetch::prepare(config, crate::fetch::For::Other)?;
    let job = Job::load(config)?;
    // The devices as `run` would resolve them: `devices: [7]` on a machine without GPU 7 is
    // refused here too, not only when the job starts.
    job.workers()?;
    check_models(&job)?;
    let s = &job.settings;
    crate::sys::out::outln!(
        "{}: OK: {} samples of {}x{} from {} (depth {}, hidden {}, patch {}), {} {} steps, cfg {}, seed {}",
        config.display(),
        s.num_samples,
        job.image_size,
        job.image_size,
        s.checkpoint.display(),
        s.dit.depth,
        s.dit.hidden_size,
        s.dit.patch_size,
        s.sampler.as_str(),
        s.steps,
        s.cfg_scale,
        s.seed
    );
    Ok(())
}
