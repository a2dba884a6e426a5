//! `fidshard sample`: samples a range of indices in this one process and writes
//! `DIR/{index}.png`. The quick look and the engine's end-to-end test path; `run` distributes
//! the same work over workers.
use crate::config::Job;
use anyhow::{bail, Context, Result};
use fidshard_worker::output::{encode_png, png_name, write_atomic};
use fidshard_worker::{Engine, Sample, Timings};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;
use tch::{Device, Tensor};

pub(crate) struct SampleArgs {
    pub config: PathBuf,
    pub out: PathBuf,
    pub range: Option<(u64, u64)>,
    pub device: Device,
    pub batch_size: Option<usize>,
    pub save_latents: bool,
}

/// Parses `A..B` (half-open, like Rust ranges).
pub(crate) fn parse_range(s: &str) -> std::result::Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}` is not a range A..B"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("`{a}` is not a sample index"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("`{b}` is not a sample index"))?;
    if a >= b {
        return Err(format!("range {a}..{b} is empty"));
    }
    Ok((a, b))
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub(crate) fn parse_device(s: &str) -> std::result::Result<Device, String> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("`{s}` is not cpu, cuda or cuda:N")),
    }
}

pub(crate) fn run(args: SampleArgs) -> Result<()> {
    let mut job = Job::load(&args.config)?;
    if let Some(b) = args.batch_size {
        if b == 0 {
            bail!(crate::exit::Fatal::input(anyhow::anyhow!(
                "--batch-size must be at least 1"
            )));
        }
        job.settings.batch_size = b;
    }
    let n = job.settings.num_samples;
    let (a, b) = args.range.unwrap_or((0, n));
    if b > n {
        bail!(crate::exit::Fatal::input(anyhow::anyhow!(
            "--range {a}..{b} goes past num_samples = {n} in {}",
            args.config.display()
        )));
    }
    crate::device::check(args.device)?;
    fidshard_worker::precision::configure(job.settings.precision);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let engine = Engine::load(job.settings.clone(), args.device)?;
    let side = engine.image_size() as u32;
    tracing::info!(range = %format!("{a}..{b}"), device = ?args.device, image_size = side, "sampling");

    // PNG encoding and writing run on their own thread so they never stall sampling.
    let (tx, rx) = mpsc::sync_channel::<Vec<Sample>>(2);
    let out = args.out.clone();
    let writer = std::thread::spawn(move || -> Result<()> {
        for batch in rx {
            for s in batch {
                let bytes = encode_png(&s.pixels, side)?;
                write_atomic(&out.join(png_name(s.index, n)), &bytes)?;
            }
        }
        Ok(())
    });

    let start = Instant::now();
    let mut timings = Timings::default();
    let indices: Vec<u64> = (a..b).collect();
    let batch = job.settings.batch_size;
    for chunk in indices.chunks(batch) {
        let (labels, latents) = engine.sample_latents(chunk, &mut timings);
        if args.save_latents {
            save_latents(&args.out, chunk, &labels, &latents, n)?;
        }
        let images = engine.decode(&latents, &mut timings);
        let samples = fidshard_worker::engine::to_samples(chunk, &labels, &images)?;
        if tx.send(samples).is_err() {
            break; // the writer failed; its error is reported below
        }
    }
    drop(tx);
    writer.join().expect("PNG writer thread panicked")?;
    let secs = start.elapsed().as_secs_f64();
    tracing::info!(
        images = b - a,
        seconds = format!("{secs:.2}"),
        dit = format!("{:.2}", timings.dit),
        vae = format!("{:.2}", timings.vae),
        noise = format!("{:.2}", timings.noise),
        "done"
    );
    Ok(())
}

/// Writes `DIR/latents/{index}.safetensors` with `latent` (C, H, W) and `label` (1,).
fn save_latents(
    dir: &Path,
    indices: &[u64],
    labels: &[i64],
    latents: &Tensor,
    n: u64,
) -> Result<()> {
    let ldir = dir.join("latents");
    std::fs::create_dir_all(&ldir)?;
    for (j, (&index, &label)) in indices.iter().zip(labels).enumerate() {
        let name = png_name(index, n).replace(".png", ".safetensors");
        let lat = latents.get(j as i64).to_device(Device::Cpu).contiguous();
        let lab = Tensor::from_slice(&[label]);
        Tensor::write_safetensors(&[("latent", &lat), ("label", &lab)], ldir.join(name))?;
    }
    Ok(())
}
