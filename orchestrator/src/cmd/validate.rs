//! `fidshard validate CONFIG`: the config, the checkpoint and the VAE, without sampling; and the
//! model check `run` makes before spawning workers.
use crate::job::config::Job;
use crate::worker::{run_task, Output};
use anyhow::Result;
use fidshard_core::task::Task;
use std::path::Path;

/// Builds the DiT and the VAE from their files on the CPU in a worker process (names, shapes,
/// label table, VAE config), then drops them. A problem is reported once, with its exit code.
pub(crate) fn check_models(job: &Job) -> Result<()> {
    let task = Task::Check {
        settings: Box::new(job.settings.clone()),
    };
    run_task(&task, Output::Capture)?;
    Ok(())
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
