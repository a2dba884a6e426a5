//! The disk a job needs and the disk there is.
use crate::job::config::Job;
use anyhow::{Context, Result};
use std::path::Path;

/// Bytes a job needs on disk for `samples` more images.
pub(crate) struct DiskNeed {
    pub pngs: u64,
    pub npz: u64,
}

impl DiskNeed {
    pub fn total(&self) -> u64 {
        self.pngs + self.npz
    }
}

/// An upper bound: a PNG is at most about its raw size (diffusion samples compress little),
/// the npz is exactly the raw pixels plus headers.
pub(crate) fn disk_needed(job: &Job, samples: u64) -> DiskNeed {
    let raw = (job.image_size * job.image_size * 3) as u64;
    DiskNeed {
        pngs: samples.saturating_mul(raw + 1024),
        npz: job
            .settings
            .num_samples
            .saturating_mul(raw + 8)
            .saturating_add(4096),
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir` (or its nearest
/// existing ancestor).
pub(crate) fn free_bytes(dir: &Path) -> Result<u64> {
    let mut p = dir;
    while !p.exists() {
        p = p.parent().unwrap_or(Path::new("/"));
    }
    let st = nix::sys::statvfs::statvfs(p).with_context(|| format!("statvfs {}", p.display()))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}
