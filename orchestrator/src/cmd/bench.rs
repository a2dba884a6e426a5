//! `fidshard bench`: seconds per image and where they go, measured in the worker binary. Either
//! a job config (real weights), or a preset with random weights and the real sd-vae-ft-ema
//! architecture, which measures a real-sized model without its checkpoint.
use crate::job::config::Job;
use crate::worker::{run_task, Output};
use anyhow::Result;
use fidshard_core::task::{BenchModel, BenchTask, Task};
use fidshard_core::{BatchSize, DeviceSpec, Precision};
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// A job config to benchmark with its real weights.
    config: Option<PathBuf>,
    /// Instead of a config: a DiT preset (e.g. DiT-S/2, sampled with DDPM) or a SiT preset
    /// (e.g. SiT-XL/2, sampled with REPA's SDE) with random weights.
    #[arg(long, conflicts_with = "config")]
    random_model: Option<String>,
    /// diffusers VAE config.json for --random-model (default: sd-vae-ft-ema's architecture,
    /// embedded in the worker binary).
    #[arg(long)]
    vae_config: Option<PathBuf>,
    /// Image side for --random-model.
    #[arg(long, default_value_t = 256)]
    image_size: i64,
    /// Respacing spec for --random-model (a SiT preset: the number of SDE steps).
    #[arg(long, default_value = "10")]
    steps: String,
    #[arg(long, default_value_t = 4.0)]
    cfg_scale: f64,
    /// fp32, tf32, bf16 or fp16 (default: the config's, else fp32).
    #[arg(long, value_parser = parse_precision)]
    precision: Option<Precision>,
    /// Images per batch, or `auto` (default: the config's batch_size, else 4).
    #[arg(long, value_parser = parse_batch)]
    batch_size: Option<BatchSize>,
    /// Number of images to time (after one warm-up batch).
    #[arg(long, default_value_t = 8)]
    images: usize,
    #[arg(long, default_value = "cpu", value_parser = DeviceSpec::parse)]
    device: DeviceSpec,
    /// CPU threads. Sampling uses 1 so that images never depend on the machine (see
    /// docs/architecture.md); more threads only show what the arithmetic could do.
    #[arg(long)]
    threads: Option<i32>,
    /// The card's dense peak TFLOP/s at this precision (H100 SXM: 494.7 tf32, 989.4 bf16/fp16),
    /// to report model FLOP utilisation.
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// With --random-model: project the measured rate onto this job (its num_samples and
    /// devices): the time it will take and the GPU-hours. A job config is projected anyway.
    #[arg(long, conflicts_with = "config")]
    job: Option<PathBuf>,
}

/// The projection of `job` (its samples over its devices; one when they cannot be found here,
/// e.g. `devices: auto` on a machine without GPUs).
fn projection(path: &std::path::Path, job: &Job) -> fidshard_core::task::Projection {
    fidshard_core::task::Projection {
        job: path.display().to_string(),
        num_samples: job.settings.num_samples,
        workers: job.workers().map_or(1, |d| d.len().max(1)),
    }
}

fn parse_batch(s: &str) -> Result<BatchSize, String> {
    match s {
        "auto" => Ok(BatchSize::Auto),
        _ => match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(BatchSize::Fixed(n)),
            _ => Err(format!(
                "`{s}` is not a positive number of images or `auto`"
            )),
        },
    }
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    Precision::parse(s).ok_or_else(|| format!("`{s}` is not one of {}", Precision::NAMES))
}

pub(crate) fn run(args: BenchArgs) -> Result<()> {
    if args.images == 0 {
        return Err(fidshard_core::input_error!("--images must be at least 1"));
    }
    if !args.cfg_scale.is_finite() || args.image_size <= 0 {
        return Err(fidshard_core::input_error!(
            "--cfg-scale must be finite and --image-size positive"
        ));
    }
    let mut project = match &args.job {
        Some(path) => Some(projection(path, &Job::load_without_weights(path)?)),
        None => None,
    };
    let (model, precision, batch_size) = match &args.config {
        Some(cfg) => {
            crate::fetch::prepare(cfg, crate::fetch::For::Other)?;
            let job = Job::load(cfg)?;
            project = Some(projection(cfg, &job));
            let precision = args.precision.unwrap_or(job.settings.precision);
            let batch = args.batch_size.unwrap_or(job.settings.batch_size);
            let model = BenchModel::Job {
                settings: Box::new(job.settings),
                name: cfg.display().to_string(),
            };
            (model, precision, batch)
        }
        None => {
            let model = BenchModel::Random {
                preset: args
                    .random_model
                    .clone()
                    .unwrap_or_else(|| "DiT-S/2".into()),
                vae_config: args.vae_config.clone(),
                image_size: args.image_size,
                steps: args.steps.clone(),
                cfg_scale: args.cfg_scale,
            };
            (
                model,
                args.precision.unwrap_or(Precision::Fp32),
                args.batch_size.unwrap_or(BatchSize::Fixed(4)),
            )
        }
    };
    let task = Task::Bench(BenchTask {
        model,
        precision,
        batch_size,
        images: args.images,
        device: args.device,
        threads: args.threads,
        peak_tflops: args.peak_tflops.filter(|p| p.is_finite() && *p > 0.0),
        project,
    });
    run_task(&task, Output::Inherit)?;
    Ok(())
}
