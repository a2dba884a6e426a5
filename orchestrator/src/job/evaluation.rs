//! `evaluate:` of a job file: what to score the finished samples against (the ADM evaluator's
//! metrics, computed by evaluate/ once `samples.npz` is complete). Never part of the
//! fingerprint: it changes no pixel, so adding it to a finished job scores it without sampling.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A metric of the ADM evaluator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Metric {
    Fid,
    Sfid,
    #[serde(rename = "is")]
    #[value(name = "is")]
    InceptionScore,
    Precision,
    Recall,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Metric::Fid,
        Metric::Sfid,
        Metric::InceptionScore,
        Metric::Precision,
        Metric::Recall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Fid => "fid",
            Metric::Sfid => "sfid",
            Metric::InceptionScore => "is",
            Metric::Precision => "precision",
            Metric::Recall => "recall",
        }
    }
}

/// The resolved `evaluate:` section (paths absolute).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Evaluation {
    /// The reference batch npz.
    pub reference: PathBuf,
    /// torch-fidelity's Inception weights; `None`: the default file in fidshard's cache.
    pub inception: Option<PathBuf>,
    pub metrics: Vec<Metric>,
}

/// torch-fidelity's conversion of the ADM evaluator's Inception graph (2015-12-05).
pub(crate) const INCEPTION_FILE: &str = "weights-inception-2015-12-05-6726825d.pth";
pub(crate) const INCEPTION_URL: &str = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth";

impl Evaluation {
    /// The Inception weights file: the job's, or `FIDSHARD_CACHE/weights-inception-...pth`.
    pub fn inception_file(&self) -> PathBuf {
        self.inception.clone().unwrap_or_else(default_inception)
    }
}

pub(crate) fn default_inception() -> PathBuf {
    crate::job::hub::CacheRoot::fidshard()
        .path
        .join(INCEPTION_FILE)
}
