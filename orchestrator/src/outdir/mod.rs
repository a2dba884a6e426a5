//! The out dir of a job and everything in it. [`OutDir`] owns every path: no other module spells
//! a file name of the out dir.
//!
//! ```text
//! OUT/.fidshard-out-dir  the marker: this folder is fidshard's (claim.rs)
//! OUT/coordinator.lock   flock'ed while a coordinator runs (lock.rs)
//! OUT/state.sled/        the durable shard records (state.rs)
//! OUT/fingerprint.json   a copy of the job fingerprint outside sled (state.rs, rebuild.rs)
//! OUT/status.json        the snapshot `fidshard status` reads while a job runs (snapshot.rs)
//! OUT/samples/           one PNG per sample, {index:06}.png
//! OUT/logs/              worker-N.log
//! OUT/partitions/K-of-N/ a partition's state.sled, coordinator.lock, status.json, logs/,
//!                        records.json (when complete); OUT/assemble.lock
//! OUT/samples.npz        the assembled result
//! OUT/samples.npz.json   what it was assembled from: fingerprint, PNG CRCs (provenance.rs)
//! OUT/job.resolved.yaml  the job as it ran (`fidshard config`)
//! OUT/verified.json      the last full verification of the npz and PNGs (verified.rs)
//! ```
pub(crate) mod claim;
pub(crate) mod finish;
pub(crate) mod lock;
pub(crate) mod partitions;
pub(crate) mod provenance;
pub(crate) mod rebuild;
pub(crate) mod resolved;
pub(crate) mod snapshot;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod verified;

use std::path::{Path, PathBuf};

pub(crate) const LOCK_FILE: &str = "coordinator.lock";
pub(crate) const STATE_DIR: &str = "state.sled";
pub(crate) const SNAPSHOT_FILE: &str = "status.json";
pub(crate) const SAMPLES_DIR: &str = "samples";
pub(crate) const LOGS_DIR: &str = "logs";
pub(crate) const NPZ_FILE: &str = "samples.npz";
/// What `samples.npz` was assembled from (provenance.rs).
pub(crate) const PROVENANCE_FILE: &str = "samples.npz.json";
pub(crate) const FINGERPRINT_FILE: &str = "fingerprint.json";
/// The job as it ran (`fidshard config`'s text), beside its results.
pub(crate) const RESOLVED_JOB_FILE: &str = "job.resolved.yaml";
/// One folder per partition of a job run on many nodes (`K-of-N`); job/partition.rs decides
/// where a partition's state lives, so that the job, below the out dir, can say it too.
pub(crate) use crate::job::partition::PARTITIONS_DIR;
/// A partition's records, exported when all its shards are done (for the final assembly).
pub(crate) const RECORDS_FILE: &str = "records.json";
/// flock'ed by the coordinator that assembles the npz of a partitioned job.
pub(crate) const ASSEMBLE_LOCK: &str = "assemble.lock";
/// The record of the last full verification of a complete job (verified.rs).
pub(crate) const VERIFIED_FILE: &str = "verified.json";
/// The Inception features of the samples, one file per shard (or range) (evaluate/).
pub(crate) const FEATURES_DIR: &str = "features";
/// The metrics of `samples.npz` (evaluate/).
pub(crate) const METRICS_FILE: &str = "metrics.json";
/// Says "this folder is fidshard's" (claim.rs).
pub(crate) const MARKER_FILE: &str = ".fidshard-out-dir";

/// The paths of one out dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutDir {
    root: PathBuf,
}

impl OutDir {
    pub fn new(root: impl AsRef<Path>) -> Self {
        OutDir {
            root: root.as_ref().to_path_buf(),
        }
    }
    /// Where the coordinator of `p` keeps its state: the out dir itself for the whole job (the
    /// layout of a one-node run), else `partitions/K-of-N/` with the same names inside.
    pub fn state_dir(&self, p: crate::job::partition::Partition) -> PathBuf {
        p.state_dir(&self.root)
    }
    pub fn partitions(&self) -> PathBuf {
        self.root.join(PARTITIONS_DIR)
    }
    /// The records a partition exported when it completed (inside its state dir).
    pub fn records(&self) -> PathBuf {
        self.root.join(RECORDS_FILE)
    }
    pub fn assemble_lock(&self) -> PathBuf {
        self.root.join(ASSEMBLE_LOCK)
    }
    pub fn marker(&self) -> PathBuf {
        self.root.join(MARKER_FILE)
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }
    pub fn state(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }
    pub fn fingerprint(&self) -> PathBuf {
        self.root.join(FINGERPRINT_FILE)
    }
    pub fn snapshot(&self) -> PathBuf {
        self.root.join(SNAPSHOT_FILE)
    }
    pub fn samples(&self) -> PathBuf {
        self.root.join(SAMPLES_DIR)
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join(LOGS_DIR)
    }
    pub fn resolved_job(&self) -> PathBuf {
        self.root.join(RESOLVED_JOB_FILE)
    }
    pub fn verified(&self) -> PathBuf {
        self.root.join(VERIFIED_FILE)
    }
    pub fn npz(&self) -> PathBuf {
        self.root.join(NPZ_FILE)
    }
    pub fn features(&self) -> PathBuf {
        self.root.join(FEATURES_DIR)
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join(METRICS_FILE)
    }
    pub fn provenance(&self) -> PathBuf {
        self.root.join(PROVENANCE_FILE)
    }
}
