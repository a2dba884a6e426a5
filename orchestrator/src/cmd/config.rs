//! `fidshard config CONFIG [--set key=value ...]`: the job as fidshard will run it, every default
//! filled in, paths resolved, the `--set` overrides applied. `run` writes the same text to
//! `OUT/job.resolved.yaml`, so what produced an npz is always on disk beside it. Needs no
//! weights.
use crate::job::config::{Devices, Job};
use anyhow::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub(crate) struct ConfigArgs {
    /// The job's YAML file.
    config: PathBuf,
}

#[derive(Serialize)]
struct Resolved<'a> {
    source: &'a Path,
    out_dir: &'a Path,
    image_size: i64,
    /// What decides the pixels (sent to every worker as is).
    sampler: &'a fidshard_core::SamplerSettings,
    /// How the coordinator runs it (no pixel depends on these).
    run: RunView,
    /// The `--set` overrides applied, as typed.
    overrides: Vec<String>,
}

#[derive(Serialize)]
struct RunView {
    devices: serde_yaml::Value,
    shard_size: u64,
    shards: u64,
    retry_attempts: u32,
    retry_backoff_seconds: f64,
    retry_backoff_max_seconds: f64,
    stall_timeout_seconds: f64,
}

/// The resolved job as YAML text.
pub(crate) fn resolved_yaml(job: &Job) -> Result<String> {
    let devices = match &job.run.devices {
        Devices::Auto => serde_yaml::Value::String("auto".into()),
        Devices::Gpus(ids) => serde_yaml::to_value(ids)?,
        Devices::Cpu(n) => serde_yaml::from_str(&format!("{{cpu: {n}}}"))?,
    };
    let view = Resolved {
        source: &job.source,
        out_dir: &job.out_dir,
        image_size: job.image_size,
        sampler: &job.settings,
        run: RunView {
            devices,
            shard_size: job.run.shard_size,
            shards: job.shard_count(),
            retry_attempts: job.run.retry.attempts,
            retry_backoff_seconds: job.run.retry.backoff.as_secs_f64(),
            retry_backoff_max_seconds: job.run.retry.backoff_max.as_secs_f64(),
            stall_timeout_seconds: job.run.stall_timeout.as_secs_f64(),
        },
        overrides: crate::job::config::overrides::global()
            .iter()
            .map(|o| o.text.clone())
            .collect(),
    };
    Ok(format!(
        "# The resolved job (fidshard {}): every default filled in, paths resolved.\n{}",
        env!("CARGO_PKG_VERSION"),
        serde_yaml::to_string(&view)?
    ))
}

pub(crate) fn run(args: ConfigArgs) -> Result<()> {
    let job = Job::load_without_weights(&args.config)?;
    crate::sys::out::print(&resolved_yaml(&job)?);
    Ok(())
}
