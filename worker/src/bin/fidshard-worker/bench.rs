//! The `bench` task: seconds per image of the sampling path and where they go (noise drawing,
//! DiT forward passes, VAE decoding, PNG encoding). Either a job's real weights, or a preset with
//! random weights and the real sd-vae-ft-ema architecture (random too), which measures the cost
//! of a real-sized model without its checkpoint.
use crate::device::to_tch;
use anyhow::{anyhow, Result};
use fidshard_core::diffusion::{BetaSchedule, VarianceType};
use fidshard_core::output::encode_png;
use fidshard_core::task::{BenchModel, BenchTask};
use fidshard_core::{CfgChannels, DiTConfig, LabelMode, SamplerKind, SamplerSettings, VaeConfig};
use fidshard_worker::dit::DiT;
use fidshard_worker::params::RandomParams;
use fidshard_worker::vae::AutoencoderKlDecoder;
use fidshard_worker::{Engine, Timings};
use std::path::PathBuf;
use std::time::Instant;
use tch::Kind;

/// sd-vae-ft-ema's `config.json`, the default VAE architecture of `--random-model`.
const SD_VAE_FT_EMA: &str = include_str!("../../../assets/sd-vae-ft-ema.config.json");

fn build_engine(task: &BenchTask) -> Result<(Engine, String)> {
    let device = to_tch(task.device)?;
    fidshard_worker::precision::configure(task.precision);
    match &task.model {
        BenchModel::Job { settings, name } => {
            let mut s = (**settings).clone();
            s.batch_size = task.batch_size;
            s.vae_batch_size = task.batch_size;
            s.precision = task.precision;
            Ok((Engine::load(s, device)?, name.clone()))
        }
        BenchModel::Random {
            preset,
            vae_config,
            image_size,
            steps,
            cfg_scale,
        } => {
            let (vae_cfg, vae_path) = match vae_config {
                Some(p) => (VaeConfig::from_file(p)?, p.clone()),
                None => {
                    let origin = PathBuf::from("<embedded sd-vae-ft-ema config>");
                    (VaeConfig::from_json_str(SD_VAE_FT_EMA, &origin)?, origin)
                }
            };
            let factor = vae_cfg.upsample_factor();
            // `SiT-*` presets run as REPA samples for its FID tables: the SDE, all channels
            // guided, REPA's pixels.
            let sit = preset.starts_with("SiT");
            let dit_cfg = if sit {
                fidshard_core::flow::sit_preset(preset, image_size / factor, 1000)
            } else {
                DiTConfig::preset(preset, image_size / factor, 1000)
            };
            let dit_cfg = dit_cfg.ok_or_else(|| {
                fidshard_core::input_error!(
                    "--random-model `{preset}` is not a DiT preset (DiT-XL/2, ...) nor a SiT preset (SiT-XL/2, ...)"
                )
            })?;
            let mut params = RandomParams {
                device,
                kind: Kind::Float,
            };
            let _g = tch::no_grad_guard();
            let dit = DiT::build(&dit_cfg, &mut params)?;
            let vae = AutoencoderKlDecoder::build(&vae_cfg, &mut params)?;
            let settings = SamplerSettings {
                dit: dit_cfg,
                checkpoint: PathBuf::from("<random>"),
                vae: vae_path,
                num_samples: u64::MAX,
                seed: 0,
                labels: LabelMode::Random,
                cfg_scale: *cfg_scale,
                cfg_channels: if sit {
                    CfgChannels::All
                } else {
                    CfgChannels::default()
                },
                sampler: if sit {
                    SamplerKind::Sde
                } else {
                    SamplerKind::Ddpm
                },
                steps: steps.clone(),
                eta: 0.0,
                beta_schedule: BetaSchedule::Linear,
                variance: VarianceType::LearnedRange,
                precision: task.precision,
                batch_size: task.batch_size,
                vae_batch_size: task.batch_size,
                family: if sit {
                    fidshard_core::ModelFamily::Sit
                } else {
                    fidshard_core::ModelFamily::Dit
                },
                flow: Default::default(),
                latent_scale: None,
                latent_bias: None,
                model_format: fidshard_core::ModelFormat::Native,
                vae_script: None,
                pixels: if sit {
                    fidshard_core::Pixels::Repa
                } else {
                    fidshard_core::Pixels::Dit
                },
            };
            let what = format!(
                "{preset} (random weights) at {image_size} px, steps {steps}, cfg {cfg_scale}"
            );
            Ok((Engine::from_parts(settings, device, dit, vae)?, what))
        }
    }
}

pub(crate) fn run(task: BenchTask) -> Result<()> {
    let (engine, what) = build_engine(&task)?;
    if let Some(n) = task.threads {
        tch::set_num_threads(n.max(1));
    }
    let m = measure(&engine, task.images)?;
    report(&task, &engine, &what, &m);
    Ok(())
}

/// What the timed batches took.
struct Measured {
    t: Timings,
    /// Seconds spent encoding PNGs.
    png: f64,
    wall: f64,
    done: usize,
}

