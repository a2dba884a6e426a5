//! The end of a run, in one place: assembling `samples.npz` from the recorded shards
//! (interruptible), checking a complete job (check.rs), a partition's end (partition.rs), and
//! the final snapshot that `status` shows afterwards. `run` and `assemble` call these; neither
//! calls the other.
mod check;
mod partition;

pub(crate) use check::{check_complete, Checked};
pub(crate) use partition::{finish_partition, PartitionEnd};

use crate::job::config::Job;
use crate::npz::{assemble, AssembleError, AssembleInput};
use crate::outdir::snapshot::{self, unix_now, JobState, Snapshot, WorkerState};
use crate::outdir::state::{Recorded, ShardRecord, StateDb};
use crate::outdir::verified;
use crate::outdir::OutDir;
use crate::sys::time::round1;
use anyhow::{anyhow, Result};
use fidshard_core::{Exit, Fatal};
use std::time::{Duration, Instant};

/// When this `run` started (the wall time of a complete job in `status`); unset in other verbs.
static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Marks the start of a run: the wall time that `status` shows is measured from here.
pub(crate) fn mark_started() {
    STARTED.get_or_init(Instant::now);
}

/// Seconds since [`mark_started`], if it was called.
fn wall_seconds() -> Option<f64> {
    STARTED.get().map(|t| t.elapsed().as_secs_f64())
}

/// Assembles `samples.npz` from the recorded shards' PNGs, checking each file's CRC.
pub(crate) fn assemble_npz(job: &Job, mut records: Vec<ShardRecord>) -> Result<(), AssembleError> {
    let n = job.settings.num_samples;
    let recorded = Recorded::of(&mut records);
    if recorded.labels.len() as u64 != n {
        return Err(AssembleError::Input(format!(
            "the state records {} samples, the job has {n}",
            recorded.labels.len()
        )));
    }
    let out = OutDir::new(&job.out_dir);
    let input = AssembleInput {
        samples_dir: &out.samples(),
        num_samples: n,
        image_size: job.image_size as u32,
        labels: &recorded.labels,
        expected_crc: Some(&recorded.crc32),
    };
    // The old record describes the npz being replaced.
    let _ = verified::remove(&job.out_dir);
    let report = assemble(&input, &out.npz())?;
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
    check::record_verified(job, &recorded, unix_now(), wall_seconds());
    Ok(())
}

/// Assembles on a helper thread while this one watches for stop signals: a preempted assembly
/// removes its temporary npz and returns an `Interrupted` error (exit 75) at once, instead of
/// being killed half way with a signal status. The helper thread is left behind: the process
/// exits on that error, and its npz can no longer be renamed into place.
pub(crate) fn assemble_interruptible(
    job: &Job,
    records: Vec<ShardRecord>,
) -> Result<Result<(), AssembleError>> {
    let owned = job.clone();
    let h = std::thread::Builder::new()
        .name("assemble".into())
        .spawn(move || assemble_npz(&owned, records))?;
    while !h.is_finished() {
        if let Some(sig) = crate::sys::signals::pending() {
            // The half-written npz goes now, not at the next run.
            let npz = OutDir::new(&job.out_dir).npz();
            let _ = std::fs::remove_file(fidshard_core::output::temp_name(&npz));
            return Err(Fatal::new(
                Exit::Interrupted,
                anyhow!("{sig} during assembly: exiting; run again to finish"),
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(h.join().expect("assembly thread panicked"))
}

/// The log line of a job whose npz was just written (with the seconds of this coordinator's
/// run when it sampled or assembled the whole job).
pub(crate) fn log_complete(job: &Job, seconds: Option<f64>) {
    let npz = OutDir::new(&job.out_dir).npz();
    let n = job.settings.num_samples;
    const HINT: &str = "to score them see docs/evaluation.md (the ADM evaluator)";
    match seconds {
        Some(s) => tracing::info!(
            seconds = round1(s),
            npz = %npz.display(),
            "complete: {n} samples in {}; {HINT}",
            npz.display()
        ),
        None => {
            tracing::info!(npz = %npz.display(), "complete: {n} samples in {}; {HINT}", npz.display())
        }
    }
}

/// The snapshot `status` shows after the run: the coordinator's last one (or a fresh one when
/// nothing needed sampling), with the final state and counts from the state DB.
pub(crate) fn final_snapshot(job: &Job, db: &StateDb, state: JobState) {
    let out = &job.state_dir();
    let mut snap = snapshot::read(out).unwrap_or_else(|| Snapshot::empty(&job.out_dir, state));
    let done = db.done_records().unwrap_or_default();
    let failed = db.failed_records().unwrap_or_default();
    snap.state = state;
    snap.samples_total = job.samples_owned();
    snap.set_records(job.shard_count(), &done, &failed);
    snap.retries = snap.retries.max(db.retries().unwrap_or(0));
    snap.eta_seconds = None;
    snap.coordinator_pid = None;
    if state == JobState::Complete {
        if let Some(wall) = producing_run_seconds(job).or_else(wall_seconds) {
            snap.wall_seconds = Some(wall);
        }
    }
    for w in &mut snap.workers {
        w.pid = None;
        w.shard = None;
        w.progress = None;
        if w.state != WorkerState::Quarantined {
            w.state = WorkerState::Dead;
        }
    }
    snap.updated_unix = snapshot::unix_now();
    if let Err(e) = snapshot::write(out, &snap) {
        tracing::warn!("cannot write status.json: {e}");
    }
}

/// The wall time of the run that wrote the npz (its verification record says): a rerun that
/// changed nothing keeps it. Only the whole job's record describes this coordinator's run.
fn producing_run_seconds(job: &Job) -> Option<f64> {
    job.partition
        .is_whole()
        .then(|| verified::read(&job.out_dir))
        .flatten()
        .and_then(|v| v.wall_seconds)
}

/// The end of a run whose sampling finished with `failed` shards out of retries: the final
/// snapshot says failed, the log names the missing ranges, and the exit code says so.
pub(crate) fn shards_failed(job: &Job, db: &StateDb, failed: usize) -> Result<Exit> {
    let ranges = missing_ranges(db)?;
    final_snapshot(job, db, JobState::Failed);
    tracing::error!(
        failed,
        missing = %ranges,
        "some shards failed every attempt; run again to retry them"
    );
    Ok(Exit::ShardsFailed)
}

/// The end of a run that the coordinator stopped for `reason` (a problem of the job's input,
/// found while sampling): the final snapshot says interrupted; the error is an input error.
pub(crate) fn stopped(job: &Job, db: &StateDb, reason: String) -> anyhow::Error {
    final_snapshot(job, db, JobState::Interrupted);
    Fatal::input(anyhow!(reason)).into()
}

/// `a..b, c..d`: the index ranges of the shards that failed for good.
fn missing_ranges(db: &StateDb) -> Result<String> {
    let ranges = crate::job::plan::merge_ranges(
        db.failed_records()?
            .iter()
            .map(|f| (f.shard.start, f.shard.end))
            .collect(),
    );
    Ok(ranges
        .iter()
        .map(|(a, b)| format!("{a}..{b}"))
        .collect::<Vec<_>>()
        .join(", "))
}
