//! The features of an npz's images, range by range: which files are missing, and worker tasks
//! (one per device, in parallel) that write them. A task that dies leaves the ranges it had not
//! finished; they are handed out once more before the evaluation gives up.
//!
//! The samples of a job run with `evaluate:` come with the files its workers wrote while they
//! sampled, one per shard, tied to the shard's PNGs by their CRC32s: such a file is used when
//! its CRC32s are the ones the shard's record holds (the npz was assembled from, and checked
//! against, those very PNGs), without reading the npz. Only shards without one (the job got its
//! `evaluate:` after sampling, or a file was damaged) are computed here, from the npz.
use super::Request;
use crate::job::devices::WorkerDevice;
use anyhow::{bail, Context, Result};
use fidshard_core::features::{file_name, Features};
use fidshard_core::npz_images::NpzImages;
use fidshard_core::task::{FeaturesTask, Task, TaskAnswer};
use fidshard_core::DeviceSpec;
use std::path::{Path, PathBuf};

/// Images per features file: about eight files per device, between 16 and 1000 images each
/// (enough files to spread over the devices and to lose little to a crash, few enough that
/// 50,000 images make 50 files). Features never depend on it.
fn range_size(count: u64, devices: usize) -> u64 {
    count.div_ceil(8 * devices.max(1) as u64).clamp(16, 1000)
}

/// A shard of a job and the CRC32s of its PNGs, as its record holds them.
#[derive(Debug, Clone)]
pub(crate) struct ShardRange {
    pub start: u64,
    pub end: u64,
    pub png_crc32: Vec<u32>,
    /// The CRC32 of the features file the worker reported, if it did.
    pub features_crc32: Option<u32>,
}

/// An npz and the folder of its features files.
pub(super) struct Source {
    pub npz: PathBuf,
    pub dir: PathBuf,
    /// The job's shards (their files may come from the workers), or `None`: ranges of the npz.
    pub shards: Option<Vec<ShardRange>>,
}

impl Source {
    /// The ranges of the features files, in index order, with the PNG CRC32s a worker's file
    /// of that range must hold.
    fn ranges(&self, count: u64, devices: usize) -> Vec<(u64, u64, Option<&ShardRange>)> {
        match &self.shards {
            Some(shards) => shards.iter().map(|s| (s.start, s.end, Some(s))).collect(),
            None => {
                let size = range_size(count, devices);
                (0..count.div_ceil(size))
                    .map(|k| (k * size, ((k + 1) * size).min(count), None))
                    .collect()
            }
        }
    }
}

/// The features files of all of `src`'s images, in index order, computing what is missing.
pub(super) fn ensure(src: &Source, req: &Request, inception_sha: &str) -> Result<Vec<PathBuf>> {
    let images = NpzImages::open(&src.npz)?;
    let ranges = src.ranges(images.count, req.devices.len());
    let tiled = ranges.windows(2).all(|w| w[0].1 == w[1].0)
        && ranges.first().map_or(0, |r| r.0) == 0
        && ranges.last().map_or(0, |r| r.1) == images.count;
    if !tiled {
        bail!(
            "{}: holds {} images, which the job's recorded shards do not cover one by one; run `fidshard run` again to check and assemble it",
            src.npz.display(),
            images.count
        );
    }
    std::fs::create_dir_all(&src.dir)
        .with_context(|| format!("cannot create {}", src.dir.display()))?;
    let check = |&(a, b, shard): &(u64, u64, Option<&ShardRange>)| {
        let path = src.dir.join(file_name(a, b - a));
        usable(&images, &path, (a, b), shard, inception_sha)
    };
    for attempt in 1..=2 {
        let missing: Vec<(u64, u64)> = ranges
            .iter()
            .filter(|r| !check(r))
            .map(|&(a, b, _)| (a, b))
            .collect();
        if missing.is_empty() {
            break;
        }
        tracing::info!(
            npz = %src.npz.display(),
            ranges = missing.len(),
            images = missing.iter().map(|(a, b)| b - a).sum::<u64>(),
            attempt,
            "computing Inception features"
        );
        run_tasks(src, req, inception_sha, &missing);
    }
    if let Some(&(a, b, _)) = ranges.iter().find(|r| !check(r)) {
        bail!(
            "the Inception features of images {a}..{b} of {} could not be computed (twice); see the log above",
            src.npz.display()
        );
    }
    Ok(ranges
        .iter()
        .map(|&(a, b, _)| src.dir.join(file_name(a, b - a)))
        .collect())
}

/// Whether `path` holds the features of images `a..b` from these weights: written by a worker
/// from the shard's PNGs (their CRC32s, and the file's own when the record has it), or
/// computed from the npz as it is now (the CRC32s of its pixels). Features of an earlier npz or
/// of other PNGs at the same path are never used.
fn usable(
    images: &NpzImages,
    path: &Path,
    (a, b): (u64, u64),
    shard: Option<&ShardRange>,
    inception_sha: &str,
) -> bool {
    let Ok((f, file_crc)) = Features::read_with_crc(path) else {
        return false;
    };
    if f.header.first != a || f.count() as u64 != b - a || f.header.inception != inception_sha {
        return false;
    }
    let from_worker = shard.is_some_and(|s| {
        s.png_crc32 == f.header.crc32 && s.features_crc32.is_none_or(|c| c == file_crc)
    });
    if from_worker {
        return true;
    }
    images
        .read_range(a, b)
        .is_ok_and(|px| images.crc_per_image(&px) == f.header.crc32)
}

/// One task per device over `missing`, dealt round-robin, all at once; waits for all.
fn run_tasks(src: &Source, req: &Request, inception_sha: &str, missing: &[(u64, u64)]) {
    let n = req.devices.len().max(1);
    let mut gpu = 0;
    let tasks: Vec<Task> = (0..n)
        .map(|k| {
            let device = match req.devices.get(k) {
                Some(WorkerDevice::Gpu(_)) => {
                    gpu += 1;
                    DeviceSpec::Cuda(gpu - 1)
                }
                _ => DeviceSpec::Cpu,
            };
            Task::Features(FeaturesTask {
                npz: src.npz.clone(),
                ranges: missing.iter().skip(k).step_by(n).copied().collect(),
                inception: req.inception.clone(),
                inception_sha256: inception_sha.to_string(),
                out: src.dir.clone(),
                device,
                batch_size: req.batch_size,
            })
        })
        .filter(|t| matches!(t, Task::Features(f) if !f.ranges.is_empty()))
        .collect();
    std::thread::scope(|s| {
        for task in &tasks {
            s.spawn(
                move || match crate::worker::run_task(task, crate::worker::Output::Capture) {
                    Ok(out) if TaskAnswer::answered(&out, "features") => {}
                    Ok(_) => tracing::warn!("a features task ended without its answer"),
                    Err(e) => tracing::warn!("a features task failed: {e:#}"),
                },
            );
        }
    });
}
