//! `OUT/samples.npz.json`: what `samples.npz` was assembled from. The npz alone cannot say
//! which job made it (two jobs of the same size and labels have npz files of the same shape),
//! so the assembly records, beside it, the job fingerprint, a digest of the recorded PNG CRCs
//! and the zip directory's CRC-32 of each member. A job (whole or partitioned) is complete only
//! when its npz matches that record and the record matches the job's current fingerprint and
//! records: an npz copied from another job, or one assembled before the job changed size, is
//! assembled again instead of being reported as this job's result.
use super::state::ShardRecord;
use super::OutDir;
use crate::job::fingerprint::Fingerprint;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Provenance {
    /// The job's fingerprint (`OUT/fingerprint.json`) when the npz was assembled.
    fingerprint: Fingerprint,
    num_samples: u64,
    /// CRC-32 over the recorded PNG CRCs (little-endian u32, index order).
    pngs_crc: u32,
    npz_bytes: u64,
    /// The zip directory's CRC-32 of each member (`arr_0.npy`, `arr_1.npy`).
    members: BTreeMap<String, u32>,
}

/// CRC-32 over the PNG CRCs of `records` in index order.
fn pngs_digest(records: &[ShardRecord]) -> (u64, u32) {
    let mut sorted: Vec<&ShardRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.shard.start);
    let mut h = crc32fast::Hasher::new();
    let mut n = 0u64;
    for r in sorted {
        for c in &r.crc32 {
            h.update(&c.to_le_bytes());
            n += 1;
        }
    }
    (n, h.finalize())
}

/// The npz's size and the CRC-32 its zip directory gives each member (reads the directory
/// only, milliseconds for any size).
fn npz_identity(npz: &Path) -> Result<(u64, BTreeMap<String, u32>)> {
    let file = std::fs::File::open(npz).with_context(|| format!("opening {}", npz.display()))?;
    let bytes = file.metadata()?.len();
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{}: not a readable zip", npz.display()))?;
    let mut members = BTreeMap::new();
    for i in 0..zip.len() {
        let f = zip.by_index_raw(i)?;
        members.insert(f.name().to_string(), f.crc32());
    }
    Ok((bytes, members))
}

/// Records what the npz just assembled in `out` was made from (temp + rename).
pub(crate) fn record(out: &Path, records: &[ShardRecord]) -> Result<()> {
    let dir = OutDir::new(out);
    let (num_samples, pngs_crc) = pngs_digest(records);
    let (npz_bytes, members) = npz_identity(&dir.npz())?;
    let p = Provenance {
        fingerprint: super::state::saved_fingerprint(out).unwrap_or_default(),
        num_samples,
        pngs_crc,
        npz_bytes,
        members,
    };
    let text = serde_json::to_vec_pretty(&p)?;
    fidshard_core::output::write_atomic(&dir.provenance(), &text)
        .with_context(|| format!("writing {}", dir.provenance().display()))
}

/// Whether `OUT/samples.npz` is the one assembled from `records` for the job whose fingerprint
/// `OUT/fingerprint.json` holds; `Err` says why not. Reads the zip directory only.
pub(crate) fn check(out: &Path, records: &[ShardRecord]) -> Result<(), String> {
    let dir = OutDir::new(out);
    let bytes = std::fs::read(dir.provenance())
        .map_err(|_| "no record of what samples.npz was assembled from".to_string())?;
    let p: Provenance = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: unreadable ({e})", dir.provenance().display()))?;
    let fp = super::state::saved_fingerprint(out).unwrap_or_default();
    let changed = p.fingerprint.diff(&fp);
    if !changed.is_empty() {
        return Err(format!(
            "samples.npz was assembled for another job ({})",
            crate::job::fingerprint::describe(&changed)
        ));
    }
    if pngs_digest(records) != (p.num_samples, p.pngs_crc) {
        return Err("samples.npz was assembled from other PNGs than the recorded ones".into());
    }
    let (npz_bytes, members) = npz_identity(&dir.npz()).map_err(|e| format!("{e:#}"))?;
    if npz_bytes != p.npz_bytes || members != p.members {
        return Err("samples.npz is not the file this job assembled (replaced or copied)".into());
    }
    Ok(())
}
