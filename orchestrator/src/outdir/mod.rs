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
//! OUT/samples.npz        the assembled result
//! OUT/job.resolved.yaml  the job as it ran (`fidshard config`)
//! ```
pub(crate) mod claim;
pub(crate) mod lock;
pub(crate) mod rebuild;
pub(crate) mod snapshot;
pub(crate) mod state;

use std::path::{Path, PathBuf};

pub(crate) const LOCK_FILE: &str = "coordinator.lock";
pub(crate) const STATE_DIR: &str = "state.sled";
pub(crate) const SNAPSHOT_FILE: &str = "status.json";
pub(crate) const SAMPLES_DIR: &str = "samples";
pub(crate) const LOGS_DIR: &str = "logs";
pub(crate) const NPZ_FILE: &str = "samples.npz";
pub(crate) const FINGERPRINT_FILE: &str = "fingerprint.json";
/// The job as it ran (`fidshard config`'s text), beside its results.
pub(crate) const RESOLVED_JOB_FILE: &str = "job.resolved.yaml";
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
    pub fn npz(&self) -> PathBuf {
        self.root.join(NPZ_FILE)
    }
}
