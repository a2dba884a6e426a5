//! `OUT/verified.json`: the record of a complete job's last full verification, so that a rerun
//! (cron every 10 minutes) need not read a 10-40 GB npz again. It holds what the full check
//! saw: the npz's size and mtime and the CRC-32 of its two entries (as the zip directory
//! records them), every PNG's size and mtime, and a digest of the shard records it checked
//! against. A rerun compares these with the files (stat calls and the zip directory:
//! milliseconds); any difference means a full check again. It also keeps what `status` shows
//! of the run that produced the npz (its wall time, when the npz was written), which a rerun
//! that changes nothing never overwrites.
//!
//! Written with a temporary file and a rename, like every file of the out dir; a missing or
//! unreadable record only means "verify fully".
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Size and modification time (nanoseconds since the epoch) of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp(pub u64, pub i64);

impl Stamp {
    pub fn of(path: &Path) -> std::io::Result<Stamp> {
        let m = std::fs::metadata(path)?;
        Ok(Stamp(
            m.len(),
            m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Verified {
    pub num_samples: u64,
    pub npz: Stamp,
    /// CRC-32 of the images and the labels entries (the zip's central directory).
    pub entry_crc32: (u32, u32),
    /// [`records_digest`] of the shard records the files were checked against.
    pub records_digest: u32,
    /// Every PNG's stamp, in index order.
    pub pngs: Vec<Stamp>,
    /// When the full check ran.
    pub verified_unix: f64,
    /// When the npz was written (the job's last change).
    pub produced_unix: f64,
    /// Wall time of the run that wrote the npz; `None` when it was not a `run` (`assemble`).
    pub wall_seconds: Option<f64>,
}

/// CRC-32 over the recorded CRCs and labels in index order: a record that changed (a shard
/// redone, a repair) no longer matches.
pub(crate) fn records_digest(crc: &[u32], labels: &[i64]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for c in crc {
        h.update(&c.to_le_bytes());
    }
    for l in labels {
        h.update(&l.to_le_bytes());
    }
    h.finalize()
}

/// The record in `out`, if there is a readable one.
pub(crate) fn read(out: &Path) -> Option<Verified> {
    let bytes = std::fs::read(super::OutDir::new(out).verified()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Replaces the record in `out` (temporary file + rename).
pub(crate) fn write(out: &Path, v: &Verified) -> std::io::Result<()> {
    let text = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    fidshard_core::output::write_atomic(&super::OutDir::new(out).verified(), &text)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Removes the record (the npz is being replaced or the job restarts); a missing one is fine.
pub(crate) fn remove(out: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(super::OutDir::new(out).verified()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl Verified {
    /// Why the files no longer match this record (`None`: they do). `samples_dir` holds the
    /// PNGs of a job of `n` samples; `digest` is [`records_digest`] of the records now.
    pub fn mismatch(&self, npz: &Path, samples_dir: &Path, n: u64, digest: u32) -> Option<String> {
        if self.num_samples != n || self.pngs.len() as u64 != n {
            return Some(format!("the record is of {} samples", self.num_samples));
        }
        if self.records_digest != digest {
            return Some("the shard records changed since".into());
        }
        match Stamp::of(npz) {
            Ok(s) if s == self.npz => {}
            _ => return Some(format!("{} changed (size or mtime)", npz.display())),
        }
        for (i, want) in self.pngs.iter().enumerate() {
            let p = samples_dir.join(fidshard_core::output::png_name(i as u64, n));
            if Stamp::of(&p).ok().as_ref() != Some(want) {
                return Some(format!("{} changed (size or mtime)", p.display()));
            }
        }
        None
    }
}
