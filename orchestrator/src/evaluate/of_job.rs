//! `evaluate:` of a job run: what the workers are asked to compute while they sample (the
//! Inception weights and where each shard's features file goes), and the scoring of the
//! complete `samples.npz` from those files once the job is complete (by the coordinator that
//! assembled it: the whole job's, or the last partition's).
use super::{evaluate, Report, Request, ShardRange};
use crate::job::config::Job;
use crate::job::devices::WorkerDevice;
use crate::outdir::state::ShardRecord;
use crate::outdir::OutDir;
use anyhow::{Context, Result};
use fidshard_core::protocol::FeaturesSpec;

/// Images per Inception pass of the features computed after sampling (shards whose workers
/// did not compute theirs).
const BATCH: usize = 50;

/// With `evaluate:`: the weights (which must be there, checked before anything is sampled),
/// their SHA-256 and the folder the workers write each shard's features to.
pub(crate) fn features_spec(job: &Job) -> Result<Option<FeaturesSpec>> {
    let Some(e) = &job.evaluate else {
        return Ok(None);
    };
    let inception = e.inception_file();
    if !inception.is_file() {
        return Err(fidshard_core::input_error!(
            "{}: `evaluate.inception`: {} is missing; run `fidshard fetch {}` (it downloads torch-fidelity's weights), or name the file",
            job.source.display(),
            inception.display(),
            job.source.display()
        ));
    }
    let inception_sha256 = crate::sys::sha256::sha256_file(&inception)
        .with_context(|| format!("cannot read {}", inception.display()))?;
    Ok(Some(FeaturesSpec {
        inception,
        inception_sha256,
        dir: OutDir::new(&job.out_dir).features(),
    }))
}

/// Scores the job's complete `samples.npz` (assembled from `records`, every shard of the job)
/// into `OUT/metrics.json`, using the features files its workers wrote; `None` without
/// `evaluate:`.
pub(crate) fn score_job(
    job: &Job,
    records: &[ShardRecord],
    devices: &[WorkerDevice],
) -> Result<Option<Report>> {
    let Some(e) = &job.evaluate else {
        return Ok(None);
    };
    let out = OutDir::new(&job.out_dir);
    // The records of the job's shards as the plan has them now (a DB may keep others: a job
    // whose `num_samples` changed).
    let (n, size) = (job.settings.num_samples, job.run.shard_size);
    let mut shards: Vec<ShardRange> = records
        .iter()
        .filter(|r| r.shard == crate::job::plan::shard(n, size, r.shard.id))
        .map(|r| ShardRange {
            start: r.shard.start,
            end: r.shard.end,
            png_crc32: r.crc32.clone(),
            features_crc32: r.features_crc32,
        })
        .collect();
    shards.sort_by_key(|s| s.start);
    let req = Request {
        samples: out.npz(),
        reference: e.reference.clone(),
        inception: e.inception_file(),
        out: job.out_dir.clone(),
        devices: devices.to_vec(),
        metrics: e.metrics.clone(),
        batch_size: BATCH,
        shards: Some(shards),
    };
    evaluate(&req).map(Some)
}
