//! `evaluate:` in a serve worker: the Inception network loaded beside the model, the features of
//! each sampled batch computed from its pixels while they are in memory (no PNG is read back),
//! and those of the PNGs reused from an earlier attempt at the shard: taken from the shard's
//! features file when it already holds them (same PNG, same weights), else decoded and computed.
//! The writer thread puts them into one file per shard (writer.rs).
use crate::writer::Reused;
use anyhow::{anyhow, Context, Result};
use fidshard_core::features::{file_name, Features};
use fidshard_core::output::{decode_png, png_name, read_regular};
use fidshard_core::protocol::FeaturesSpec;
use fidshard_core::shard::Shard;
use fidshard_worker::features::{FeatureExtractor, FeatureRows};
use fidshard_worker::Sample;
use std::path::Path;
use tch::Device;

/// The Inception network of a serve worker and where its features go.
pub(super) struct ShardFeatures {
    net: FeatureExtractor,
    pub spec: FeaturesSpec,
    /// The job's image side.
    side: u32,
}

impl ShardFeatures {
    /// Loads the weights `spec` names onto `device`; the error names the file.
    pub fn load(spec: FeaturesSpec, device: Device, side: u32) -> Result<ShardFeatures> {
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("cannot create {}", spec.dir.display()))?;
        let net = FeatureExtractor::load(&spec.inception, device)
            .map_err(|e| anyhow!("`evaluate.inception`: {}: {e}", spec.inception.display()))?;
        Ok(ShardFeatures { net, spec, side })
    }

    /// The features of a sampled batch, rows in the order of `samples`.
    pub fn of_samples(&self, samples: &[Sample]) -> Result<FeatureRows> {
        let pixels: Vec<u8> = samples
            .iter()
            .flat_map(|s| s.pixels.iter().copied())
            .collect();
        self.of_pixels(&pixels, samples.len())
    }

    /// The features of the PNGs reused from an earlier attempt at `shard`, one per entry of
    /// `reused`: from the shard's features file where it holds that very PNG, else decoded and
    /// computed `batch` at a time.
    pub fn of_reused(
        &self,
        shard: &Shard,
        reused: &[Reused],
        samples_dir: &Path,
        num_samples: u64,
        batch: usize,
    ) -> Result<Vec<FeatureRows>> {
        let earlier = self.earlier_file(shard);
        let mut out: Vec<Option<FeatureRows>> = reused
            .iter()
            .map(|r| earlier.as_ref().and_then(|f| row_of(f, r)))
            .collect();
        let todo: Vec<usize> = (0..reused.len()).filter(|&k| out[k].is_none()).collect();
        for chunk in todo.chunks(batch.max(1)) {
            let mut pixels = Vec::new();
            let mut bytes = Vec::new();
            for &k in chunk {
                let path = samples_dir.join(png_name(reused[k].index, num_samples));
                read_regular(&path, &mut bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
                let px = decode_png(&bytes, self.side)
                    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
                pixels.extend(px);
            }
            let rows = self.of_pixels(&pixels, chunk.len())?;
            for (&k, row) in chunk.iter().zip(rows.into_images(chunk.len())) {
                out[k] = Some(row);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn of_pixels(&self, pixels: &[u8], n: usize) -> Result<FeatureRows> {
        let s = self.side as i64;
        self.net
            .features_batched(pixels, s, s, n.max(1))
            .map_err(|e| anyhow!("Inception features: {e}"))
    }

    /// The shard's features file from an earlier attempt, if it is whole and from these weights.
    fn earlier_file(&self, shard: &Shard) -> Option<Features> {
        let path = self.spec.dir.join(file_name(shard.start, shard.len()));
        let f = Features::read(&path).ok()?;
        let fits = f.header.first == shard.start
            && f.count() as u64 == shard.len()
            && f.header.inception == self.spec.inception_sha256;
        fits.then_some(f)
    }
}

/// The rows of `f` for the reused PNG `r`, when `f` computed them from that very file.
fn row_of(f: &Features, r: &Reused) -> Option<FeatureRows> {
    use fidshard_core::features::{CLASSES, POOL, SPATIAL};
    let k = usize::try_from(r.index.checked_sub(f.header.first)?).ok()?;
    (f.header.crc32.get(k) == Some(&r.crc32)).then(|| FeatureRows {
        pool: f.pool[k * POOL..(k + 1) * POOL].to_vec(),
        spatial: f.spatial[k * SPATIAL..(k + 1) * SPATIAL].to_vec(),
        logits: f.logits[k * CLASSES..(k + 1) * CLASSES].to_vec(),
    })
}
