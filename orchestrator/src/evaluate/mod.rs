//! FID, sFID, Inception Score, precision and recall of an npz of samples against a reference
//! batch, computed as the ADM evaluator (guided-diffusion's `evaluations/evaluator.py`) computes
//! them, without TensorFlow: the Inception features come from workers (`fidshard-worker`'s
//! `features` task, one range of images per file, spread over the devices; features.rs), the
//! numbers from fidshard-core's `metrics` in float64 (report.rs). Everything is resumable: a
//! range whose features file exists is never computed again, and a reference batch's features
//! are cached by the SHA-256 of the reference and of the weights.
mod features;
mod of_job;
mod report;

pub(crate) use features::ShardRange;
pub(crate) use of_job::{features_spec, score_job};
pub(crate) use report::Report;

use crate::job::evaluation::Metric;

use crate::job::devices::WorkerDevice;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// What to evaluate and where.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The samples: an npz with `arr_0` (N x H x W x 3 uint8).
    pub samples: PathBuf,
    /// The reference batch (ADM's `VIRTUAL_imagenet256_labeled.npz` or any npz of images, with
    /// or without `mu`, `sigma`, `mu_s`, `sigma_s`).
    pub reference: PathBuf,
    /// torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`.
    pub inception: PathBuf,
    /// Holds `features/` and `metrics.json`.
    pub out: PathBuf,
    pub devices: Vec<WorkerDevice>,
    pub metrics: Vec<Metric>,
    /// Images per Inception forward pass.
    pub batch_size: usize,
    /// The shards of a job whose workers wrote the features of what they sampled (`run` with
    /// `evaluate:`): their files are used as they are when they match the shards' PNGs; `None`:
    /// ranges of the npz (`fidshard eval`).
    pub shards: Option<Vec<ShardRange>>,
}

/// Computes the metrics and writes `OUT/metrics.json`; returns them. A `metrics.json` that
/// already scores this npz (its CRC) against the same reference with the same weights and
/// metrics is returned as it is.
pub(crate) fn evaluate(req: &Request) -> Result<Report> {
    let sha = |p: &Path| {
        crate::sys::sha256::sha256_file(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let inception_sha = sha(&req.inception)?;
    let reference_sha = sha(&req.reference)?;
    let samples_crc32 = crate::npz::images_crc(&req.samples)?;
    let json = crate::outdir::OutDir::new(&req.out).metrics();
    if let Some(r) = Report::read(&json) {
        if r.samples_crc32 == samples_crc32
            && r.reference_sha256 == reference_sha
            && r.inception_sha256 == inception_sha
            && r.metrics == req.metrics
        {
            return Ok(r);
        }
    }
    let samples = features::Source {
        npz: req.samples.clone(),
        dir: crate::outdir::OutDir::new(&req.out).features(),
        shards: req.shards.clone(),
    };
    let samples_files = features::ensure(&samples, req, &inception_sha)?;
    let reference = features::Source {
        npz: req.reference.clone(),
        dir: reference_cache(&reference_sha, &inception_sha),
        shards: None,
    };
    let reference_files = if report::needs_reference_features(&req.reference, &req.metrics)? {
        Some(features::ensure(&reference, req, &inception_sha)?)
    } else {
        None
    };
    let report = report::compute(report::Inputs {
        req,
        samples: &samples_files,
        reference_files: reference_files.as_deref(),
        inception_sha256: &inception_sha,
        reference_sha256: &reference_sha,
        samples_crc32,
    })?;
    report.write(&json)?;
    Ok(report)
}

/// Where a reference batch's features are kept: the cache, by both files' SHA-256 (the same
/// reference through the same weights is never computed twice, whatever the job).
fn reference_cache(reference_sha: &str, inception_sha: &str) -> PathBuf {
    crate::job::hub::CacheRoot::fidshard()
        .path
        .join("reference-features")
        .join(format!("{}-{}", &reference_sha[..16], &inception_sha[..16]))
}
