//! The numbers from the features files: statistics in float64 and the ADM evaluator's formulas
//! (fidshard-core's `metrics`), and `metrics.json`, what `status` and `run` report.
use super::Request;
use crate::job::evaluation::Metric;
use anyhow::{Context, Result};
use fidshard_core::features::{Features, POOL, SPATIAL};
use fidshard_core::metrics::{
    frechet_distance, inception_score, reference, softmax, ManifoldEstimator, Moments, Statistics,
    IS_SPLIT_SIZE,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What `metrics.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Report {
    pub fid: Option<f64>,
    pub sfid: Option<f64>,
    pub inception_score: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// Images of the samples npz.
    pub num_samples: u64,
    pub samples: PathBuf,
    /// The CRC32 of the samples' `arr_0` (from the zip directory): which npz these numbers are of.
    pub samples_crc32: u32,
    pub metrics: Vec<Metric>,
    pub reference: PathBuf,
    pub reference_sha256: String,
    pub inception: PathBuf,
    pub inception_sha256: String,
    pub fidshard_version: String,
}

impl Report {
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        fidshard_core::output::write_atomic(path, text.as_bytes())?;
        Ok(())
    }

    pub fn read(path: &Path) -> Option<Report> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Whether this report scores the npz `samples` as it is now (its `arr_0` CRC32).
    pub fn is_of(&self, samples: &Path) -> bool {
        crate::npz::images_crc(samples).is_ok_and(|crc| crc == self.samples_crc32)
    }

    /// `FID 2.27  sFID 4.60  IS 278.2  precision 0.828  recall 0.576` (the metrics computed).
    pub fn one_line(&self) -> String {
        let mut parts = Vec::new();
        for (name, v, digits) in [
            ("FID", self.fid, 3),
            ("sFID", self.sfid, 3),
            ("IS", self.inception_score, 2),
            ("precision", self.precision, 4),
            ("recall", self.recall, 4),
        ] {
            if let Some(v) = v {
                parts.push(format!("{name} {v:.digits$}"));
            }
        }
        parts.join("  ")
    }
}

/// Whether the reference's images must go through Inception: for precision and recall, or when
/// the npz carries no `mu` / `sigma` to compute FID from.
pub(super) fn needs_reference_features(reference: &Path, metrics: &[Metric]) -> Result<bool> {
    if metrics.contains(&Metric::Precision) || metrics.contains(&Metric::Recall) {
        return Ok(true);
    }
    let stats_needed = metrics.contains(&Metric::Fid) || metrics.contains(&Metric::Sfid);
    Ok(stats_needed && reference::read_statistics(reference)?.is_none())
}

pub(super) struct Inputs<'a> {
    pub req: &'a Request,
    pub samples: &'a [PathBuf],
    pub reference_files: Option<&'a [PathBuf]>,
    pub inception_sha256: &'a str,
    pub reference_sha256: &'a str,
    pub samples_crc32: u32,
}

/// What a set of features files adds up to.
struct Totals {
    pool: Moments,
    spatial: Moments,
    /// The softmax of every image, for the Inception Score.
    preds: Vec<Vec<f64>>,
    /// Every image's pool_3 features, for precision and recall.
    pool_rows: Vec<f32>,
    count: u64,
}

fn totals(files: &[PathBuf], keep_rows: bool, keep_preds: bool) -> Result<Totals> {
    let mut t = Totals {
        pool: Moments::new(POOL),
        spatial: Moments::new(SPATIAL),
        preds: Vec::new(),
        pool_rows: Vec::new(),
        count: 0,
    };
    for f in files {
        let feats = Features::read(f)?;
        let bad = |e| anyhow::anyhow!("{}: {e}", f.display());
        t.pool.add_rows(&feats.pool).map_err(bad)?;
        t.spatial.add_rows(&feats.spatial).map_err(bad)?;
        if keep_preds {
            t.preds.extend(
                feats
                    .logits
                    .chunks_exact(fidshard_core::features::CLASSES)
                    .map(softmax),
            );
        }
        if keep_rows {
            t.pool_rows.extend_from_slice(&feats.pool);
        }
        t.count += feats.count() as u64;
    }
    Ok(t)
}

pub(super) fn compute(inp: Inputs) -> Result<Report> {
    let m = &inp.req.metrics;
    let has = |x: Metric| m.contains(&x);
    let pr = has(Metric::Precision) || has(Metric::Recall);
    let samples = totals(inp.samples, pr, has(Metric::InceptionScore))?;
    let reference = match inp.reference_files {
        Some(files) => Some(totals(files, pr, false)?),
        None => None,
    };
    let ref_stats: Option<(Statistics, Statistics)> =
        match reference::read_statistics(&inp.req.reference)? {
            Some(stats) => Some(stats),
            None => match &reference {
                Some(r) => Some((r.pool.statistics()?, r.spatial.statistics()?)),
                None => None,
            },
        };
    let fid = |which: usize| -> Result<Option<f64>> {
        let Some(stats) = &ref_stats else {
            return Ok(None);
        };
        let (mine, theirs) = if which == 0 {
            (samples.pool.statistics()?, &stats.0)
        } else {
            (samples.spatial.statistics()?, &stats.1)
        };
        Ok(Some(frechet_distance(&mine, theirs)?))
    };
    let (precision, recall) = match (&reference, pr) {
        (Some(r), true) => {
            let pr = ManifoldEstimator::adm()
                .precision_recall(&r.pool_rows, &samples.pool_rows, POOL)
                .context("precision and recall")?;
            (Some(pr.precision), Some(pr.recall))
        }
        _ => (None, None),
    };
    Ok(Report {
        fid: if has(Metric::Fid) { fid(0)? } else { None },
        sfid: if has(Metric::Sfid) { fid(1)? } else { None },
        inception_score: if has(Metric::InceptionScore) {
            inception_score(&samples.preds, IS_SPLIT_SIZE)
        } else {
            None
        },
        precision: precision.filter(|_| has(Metric::Precision)),
        recall: recall.filter(|_| has(Metric::Recall)),
        num_samples: samples.count,
        samples: inp.req.samples.clone(),
        samples_crc32: inp.samples_crc32,
        metrics: m.clone(),
        reference: inp.req.reference.clone(),
        reference_sha256: inp.reference_sha256.to_string(),
        inception: inp.req.inception.clone(),
        inception_sha256: inp.inception_sha256.to_string(),
        fidshard_version: env!("CARGO_PKG_VERSION").to_string(),
    })
}
