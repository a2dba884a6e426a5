//! The end of one partition of a many-node job: check its PNGs, export its records, and
//! assemble the npz when it is the last partition to finish (under an exclusive lock, so two
//! finishers never both write).
use super::{assemble_interruptible, check_complete, final_snapshot, log_complete, Checked};
use crate::job::config::Job;
use crate::outdir::partitions::{self, AssembleLock};
use crate::outdir::snapshot::JobState;
use crate::outdir::state::{ShardRecord, StateDb};
use crate::outdir::OutDir;
use anyhow::{anyhow, Context, Result};
use fidshard_core::output::png_name;
use fidshard_core::Exit;

/// What the end of a partition's run came to.
pub(crate) enum PartitionEnd {
    /// Exported (and assembled, if it was the last): the exit code, and the records of the
    /// whole job when its npz is complete (this partition assembled it, or found it complete).
    Done {
        exit: Exit,
        complete: Option<Vec<ShardRecord>>,
    },
    /// These recorded shards of this partition have a PNG that no longer matches its CRC
    /// (removed): sample them again, then finish again.
    Redo(Vec<u64>),
}

/// All of this partition's shards are recorded: check their PNGs against the records (a
/// damaged one gets its shard redone here, not a request to rerun forever), export them, then
/// assemble the npz if every partition has exported (the last to finish does it), else leave it
/// to the last one.
pub(crate) fn finish_partition(job: &Job, db: &StateDb) -> Result<PartitionEnd> {
    let samples_dir = OutDir::new(&job.out_dir).samples();
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
    let complete = assemble_if_last(job)?;
    Ok(PartitionEnd::Done {
        exit: Exit::Complete,
        complete,
    })
}

/// Assembles the npz from every partition's exports when all have exported and it is not
/// already complete, under the assembly lock; else says whom it waits for. Returns the whole
/// job's records once its npz is complete.
fn assemble_if_last(job: &Job) -> Result<Option<Vec<ShardRecord>>> {
    let _lock = AssembleLock::take(&job.out_dir)?;
    let npz = OutDir::new(&job.out_dir).npz();
    let records = match partitions::merged(job)? {
        Ok(records) => records,
        Err(missing) => {
            let list: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
            tracing::info!(
                partition = %job.partition,
                waiting_for = %list.join(", "),
                "this partition is complete; the last partition to finish assembles samples.npz (or run `fidshard assemble`)"
            );
            return Ok(None);
        }
    };
    if npz.is_file() {
        match check_complete(job, records.clone())? {
            Checked::Complete => return Ok(Some(records)),
            Checked::BadNpz(why) => tracing::warn!("{why}; assembling it again"),
            // Another partition's PNGs: the assembly below names them.
            Checked::BadPngs(_) => {}
        }
    }
    tracing::info!("every partition is complete: assembling samples.npz");
    match assemble_interruptible(job, records.clone())? {
        Ok(()) => {
            log_complete(job, None);
            Ok(Some(records))
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
