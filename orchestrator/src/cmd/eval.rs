//! `fidshard eval SAMPLES.npz --reference REF.npz [--inception FILE] [--devices ...]`: the ADM
//! evaluator's FID, sFID, Inception Score, precision and recall of any npz of images (fidshard's
//! or another tool's), its Inception features spread over the devices' workers and kept in
//! `OUT/features/` so that an interrupted evaluation resumes; writes `OUT/metrics.json` and
//! prints the numbers.
use crate::evaluate;
use crate::job::devices::{resolve_devices, Devices};
use crate::job::evaluation::{default_inception, Metric, INCEPTION_URL};
use anyhow::Result;
use fidshard_core::input_error;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub(crate) struct EvalArgs {
    /// The samples: an npz whose `arr_0` is N x H x W x 3 uint8 (fidshard's samples.npz, or
    /// any sample script's).
    samples: PathBuf,
    /// The reference batch, e.g. guided-diffusion's VIRTUAL_imagenet256_labeled.npz.
    #[arg(long)]
    reference: PathBuf,
    /// torch-fidelity's Inception weights (default: FIDSHARD_CACHE/weights-inception-2015-12-05-6726825d.pth).
    #[arg(long)]
    inception: Option<PathBuf>,
    /// Where features/ and metrics.json go (default: SAMPLES's folder/eval-SAMPLES-STEM).
    #[arg(long)]
    out: Option<PathBuf>,
    /// `auto` (every GPU), `cpu:N` (N CPU workers) or GPU ids `0,1,2`.
    #[arg(long, default_value = "auto", value_parser = parse_devices)]
    devices: Devices,
    /// Which metrics (default: all five).
    #[arg(long, value_enum, value_delimiter = ',')]
    metrics: Vec<Metric>,
    /// Images per Inception forward pass (features never depend on it).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch_size: u32,
}

/// `--devices`: `auto`, `cpu:N` or comma-separated GPU ids.
fn parse_devices(s: &str) -> Result<Devices, String> {
    let s = s.trim();
    if s == "auto" {
        return Ok(Devices::Auto);
    }
    if let Some(n) = s.strip_prefix("cpu:") {
        return n
            .parse::<u32>()
            .ok()
            .filter(|&n| n >= 1)
            .map(Devices::Cpu)
            .ok_or_else(|| format!("`{s}`: expected cpu:N with N >= 1"));
    }
    s.split(',')
        .map(|id| id.trim().parse::<u32>())
        .collect::<Result<Vec<_>, _>>()
        .map(Devices::Gpus)
        .map_err(|_| format!("`{s}`: expected auto, cpu:N or GPU ids such as 0,1,2"))
}

pub(crate) fn run(args: EvalArgs) -> Result<()> {
    for (what, p) in [("SAMPLES", &args.samples), ("--reference", &args.reference)] {
        if !p.is_file() {
            return Err(input_error!(
                "{what} {}: no such file; give an npz of images (arr_0: N x H x W x 3 uint8)",
                p.display()
            ));
        }
        crate::npz::npz_image_count(p).map_err(|e| {
            input_error!(
                "{what} {}: {e}; give an npz whose arr_0 is N x H x W x 3 uint8",
                p.display()
            )
        })?;
    }
    let inception = match args.inception {
        Some(p) => p,
        None => default_inception(),
    };
    if !inception.is_file() {
        return Err(input_error!(
            "--inception {}: no such file; download torch-fidelity's weights ({INCEPTION_URL}) and pass --inception FILE, or put them there",
            inception.display()
        ));
    }
    let out = args.out.unwrap_or_else(|| default_out(&args.samples));
    let req = evaluate::Request {
        samples: args.samples,
        reference: args.reference,
        inception,
        out,
        devices: resolve_devices(&args.devices)?,
        metrics: if args.metrics.is_empty() {
            Metric::ALL.to_vec()
        } else {
            args.metrics
        },
        batch_size: args.batch_size as usize,
        shards: None,
    };
    let report = evaluate::evaluate(&req)?;
    println!("{}", report.one_line());
    eprintln!("fidshard: wrote {}", req.out.join("metrics.json").display());
    Ok(())
}

/// `DIR/eval-STEM` beside the samples.
fn default_out(samples: &Path) -> PathBuf {
    let stem = samples
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "samples".into());
    samples
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("eval-{stem}"))
}
