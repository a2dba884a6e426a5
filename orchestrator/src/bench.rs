//! `fidshard bench`: seconds per image of the engine and where they go (noise drawing, DiT
//! forward passes, VAE decoding, PNG encoding). Either a job config (real weights), or a preset
//! with random weights and the real sd-vae-ft-ema architecture (random weights too), which
//! measures the cost of a real-sized model without its checkpoint.
use crate::config::Job;
use anyhow::{anyhow, Result};
use fidshard_worker::diffusion::{BetaSchedule, VarianceType};
use fidshard_worker::dit::{CfgChannels, DiT, DiTConfig};
use fidshard_worker::output::encode_png;
use fidshard_worker::params::RandomParams;
use fidshard_worker::vae::{AutoencoderKlDecoder, VaeConfig};
use fidshard_worker::{Engine, LabelMode, Precision, SamplerKind, SamplerSettings, Timings};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind};

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// A job config to benchmark with its real weights.
    config: Option<PathBuf>,
    /// Instead of a config: a DiT preset with random weights (e.g. DiT-S/2).
    #[arg(long, conflicts_with = "config")]
    random_model: Option<String>,
    /// diffusers VAE config.json for --random-model (default: sd-vae-ft-ema's architecture).
    #[arg(long)]
    vae_config: Option<PathBuf>,
    /// Image side for --random-model.
    #[arg(long, default_value_t = 256)]
    image_size: i64,
    /// Respacing spec for --random-model.
    #[arg(long, default_value = "10")]
    steps: String,
    #[arg(long, default_value_t = 4.0)]
    cfg_scale: f64,
    /// fp32, tf32, bf16 or fp16.
    #[arg(long, default_value = "fp32")]
    precision: String,
    /// Images per batch.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Number of images to time (after one warm-up batch).
    #[arg(long, default_value_t = 8)]
    images: usize,
    #[arg(long, default_value = "cpu", value_parser = crate::sample::parse_device)]
    device: Device,
    /// CPU threads. Sampling uses 1 so that images never depend on the machine (see
    /// docs/architecture.md); more threads only show what the arithmetic could do.
    #[arg(long)]
    threads: Option<i32>,
}

fn precision(s: &str) -> Result<Precision> {
    Precision::parse(s)
        .ok_or_else(|| anyhow!("--precision `{s}` is not one of {}", Precision::NAMES))
}

fn default_vae_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/golden/manifests/sd-vae-ft-ema.config.json")
}

fn build_engine(args: &BenchArgs) -> Result<(Engine, String)> {
    crate::device::check(args.device)?;
    if let Some(cfg) = &args.config {
        let mut job = Job::load(cfg)?;
        job.settings.batch_size = args.batch_size;
        job.settings.vae_batch_size = args.batch_size;
        fidshard_worker::precision::configure(job.settings.precision);
        return Ok((
            Engine::load(job.settings, args.device)?,
            cfg.display().to_string(),
        ));
    }
    let preset = args.random_model.as_deref().unwrap_or("DiT-S/2");
    let vae_path = args.vae_config.clone().unwrap_or_else(default_vae_config);
    let vae_cfg = VaeConfig::from_file(&vae_path)?;
    let factor = vae_cfg.upsample_factor();
    let dit_cfg = DiTConfig::preset(preset, args.image_size / factor, 1000)
        .ok_or_else(|| anyhow!("--random-model `{preset}` is not a DiT preset"))?;
    let precision = precision(&args.precision)?;
    fidshard_worker::precision::configure(precision);
    let mut params = RandomParams {
        device: args.device,
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
        cfg_scale: args.cfg_scale,
        cfg_channels: CfgChannels::default(),
        sampler: SamplerKind::Ddpm,
        steps: args.steps.clone(),
        eta: 0.0,
        beta_schedule: BetaSchedule::Linear,
        variance: VarianceType::LearnedRange,
        precision,
        batch_size: args.batch_size,
        vae_batch_size: args.batch_size,
    };
    let what = format!(
        "{preset} (random weights) at {} px, steps {}, cfg {}",
        args.image_size, args.steps, args.cfg_scale
    );
    Ok((Engine::from_parts(settings, args.device, dit, vae)?, what))
}

pub(crate) fn run(args: BenchArgs) -> Result<()> {
    let (engine, what) = build_engine(&args)?;
    if let Some(n) = args.threads {
        tch::set_num_threads(n.max(1));
    }
    let side = engine.image_size() as u32;
    let batch = args.batch_size.max(1);
    let mut warm = Timings::default();
    // Warm-up batch (allocator, kernels), not counted.
    let (_, lat) = engine.sample_latents(&(0..batch as u64).collect::<Vec<_>>(), &mut warm);
    let _ = engine.decode(&lat, &mut warm);
    if args.device.is_cuda() {
        tch::Cuda::synchronize(0);
    }

    let mut t = Timings::default();
    let mut png = 0.0;
    let start = Instant::now();
    let mut done = 0usize;
    let mut next = batch as u64;
    while done < args.images {
        let n = batch.min(args.images - done);
        let idx: Vec<u64> = (next..next + n as u64).collect();
        let (labels, latents) = engine.sample_latents(&idx, &mut t);
        let images = engine.decode(&latents, &mut t);
        let samples = fidshard_worker::engine::to_samples(&idx, &labels, &images)?;
        let p = Instant::now();
        for s in &samples {
            encode_png(&s.pixels, side)?;
        }
        png += p.elapsed().as_secs_f64();
        done += n;
        next += n as u64;
    }
    let wall = start.elapsed().as_secs_f64();
    let per = |x: f64| x / done as f64;
    println!("bench: {what}");
    println!(
        "device {:?}, precision {}, batch {batch}, {done} images, {} threads",
        args.device,
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
    if args.device.is_cuda() {
        println!("  (peak GPU memory: see nvidia-smi; libtorch's allocator stats are not exposed by tch)");
    }
    Ok(())
}
