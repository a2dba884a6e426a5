//! `fidshard validate CONFIG`: the config, the checkpoint and the VAE, without sampling (the
//! model check of coordinator/model_check.rs, which `run` makes too).
use crate::coordinator::model_check::check_models;
use crate::job::config::Job;
use anyhow::Result;
use std::path::Path;

pub(crate) fn run(config: &Path) -> Result<()> {
    crate::fetch::prepare(config, crate::fetch::For::Other)?;
    let job = Job::load(config)?;
    // The devices as `run` would resolve them: `devices: [7]` on a machine without GPU 7 is
    // refused here too, not only when the job starts.
    job.workers()?;
    check_models(&job)?;
    let s = &job.settings;
    // A TorchScript model's architecture is its own; the config gives only its shapes.
    let model = match s.model_format {
        fidshard_core::ModelFormat::Native => format!(
            "depth {}, hidden {}, patch {}",
            s.dit.depth, s.dit.hidden_size, s.dit.patch_size
        ),
        fidshard_core::ModelFormat::Torchscript => "TorchScript".to_string(),
    };
    crate::sys::out::outln!(
        "{}: OK: {} samples of {}x{} from {} ({model}), {} {} steps, cfg {}, seed {}",
        config.display(),
        s.num_samples,
        job.image_size,
        job.image_size,
        s.checkpoint.display(),
        s.sampler.as_str(),
        s.steps,
        s.cfg_scale,
        s.seed
    );
    Ok(())
}
