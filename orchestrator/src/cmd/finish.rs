//! The end of a run: assembling `samples.npz` from recorded shards (interruptible), and for a
//! partition of a many-node job, exporting its records and assembling the npz when it is the
//! last partition to finish (under an exclusive lock, so two finishers never both write).
use crate::cmd::run::final_snapshot;
use crate::job::config::Job;
use crate::npz::{assemble, AssembleError, AssembleInput};
use crate::outdir::partitions::{self, AssembleLock};
use crate::outdir::snapshot::JobState;
use crate::outdir::state::{ShardRecord, StateDb};
use crate::sys::exit::Exit;
use crate::sys::time::round1;
use anyhow::{anyhow, Context, Result};
use std::path::Path;
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
    Ok(())
}

/// Assembles on a helper thread while this one watches for stop signals: a preempted assembly
/// exits 75 at once (its temporary npz is removed by the next run), instead of being killed
/// half way with a signal status.
pub(crate) fn assemble_interruptible(
    job: &Job,
    records: Vec<ShardRecord>,
) -> Result<Result<(), AssembleError>> {
    std::thread::scope(|s| {
        let h = s.spawn(|| assemble_npz(job, records));
        while !h.is_finished() {
            if let Some(sig) = crate::sys::signals::pending() {
                tracing::warn!("{sig} during assembly: exiting; run again to finish");
                std::process::exit(Exit::Interrupted as i32);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(h.join().expect("assembly thread panicked"))
    })
}

/// Shards of `records` with a PNG whose bytes no longer match the CRC32 recorded for it (those
/// PNGs are removed, so that the worker samples them again instead of reusing them: a valid
/// PNG of the right size that is not the recorded one would be reused).
pub(crate) fn damaged_shards(records: Vec<ShardRecord>, samples_dir: &Path, n: u64) -> Vec<u64> {
    let mut bad = Vec::new();
    for r in records {
        let mut ok = true;
        for (i, &crc) in r.shard.indices().zip(&r.crc32) {
            let path = samples_dir.join(fidshard_core::output::png_name(i, n));
            let matches = std::fs::read(&path)
                .map(|bytes| crc32fast::hash(&bytes) == crc)
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
    bad
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
    let bad = damaged_shards(own, &samples_dir, job.settings.num_samples);
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
    let labels: Vec<i64> = records
        .iter()
        .flat_map(|r| r.labels.iter().copied())
        .collect();
    let n = job.settings.num_samples;
    if npz.is_file() {
        // This job's npz (its record, the PNG CRCs, the fingerprint), and intact.
        let verified = crate::outdir::provenance::check(&job.out_dir, &records)
            .map_err(|why| anyhow!(why))
            .and_then(|()| {
                crate::npz::verify_npz_full(&npz, n, job.image_size as u32, &labels)
                    .map_err(|e| anyhow!(e))
            });
        match verified {
            Ok(()) => {
                tracing::info!(npz = %npz.display(), "samples.npz is already assembled (verified)");
                return Ok(PartitionEnd::Done(Exit::Complete));
            }
            Err(e) => tracing::warn!("{e:#}; assembling it again from the PNGs"),
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
