//! The coordinator <-> worker pipe protocol: one JSON object per line, `{"type": ...}`.
//!
//! Coordinator -> worker (the worker's stdin):
//! - `init` (first line): the resolved sampler settings and where to write.
//! - `assign`: sample one shard. A worker samples at most one shard at a time. PNGs of the
//!   shard that already exist under their final names (an earlier attempt wrote them before it
//!   was interrupted or died: they are complete by construction, temp + fsync + rename) are
//!   reused when they decode to an `image_size^2` RGB image: their CRC32 comes from their
//!   bytes, their label from `labels::label_of`; only the other indices are sampled, and a PNG
//!   that does not decode or has the wrong size is sampled and written again.
//! - `drain` (the run is being preempted, Slurm's SIGUSR1): finish the batch being sampled, let
//!   the writer write it (and whatever else is queued; a shard that completes that way is still
//!   reported `shard_done`), then exit 0 without reporting the partial shard. Its PNGs are
//!   reused when the shard is assigned again. A worker that does not exit within the
//!   coordinator's grace gets SIGTERM, then SIGKILL.
//! - `shutdown`: exit after the shard in hand. End of stdin means the same, immediately: a
//!   worker whose coordinator died exits at once and never writes into a resumed run.
//!
//! Worker -> coordinator (the worker's stdout; its logs go to stderr = `OUT/logs/worker-N.log`):
//! - `ready` once the model and VAE are loaded;
//! - `progress` after each sampled batch and each written image batch;
//! - `shard_done` after every PNG of the shard is written (fsynced and renamed) or reused, with
//!   a CRC32 per file and the labels, both in index order (and, when `init` asked for features,
//!   after the shard's features file is written too, with its CRC32). Only the coordinator
//!   decides that a shard is done: it records the shard in the state DB when it receives this
//!   line.
//! - `shard_failed` (typed: `oom` after the micro-batch could not shrink further, `io` for disk
//!   errors, `other`), after which the worker takes more work;
//! - `fatal` (e.g. `load`: the checkpoint or VAE did not load), after which it exits non-zero.
use crate::settings::SamplerSettings;
use crate::shard::Shard;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    Init {
        settings: Box<SamplerSettings>,
        samples_dir: PathBuf,
        /// The weights the job's fingerprint recorded: the worker checks, before and after
        /// loading, that the files it loads are these (a file replaced mid-run stops the run).
        #[serde(default)]
        weights: Option<crate::identity::WeightsIdentity>,
        /// `evaluate:` of the job: the Inception features of every shard, computed from the
        /// pixels while they are in memory.
        #[serde(default)]
        features: Option<FeaturesSpec>,
    },
    Assign {
        shard: Shard,
        attempt: u32,
    },
    /// Finish the batch in flight, write it, exit 0 (see the module docs).
    Drain,
    Shutdown,
}

/// What `init` asks of the features (crate::features): the worker loads `inception` next to
/// the model and, for each shard, writes the features of its images (sampled ones from the
/// pixels in memory, PNGs reused from an earlier attempt decoded) to
/// `dir/{features::file_name(start, len)}`, tied to the PNGs' CRC32s, before it reports the
/// shard done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeaturesSpec {
    /// torch-fidelity's Inception weights.
    pub inception: PathBuf,
    /// Their SHA-256 (hex), recorded in every features file.
    pub inception_sha256: String,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Out of device memory even at micro-batch 1.
    Oom,
    /// Writing files failed (disk full, permissions, I/O error).
    Io,
    /// The model or VAE could not be loaded.
    Load,
    /// Sampling produced NaN or infinite values (bad weights, overflowing guidance, fp16).
    NonFinite,
    /// The weights the worker loaded are not the ones the job's fingerprint recorded (a file
    /// replaced during the run). The run must stop: retrying would mix two models.
    WeightsChanged,
    /// A message from the coordinator did not parse: the two binaries disagree.
    Protocol,
    Other,
}

impl FailureKind {
    /// Plain words for logs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Oom => "out of memory",
            FailureKind::Io => "writing files failed",
            FailureKind::Load => "loading failed",
            FailureKind::NonFinite => "NaN or infinite values",
            FailureKind::WeightsChanged => "the weights changed",
            FailureKind::Protocol => "protocol error",
            FailureKind::Other => "failed",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    Ready {
        pid: u32,
        device: String,
        load_seconds: f64,
    },
    Progress {
        shard: u64,
        /// Samples of the shard sampled so far, PNGs reused from an earlier attempt included.
        sampled: u64,
        written: u64,
        total: u64,
        /// The micro-batch in use (it shrinks after an out-of-memory error).
        batch: usize,
    },
    ShardDone {
        shard: u64,
        crc32: Vec<u32>,
        labels: Vec<i64>,
        seconds: f64,
        /// With `init`'s `features`: the CRC32 of the shard's features file (its bytes).
        #[serde(default)]
        features_crc32: Option<u32>,
    },
    ShardFailed {
        shard: u64,
        kind: FailureKind,
        message: String,
    },
    Fatal {
        kind: FailureKind,
        message: String,
    },
}

/// Serializes a message as one line (with the newline).
pub fn line<T: Serialize>(msg: &T) -> String {
    let mut s = serde_json::to_string(msg).expect("protocol messages serialize");
    s.push('\n');
    s
}
