//! Whether a complete job is still complete: the npz and every PNG against the records, fast
//! when `OUT/verified.json` still describes the files, in full otherwise.
use crate::job::config::Job;
use crate::outdir::snapshot::unix_now;
use crate::outdir::state::{Recorded, ShardRecord};
use crate::outdir::verified::{self, Verified};
use crate::outdir::OutDir;
use anyhow::Result;
use fidshard_core::output::png_name;

/// What the check of a complete job found.
pub(crate) enum Checked {
    /// The npz and every PNG are what the records say.
    Complete,
    /// These indices' PNGs are missing or differ from their records (their shards are redone).
    BadPngs(Vec<u64>),
    /// The npz is damaged or not the records' (it is assembled again): why.
    BadNpz(String),
}

/// Checks a complete job against `records`: when `OUT/verified.json` still matches the files
/// (npz size and mtime, the zip directory's CRCs, the labels, every PNG's size and mtime), that
/// is enough (milliseconds: a rerun from cron); otherwise every PNG and every byte of the npz
/// is read and compared ([`crate::npz::check_against_pngs`]) and the result recorded.
pub(crate) fn check_complete(job: &Job, mut records: Vec<ShardRecord>) -> Result<Checked> {
    let recorded = Recorded::of(&mut records);
    // This job's npz at all: the record written beside it names the fingerprint and the PNG
    // CRCs it was assembled from (an npz copied from another job is not this job's result).
    if let Err(why) = crate::outdir::provenance::check(&job.out_dir, &records) {
        let _ = verified::remove(&job.out_dir);
        return Ok(Checked::BadNpz(why));
    }
    let out = OutDir::new(&job.out_dir);
    let npz = out.npz();
    let previous = verified::read(&job.out_dir);
    if let Some(v) = &previous {
        match quick_mismatch(v, job, &recorded) {
            None => {
                tracing::info!(
                    npz = %npz.display(),
                    verified = %crate::outdir::snapshot::format_utc(v.verified_unix as u64),
                    "already complete: the files match the record of their last full verification"
                );
                return Ok(Checked::Complete);
            }
            Some(why) => tracing::info!("{why}: verifying samples.npz and every PNG in full"),
        }
    }
    let side = job.image_size as u32;
    let found = crate::npz::check_against_pngs(
        &npz,
        &out.samples(),
        side,
        &recorded.labels,
        &recorded.crc32,
    );
    if !found.is_clean() {
        let _ = verified::remove(&job.out_dir);
    }
    if !found.bad_pngs.is_empty() {
        for (_, why) in found.bad_pngs.iter().take(8) {
            tracing::warn!("{why}");
        }
        return Ok(Checked::BadPngs(
            found.bad_pngs.iter().map(|(i, _)| *i).collect(),
        ));
    }
    if let Some(why) = found.npz {
        return Ok(Checked::BadNpz(format!("{}: {why}", npz.display())));
    }
    let (produced, wall) = match &previous {
        Some(v) => (v.produced_unix, v.wall_seconds),
        None => (
            verified::Stamp::of(&npz).map_or(unix_now(), |s| s.1 as f64 / 1e9),
            None,
        ),
    };
    record_verified(job, &recorded, produced, wall);
    tracing::info!(npz = %npz.display(), "already complete: samples.npz and every PNG verified in full");
    Ok(Checked::Complete)
}

/// Why the files no longer match `v` (cheap checks only), or `None`.
fn quick_mismatch(v: &Verified, job: &Job, recorded: &Recorded) -> Option<String> {
    let out = OutDir::new(&job.out_dir);
    let n = job.settings.num_samples;
    let digest = verified::records_digest(&recorded.crc32, &recorded.labels);
    if let Some(why) = v.mismatch(&out.npz(), &out.samples(), n, digest) {
        return Some(why);
    }
    match crate::npz::entry_crcs(&out.npz()) {
        Ok(c) if c == v.entry_crc32 => {}
        Ok(_) => return Some("the zip directory's CRCs differ from the record".into()),
        Err(e) => return Some(e.to_string()),
    }
    match crate::npz::verify_npz_labels(&out.npz(), n, job.image_size as u32) {
        Ok(got) if got == recorded.labels => None,
        Ok(_) => Some("the npz's labels differ from the records".into()),
        Err(e) => Some(e.to_string()),
    }
}

/// Writes `OUT/verified.json` for the npz and PNGs as they are now (a failure is only logged:
/// the next run verifies in full again).
pub(super) fn record_verified(job: &Job, recorded: &Recorded, produced: f64, wall: Option<f64>) {
    let out = OutDir::new(&job.out_dir);
    let n = job.settings.num_samples;
    let stamps = || -> std::io::Result<Verified> {
        let npz = out.npz();
        let entry_crc32 = crate::npz::entry_crcs(&npz).map_err(std::io::Error::other)?;
        let pngs = (0..n)
            .map(|i| verified::Stamp::of(&out.samples().join(png_name(i, n))))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Verified {
            num_samples: n,
            npz: verified::Stamp::of(&npz)?,
            entry_crc32,
            records_digest: verified::records_digest(&recorded.crc32, &recorded.labels),
            pngs,
            verified_unix: unix_now(),
            produced_unix: produced,
            wall_seconds: wall,
        })
    };
    if let Err(e) = stamps().and_then(|v| verified::write(&job.out_dir, &v)) {
        tracing::warn!(
            "cannot record the verification in {}: {e}",
            out.verified().display()
        );
    }
}
