//! The `features` task: Inception features of ranges of an npz's images, one self-checking file
//! per range (fidshard-core's features.rs). A range whose file already holds the features of the
//! same images (their CRC32s) from the same weights is skipped: a task started again after a
//! crash or a preemption does only what is missing.
use crate::device::to_tch;
use anyhow::{Context, Result};
use fidshard_core::features::{file_name, FeatureHeader, Features};
use fidshard_core::npz_images::NpzImages;
use fidshard_core::task::{FeaturesTask, TaskAnswer};
use fidshard_worker::features::FeatureExtractor;
use std::path::Path;

pub(crate) fn run(task: FeaturesTask) -> Result<()> {
    let device = to_tch(task.device)?;
    let images = NpzImages::open(&task.npz)?;
    std::fs::create_dir_all(&task.out)
        .with_context(|| format!("cannot create {}", task.out.display()))?;
    let mut net: Option<FeatureExtractor> = None;
    for &(a, b) in &task.ranges {
        let path = task.out.join(file_name(a, b - a));
        let pixels = images.read_range(a, b)?;
        let crc32 = images.crc_per_image(&pixels);
        if done(&path, a, &crc32, &task.inception_sha256) {
            tracing::info!(range = %format!("{a}..{b}"), "features already there");
            continue;
        }
        if net.is_none() {
            net = Some(FeatureExtractor::load(&task.inception, device)?);
        }
        let net = net.as_ref().expect("loaded above");
        let started = std::time::Instant::now();
        let (h, w) = (images.height as i64, images.width as i64);
        let out = net.features_batched(&pixels, h, w, task.batch_size.max(1))?;
        let feats = Features {
            header: FeatureHeader {
                first: a,
                crc32,
                inception: task.inception_sha256.clone(),
            },
            pool: out.pool,
            spatial: out.spatial,
            logits: out.logits,
        };
        feats.write(&path)?;
        tracing::info!(
            range = %format!("{a}..{b}"),
            seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
            "features written"
        );
    }
    println!("{}", serde_json::to_string(&TaskAnswer::features())?);
    Ok(())
}

/// Whether `path` already holds the features of these images from these weights.
fn done(path: &Path, first: u64, crc32: &[u32], inception: &str) -> bool {
    match Features::read(path) {
        Ok(f) => {
            f.header.first == first && f.header.crc32 == crc32 && f.header.inception == inception
        }
        Err(_) => false,
    }
}
