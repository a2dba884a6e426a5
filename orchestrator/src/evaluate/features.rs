//! The features of an npz's images, range by range: which files are missing, and worker tasks
//! (one per device, in parallel) that write them. A task that dies leaves the ranges it had not
//! finished; they are handed out once more before the evaluation gives up.
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

/// An npz and the folder of its features files.
pub(super) struct Source {
    pub npz: PathBuf,
    pub dir: PathBuf,
}

/// The features files of all of `src`'s images, in index order, computing what is missing.
pub(super) fn ensure(src: &Source, req: &Request, inception_sha: &str) -> Result<Vec<PathBuf>> {
    let images = NpzImages::open(&src.npz)?;
    let count = images.count;
    let size = range_size(count, req.devices.len());
    let ranges: Vec<(u64, u64)> = (0..count.div_ceil(size))
        .map(|k| (k * size, ((k + 1) * size).min(count)))
        .collect();
    std::fs::create_dir_all(&src.dir)
        .with_context(|| format!("cannot create {}", src.dir.display()))?;
    for attempt in 1..=2 {
        let missing: Vec<(u64, u64)> = ranges
            .iter()
            .copied()
            .filter(|&(a, b)| {
                !usable(
                    &images,
                    &src.dir.join(file_name(a, b - a)),
                    a,
                    b,
                    inception_sha,
                )
            })
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
    let files: Vec<PathBuf> = ranges
        .iter()
        .map(|&(a, b)| src.dir.join(file_name(a, b - a)))
        .collect();
    if let Some(((a, b), _)) = ranges
        .iter()
        .zip(&files)
        .find(|((a, b), f)| !usable(&images, f, *a, *b, inception_sha))
    {
        bail!(
            "the Inception features of images {a}..{b} of {} could not be computed (twice); see the log above",
            src.npz.display()
        );
    }
    Ok(files)
}

/// Whether `path` holds the features of images `a..b` of the npz as it is now (their CRC32s)
/// from these weights: features of an earlier npz at the same path are never used.
fn usable(images: &NpzImages, path: &Path, a: u64, b: u64, inception_sha: &str) -> bool {
    let Ok(f) = Features::read(path) else {
        return false;
    };
    if f.header.first != a || f.count() as u64 != b - a || f.header.inception != inception_sha {
        return false;
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