/// Samples `images` images after one warm-up batch (allocator, kernels), which is not counted.
fn measure(engine: &Engine, images: usize) -> Result<Measured> {
    let side = engine.image_size() as u32;
    let batch = engine.batch_size().max(1);
    let mut warm = Timings::default();
    let first: Vec<u64> = (0..batch as u64).collect();
    engine
        .try_sample_batch(&first, &mut warm)
        .map_err(|m| anyhow!("warm-up batch: {m}"))?;

    let mut t = Timings::default();
    let mut png = 0.0;
    let start = Instant::now();
    let mut done = 0usize;
    let mut next = batch as u64;
    while done < images {
        let n = batch.min(images - done);
        let idx: Vec<u64> = (next..next + n as u64).collect();
        let out = engine
            .try_sample_batch(&idx, &mut t)
            .map_err(|m| anyhow!(m))?;
        let p = Instant::now();
        for s in &out.samples {
            encode_png(&s.pixels, side)?;
        }
        png += p.elapsed().as_secs_f64();
        done += n;
        next += n as u64;
    }
    Ok(Measured {
        t,
        png,
        wall: start.elapsed().as_secs_f64(),
        done,
    })
}

/// Prints seconds per image by stage, model FLOPs, MFU and GPU memory.
fn report(task: &BenchTask, engine: &Engine, what: &str, m: &Measured) {
    let Measured { t, png, wall, done } = *m;
    let batch = engine.batch_size().max(1);
    let per = |x: f64| x / done.max(1) as f64;
    println!("bench: {what}");
    println!(
        "device {}, precision {}, batch {batch}, {done} images, {} threads",
        task.device,
        engine.settings().precision.as_str(),
        tch::get_num_threads()
    );
    println!(
        "  total        {:8.4} s/image   {:8.3} images/s",
        per(wall),
        done as f64 / wall
    );
    println!("  noise draw   {:8.4} s/image", per(t.noise));
    println!("  DiT+sampler  {:8.4} s/image", per(t.dit));
    println!("  VAE decode   {:8.4} s/image", per(t.vae));
    println!("  PNG encode   {:8.4} s/image", per(png));
    print_flops(engine, task, done, t.dit);
    if let Some(p) = &task.project {
        println!(
            "{}",
            projection(p, done as f64 / wall, task.device.is_cuda())
        );
    }
    if task.device.is_cuda() {
        match device_memory_used() {
            Some(b) => println!(
                "  GPU memory   {:8.1} GiB used at the end (NVML, whole device)",
                b as f64 / (1u64 << 30) as f64
            ),
            None => println!("  GPU memory   (NVML not available)"),
        }
    }
}

/// The model's FLOPs per image and the rate achieved (MFU with `--peak-tflops`), counted from
/// the DiT architecture; a TorchScript model's architecture is its own, so nothing is counted.
fn print_flops(engine: &Engine, task: &BenchTask, done: usize, dit_seconds: f64) {
    let s = engine.settings();
    if s.model_format == fidshard_core::ModelFormat::Torchscript {
        println!("  model FLOPs  (not counted: a TorchScript model's architecture is its own)");
        return;
    }
    let steps = fidshard_worker::flops::model_evaluations(s, engine.num_steps());
    let flops = fidshard_worker::flops::flops_per_image(&s.dit, steps, s.uses_cfg());
    // The DiT's achieved rate (the VAE and the host are not in the numerator).
    let dit_tflops = flops * done as f64 / dit_seconds.max(1e-9) / 1e12;
    println!(
        "  model FLOPs  {:8.1} GFLOP/image ({steps} steps{}), DiT at {dit_tflops:.1} TFLOP/s",
        flops / 1e9,
        if s.uses_cfg() {
            ", x2 for guidance"
        } else {
            ""
        }
    );
    if let Some(peak) = task.peak_tflops {
        println!(
            "  MFU          {:8.1} % of {peak} TFLOP/s (DiT+sampler time)",
            100.0 * dit_tflops / peak
        );
    }
}

/// The job's time at `rate` images/s per device: on one device, on the job's devices, and the
/// device-hours either way.
fn projection(p: &fidshard_core::task::Projection, rate: f64, gpu: bool) -> String {
    let one = p.num_samples as f64 / rate.max(1e-12);
    let n = p.workers.max(1);
    let unit = if gpu { "GPU-hours" } else { "CPU worker-hours" };
    let on_all = if n > 1 {
        format!(", {} on its {n} devices", hours(one / n as f64))
    } else {
        String::new()
    };
    format!(
        "  this job     {}: {} samples take {} on one device{on_all} ({:.2} {unit})",
        p.job,
        p.num_samples,
        hours(one),
        one / 3600.0
    )
}

/// `1 h 05 min`, `12 min`, `40 s`.
fn hours(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// Memory in use on this worker's GPU (NVML; includes the caching allocator's reserve).
fn device_memory_used() -> Option<u64> {
    let nvml = nvml_wrapper::Nvml::init().ok()?;
    let id = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let first = id
        .as_deref()
        .and_then(|v| v.split(',').next())
        .unwrap_or("0")
        .trim()
        .to_string();
    let d = if first.starts_with("GPU-") {
        nvml.device_by_uuid(first.as_str()).ok()?
    } else {
        nvml.device_by_index(first.parse().ok()?).ok()?
    };
    d.memory_info().ok().map(|m| m.used)
}
