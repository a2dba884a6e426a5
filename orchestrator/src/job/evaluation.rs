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

/// The resolved `evaluate:` section (paths absolute, remote files at their local copies).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Evaluation {
    /// The reference batch npz.
    pub reference: PathBuf,
    /// torch-fidelity's Inception weights: the job's, or the default (see [`default_inception`]).
    pub inception: PathBuf,
    pub metrics: Vec<Metric>,
    /// The files as the job file names them (local paths absolute, hub or URL references as
    /// written), for `config`; `inception` is `None` for the default.
    pub spec: EvaluationSpec,
    /// Loaded without weights: the remote files not downloaded yet, in words.
    pub not_local: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct EvaluationSpec {
    pub reference: PathBuf,
    pub reference_sha256: Option<String>,
    pub inception: Option<PathBuf>,
    pub inception_sha256: Option<String>,
}

/// torch-fidelity's conversion of the ADM evaluator's Inception graph (2015-12-05).
pub(crate) const INCEPTION_FILE: &str = "weights-inception-2015-12-05-6726825d.pth";
pub(crate) const INCEPTION_URL: &str = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth";
/// The SHA-256 of [`INCEPTION_URL`]'s file (95,628,359 bytes; the name's `6726825d` is its
/// first 8 hex digits, torch hub's convention).
pub(crate) const INCEPTION_SHA256: &str =
    "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2";

impl Evaluation {
    /// The Inception weights file.
    pub fn inception_file(&self) -> PathBuf {
        self.inception.clone()
    }
}

/// Where a copy of torch-fidelity's weights placed by hand is looked for first:
/// `FIDSHARD_CACHE/weights-inception-2015-12-05-6726825d.pth`.
pub(crate) fn hand_placed_inception() -> PathBuf {
    crate::job::hub::CacheRoot::fidshard()
        .path
        .join(INCEPTION_FILE)
}

/// The default Inception weights: a copy placed by hand ([`hand_placed_inception`]) if there
/// is one, else the download of [`INCEPTION_URL`] in fidshard's cache (`fidshard fetch`, and
/// `run` before it samples, put it there).
pub(crate) fn default_inception() -> PathBuf {
    let by_hand = hand_placed_inception();
    if by_hand.is_file() {
        return by_hand;
    }
    default_inception_url().cached_path(&crate::job::hub::CacheRoot::fidshard())
}

pub(crate) fn default_inception_url() -> crate::job::hub::UrlRef {
    crate::job::hub::UrlRef {
        url: INCEPTION_URL.to_string(),
    }
}
