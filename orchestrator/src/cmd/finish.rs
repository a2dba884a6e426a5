//! The end of a run: assembling `samples.npz` from recorded shards (interruptible), and for a
//! partition of a many-node job, exporting its records and assembling the npz when it is the
//! last partition to finish (under an exclusive lock, so two finishers never both write).
use crate::cmd::run::final_snapshot;
use crate::job::config::Job;
use crate::npz::{assemble, AssembleError, AssembleInput};
use crate::outdir::partitions::{self, AssembleLock};
use crate::outdir::snapshot::unix_now;
use crate::outdir::snapshot::JobState;
use crate::outdir::state::{ShardRecord, StateDb};
use crate::outdir::verified::{self, Verified};
use crate::sys::time::round1;
use anyhow::{anyhow, Context, Result};
use fidshard_core::output::png_name;
use fidshard_core::Exit;
use std::time::Duration;

/// Assembles `samples.npz` from the recorded shards' PNGs, checking each file's CRC.
pub(crate) fn assemble_npz(job: &Job, mut records: Vec<ShardRecord>) -> Result<(), AssembleError> {
    let n = job.settings.num_samples;
    records.sort_by_key(|r| r.shard.start);
    let mut labels = Vec::with_capacity(n as usize);
    let mut crc = Vec::with_capacity(n as usize);
    for r in &records {
        labels.extend_from_slice(&r.labels);
        crc.extend_from_slice(&r.crc32);
    }
    if labels.len() as u64 != n {
        return Err(AssembleError::Input(format!(
            "the state records {} samples, the job has {n}",
            labels.len()
        )));
    }
    let input = AssembleInput {
        samples_dir: &crate::outdir::OutDir::new(&job.out_dir).samples(),
        num_samples: n,
        image_size: job.image_size as u32,
        labels: &labels,
        expected_crc: Some(&crc),
    };
    // The old record describes the npz being replaced.
    let _ = verified::remove(&job.out_dir);
    let report = assemble(&input, &crate::outdir::OutDir::new(&job.out_dir).npz())?;
    // What it was made from, beside it: a later run or `status` tells it from another job's.
    if let Err(e) = crate::outdir::provenance::record(&job.out_dir, &records) {
        tracing::warn!("{e:#}; the next run verifies samples.npz in full and assembles it again");
    }
    tracing::info!(
        bytes = report.bytes,
        seconds = round1(report.seconds),
        "samples.npz written"
    );
    // The assembly read every PNG against its recorded CRC into this npz: that is the full
    // verification, recorded for the reruns.
    let wall = crate::cmd::run::STARTED
        .get()
        .map(|t| t.elapsed().as_secs_f64());
    record_verified(job, &crc, &labels, unix_now(), wall);
    Ok(())
}

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
    records.sort_by_key(|r| r.shard.start);
    let crc: Vec<u32> = records
        .iter()
        .flat_map(|r| r.crc32.iter().copied())
        .collect();
    let labels: Vec<i64> = records
        .iter()
        .flat_map(|r| r.labels.iter().copied())
        .collect();
    // This job's npz at all: the record written beside it names the fingerprint and the PNG
    // CRCs it was assembled from (an npz copied from another job is not this job's result).
    if let Err(why) = crate::outdir::provenance::check(&job.out_dir, &records) {
        let _ = verified::remove(&job.out_dir);
        return Ok(Checked::BadNpz(why));
    }
    let out = crate::outdir::OutDir::new(&job.out_dir);
    let (npz, samples) = (out.npz(), out.samples());
    let side = job.image_size as u32;
    let previous = verified::read(&job.out_dir);
    if let Some(v) = &previous {
        match quick_mismatch(v, job, &crc, &labels) {
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
    let found = crate::npz::check_against_pngs(&npz, &samples, side, &labels, &crc);
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
    record_verified(job, &crc, &labels, produced, wall);
    tracing::info!(npz = %npz.display(), "already complete: samples.npz and every PNG verified in full");
    Ok(Checked::Complete)
}

/// Why the files no longer match `v` (cheap checks only), or `None`.
fn quick_mismatch(v: &Verified, job: &Job, crc: &[u32], labels: &[i64]) -> Option<String> {
    let out = crate::outdir::OutDir::new(&job.out_dir);
    let n = job.settings.num_samples;
    let digest = verified::records_digest(crc, labels);
    if let Some(why) = v.mismatch(&out.npz(), &out.samples(), n, digest) {
        return Some(why);
    }
    match crate::npz::entry_crcs(&out.npz()) {
        Ok(c) if c == v.entry_crc32 => {}
        Ok(_) => return Some("the zip directory's CRCs differ from the record".into()),
        Err(e) => return Some(e.to_string()),
    }
    match crate::npz::verify_npz_labels(&out.npz(), n, job.image_size as u32) {
        Ok(got) if got == labels => None,
        Ok(_) => Some("the npz's labels differ from the records".into()),
        Err(e) => Some(e.to_string()),
    }
}

/// Writes `OUT/verified.json` for the npz and PNGs as they are now (a failure is only logged:
/// the next run verifies in full again).
fn record_verified(job: &Job, crc: &[u32], labels: &[i64], produced: f64, wall: Option<f64>) {
    let out = crate::outdir::OutDir::new(&job.out_dir);
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
            records_digest: verified::records_digest(crc, labels),
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

/// Assembles on a helper thread while this one watches for stop signals: a preempted assembly
/// removes its temporary npz and exits 75 at once, instead of being killed half way with a
/// signal status.
pub(crate) fn assemble_interruptible(
    job: &Job,
    records: Vec<ShardRecord>,
) -> Result<Result<(), AssembleError>> {
    std::thread::scope(|s| {
        let h = s.spawn(|| assemble_npz(job, records));
        while !h.is_finished() {
            if let Some(sig) = crate::sys::signals::pending() {
                tracing::warn!("{sig} during assembly: exiting; run again to finish");
                // The half-written npz goes now, not at the next run.
                let npz = crate::outdir::OutDir::new(&job.out_dir).npz();
                let _ = std::fs::remove_file(fidshard_core::output::temp_name(&npz));
                std::process::exit(Exit::Interrupted as i32);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(h.join().expect("assembly thread panicked"))
    })
}

/// What the end of a partition's run came to.
pub(crate) enum PartitionEnd {
    /// Exported (and assembled, if it was the last): the exit code.
    Done(Exit),
    /// These recorded shards of this partition have a PNG that no longer matches its CRC
    /// (removed): sample them again, then finish again.
    Redo(Vec<u64>),
}

/// All of this partition's shards are recorded: check their PNGs against the records (a
/// damaged one gets its shard redone here, not a request to rerun forever), export them, then
/// assemble the npz if every partition has exported (the last to finish does it), else leave it
/// to the last one.
pub(crate) fn finish_partition(job: &Job, db: &StateDb) -> Result<PartitionEnd> {
    let samples_dir = crate::outdir::OutDir::new(&job.out_dir).samples();
    // Only its own shards of the current plan (its DB may hold others: a job that shrank).
    let plan = job.plan();
    let mut own = db.done_records()?;
    own.retain(|r| plan.contains(&r.shard));
    let bad = damaged_shards(own, &samples_dir, job.settings.num_samples)?;
    if !bad.is_empty() {
        tracing::warn!(shards = ?bad, "PNGs of this partition are missing or damaged; sampling their shards again");
        return Ok(PartitionEnd::Redo(bad));
    }
    partitions::export(job, db.done_records()?)?;
    final_snapshot(job, db, JobState::Complete);
    let _lock = AssembleLock::take(&job.out_dir)?;
    let npz = crate::outdir::OutDir::new(&job.out_dir).npz();
    let records = match partitions::merged(job)? {
        Ok(records) => records,
        Err(missing) => {
            let list: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
            tracing::info!(
                partition = %job.partition,
                waiting_for = %list.join(", "),
                "this partition is complete; the last partition to finish assembles samples.npz (or run `fidshard assemble`)"
            );
            return Ok(PartitionEnd::Done(Exit::Complete));
        }
    };
    let n = job.settings.num_samples;
    if npz.is_file() {
        match check_complete(job, records.clone())? {
            Checked::Complete => return Ok(PartitionEnd::Done(Exit::Complete)),
            Checked::BadNpz(why) => tracing::warn!("{why}; assembling it again"),
            // Another partition's PNGs: the assembly below names them.
            Checked::BadPngs(_) => {}
        }
    }
    tracing::info!("every partition is complete: assembling samples.npz");
    match assemble_interruptible(job, records)? {
        Ok(()) => {
            tracing::info!(
                npz = %npz.display(),
                "complete: {n} samples in {}; to score them see docs/evaluation.md (the ADM evaluator)",
                npz.display()
            );
            Ok(PartitionEnd::Done(Exit::Complete))
        }
        Err(e) => Err(anyhow!(e)).context(
            "assembling samples.npz from the partitions' records; run the partitions named above again to redo those shards",
        ),
    }
}

/// Recorded shards with a PNG whose bytes no longer match the CRC32 recorded for it (a FIFO or
/// a device under a PNG's name counts as damaged and is never opened for blocking reads); the
/// damaged files are removed, so that the worker samples them again instead of reusing them (a
/// valid PNG of the right size that is not the recorded one would be reused). A stop signal
/// ends the check with exit 75, nothing changed but the damaged files removed.
fn damaged_shards(
    records: Vec<ShardRecord>,
    samples_dir: &std::path::Path,
    n: u64,
) -> Result<Vec<u64>> {
    let mut bad = Vec::new();
    let mut bytes = Vec::new();
    for r in records {
        let mut ok = true;
        for (i, &crc) in r.shard.indices().zip(&r.crc32) {
            if let Some(sig) = crate::sys::signals::pending() {
                return Err(fidshard_core::Fatal::new(
                    Exit::Interrupted,
                    anyhow!("{sig} while checking the PNGs; run the same command again"),
                )
                .into());
            }
            let path = samples_dir.join(png_name(i, n));
            let matches = fidshard_core::output::read_regular(&path, &mut bytes)
                .map(|()| crc32fast::hash(&bytes) == crc)
                .unwrap_or(false);
            if !matches {
                let _ = std::fs::remove_file(&path);
                ok = false;
            }
        }
        if !ok {
            bad.push(r.shard.id);
        }
    }
    Ok(bad)
}
