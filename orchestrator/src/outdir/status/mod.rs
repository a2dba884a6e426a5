//! Where a job stands, derived from what its out dir holds; `fidshard status` prints it.
//!
//! A live coordinator (it holds `OUT/coordinator.lock`) is the authority: its `status.json`,
//! rewritten every second, is reported. Without one, the durable records in `state.sled` are
//! (a `status.json` left behind may be stale or written by a coordinator that crashed), and the
//! state is derived from them: complete, failed, interrupted, crashed or not started. The sled
//! DB is read while holding the job lock, so no coordinator can start in the middle of the read.
//! A job run as partitions is the sum of its partitions (partitions.rs); what `status` adds for
//! the user (npz, rates, what to run next) is details.rs; `--verify` is verify.rs.
mod details;
mod partitions;
mod verify;

pub(crate) use details::add_details;
pub(crate) use verify::verify_complete;

use crate::job::plan::plan;
use crate::outdir::lock::{Holder, JobLock, Probe};
use crate::outdir::snapshot::{self, format_utc, JobState, Snapshot, MAX_ERRORS};
use crate::outdir::state::{FailedRecord, Meta, ShardRecord, StateDb};
use anyhow::Result;
use std::path::Path;

/// `(num_samples, shard_size)` from the job file, when the target is one: the totals to show
/// before any record exists.
pub(crate) type Totals = Option<(u64, u64)>;

/// Where one coordinator's share of a job stands (the whole job's, or one partition's), decided
/// from typed facts: the lock, the last snapshot, the records, the npz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartitionState {
    /// No shard recorded and no run seen.
    NotStarted,
    /// A coordinator holds the lock (`pid`; none for a job whose partitions run).
    Running { pid: Option<u32> },
    /// The last snapshot said running but no coordinator holds the lock: it died (`pid`, as
    /// that snapshot named it).
    Crashed { pid: Option<u32> },
    /// Stopped before finishing (a signal, or shards still pending); running again resumes.
    Interrupted,
    /// Every shard is recorded but `samples.npz` is missing, damaged or not this job's.
    Unassembled,
    /// Everything that could be done is done, but `shards` shards exhausted their retries.
    Failed { shards: u64 },
    /// Every sample exists and `samples.npz` is this job's.
    Complete,
}

impl PartitionState {
    /// The state of `status.json` (`crashed` and `unassembled` are kinds of `interrupted`).
    pub fn job_state(self) -> JobState {
        match self {
            PartitionState::NotStarted => JobState::NotStarted,
            PartitionState::Running { .. } => JobState::Running,
            PartitionState::Crashed { .. }
            | PartitionState::Interrupted
            | PartitionState::Unassembled => JobState::Interrupted,
            PartitionState::Failed { .. } => JobState::Failed,
            PartitionState::Complete => JobState::Complete,
        }
    }

    /// The name in a partition's row of `status` (`crashed` is told apart there).
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionState::Crashed { .. } => "crashed",
            other => other.job_state().as_str(),
        }
    }

    /// What the user should know about a job (or partition) in this state, derived from its
    /// records; `None` when the state says it all.
    pub fn note(self) -> Option<String> {
        match self {
            PartitionState::Crashed { pid } => Some(format!(
                "the coordinator{} stopped without finishing (crashed or killed); run the job \
                 again to resume",
                pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
            )),
            PartitionState::Unassembled => Some(
                "every shard is done but samples.npz is missing or damaged; run the job again"
                    .into(),
            ),
            PartitionState::Interrupted => Some("run the job again to resume".into()),
            _ => None,
        }
    }
}

/// The job's status as `status` derived it: its state, with the snapshot that carries the
/// counts (whose `state` is `state.job_state()`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobStatus {
    pub state: PartitionState,
    pub snapshot: Snapshot,
}

impl JobStatus {
    fn new(state: PartitionState, mut snapshot: Snapshot) -> JobStatus {
        snapshot.state = state.job_state();
        JobStatus { state, snapshot }
    }
}

/// The job's status: the live coordinator's snapshot, or one derived from the records.
pub(crate) fn compute(out_dir: &Path, totals: Totals) -> Result<Snapshot> {
    Ok(derive(out_dir, totals)?.snapshot)
}

/// The status of the job in `out_dir`, run as partitions or not.
pub(crate) fn compute_job(out_dir: &Path, totals: Totals) -> Result<Snapshot> {
    match partitions::compute_partitioned(out_dir, totals)? {
        Some(s) => Ok(s),
        None => compute(out_dir, totals),
    }
}

/// [`compute`], with the state it decided.
pub(crate) fn derive(out_dir: &Path, totals: Totals) -> Result<JobStatus> {
    match JobLock::probe(out_dir)? {
        Probe::Held(holder) => Ok(from_live(out_dir, &holder, totals)),
        Probe::Free(guard) => {
            let status = from_records(out_dir, totals);
            drop(guard);
            status
        }
    }
}

/// The status while a coordinator holds the lock: its snapshot, or before it wrote one, the
/// previous counts with a note saying so.
fn from_live(out_dir: &Path, holder: &Holder, totals: Totals) -> JobStatus {
    let running = PartitionState::Running {
        pid: Some(holder.pid),
    };
    match snapshot::read(out_dir) {
        // Its own snapshot says what it is doing (a final one while it exits included).
        Some(s) if s.coordinator_pid == Some(holder.pid) => {
            let state = match s.state {
                JobState::NotStarted | JobState::Running => running,
                JobState::Interrupted => PartitionState::Interrupted,
                JobState::Failed => PartitionState::Failed {
                    shards: s.shards_failed,
                },
                JobState::Complete => PartitionState::Complete,
            };
            JobStatus::new(state, s)
        }
        // The coordinator is starting (hashing the checkpoint, loading models) and has not
        // written a snapshot yet; any status.json is a previous run's.
        previous => {
            let mut s = previous.unwrap_or_else(|| {
                let mut s = Snapshot::empty(out_dir, JobState::Running);
                set_totals(&mut s, totals);
                s
            });
            s.workers.clear();
            s.shards_running = 0;
            s.images_per_sec = 0.0;
            s.eta_seconds = None;
            s.coordinator_pid = Some(holder.pid);
            s.out_dir = out_dir.to_path_buf();
            s.note = Some(format!(
                "coordinator pid {} (started {}) has not reported yet; counts are from before it \
                 started",
                holder.pid,
                format_utc(holder.started_unix)
            ));
            JobStatus::new(running, s)
        }
    }
}

fn set_totals(s: &mut Snapshot, totals: Totals) {
    if let Some((n, shard_size)) = totals {
        s.samples_total = n;
        s.shards_total = plan(n, shard_size).len() as u64;
        s.shards_pending = s.shards_total;
    }
}

/// What the records of a state dir hold, read under its lock.
struct Records {
    meta: Meta,
    done: Vec<ShardRecord>,
    failed: Vec<FailedRecord>,
    retries: u64,
}

/// The status when no coordinator runs: from `state.sled` (falling back on the last
/// `status.json` if the DB cannot be opened, e.g. another user's read-only out dir).
fn from_records(out_dir: &Path, totals: Totals) -> Result<JobStatus> {
    let previous = snapshot::read(out_dir);
    let mut s = Snapshot::empty(out_dir, JobState::NotStarted);
    set_totals(&mut s, totals);
    if !StateDb::exists(out_dir) {
        return Ok(JobStatus::new(PartitionState::NotStarted, s));
    }
    let db = match StateDb::open(out_dir) {
        Ok(db) => db,
        Err(e) => {
            let Some(prev) = previous else {
                return Err(e.into());
            };
            return Ok(from_last_snapshot(prev, &e));
        }
    };
    let Some(meta) = db.meta()? else {
        return Ok(JobStatus::new(PartitionState::NotStarted, s));
    };
    let records = Records {
        meta,
        done: db.done_records()?,
        failed: db.failed_records()?,
        retries: db.retries()?,
    };
    drop(db);
    fill_counts(&mut s, &records, previous.as_ref());
    let facts = Facts {
        shards_total: s.shards_total,
        shards_done: s.shards_done,
        shards_failed: s.shards_failed,
        previous: previous.as_ref().map(|p| (p.state, p.coordinator_pid)),
        npz_ok: npz_is_the_records(out_dir, &records),
    };
    let state = decide(&facts);
    s.note = state.note();
    Ok(JobStatus::new(state, s))
}

/// The last `status.json` when the DB cannot be read (`e`): a run it says is running is over,
/// since nobody holds the lock.
fn from_last_snapshot(mut prev: Snapshot, e: &crate::outdir::state::StateError) -> JobStatus {
    let state = match prev.state {
        JobState::NotStarted => PartitionState::NotStarted,
        JobState::Running | JobState::Interrupted => PartitionState::Interrupted,
        JobState::Failed => PartitionState::Failed {
            shards: prev.shards_failed,
        },
        JobState::Complete => PartitionState::Complete,
    };
    prev.workers.clear();
    prev.coordinator_pid = None;
    prev.note = Some(format!("from the last status.json: {e}"));
    JobStatus::new(state, prev)
}

/// The counts, ranges, retries and errors of `s` from the records (and the last snapshot: the
/// coordinator may have reported retries and errors it had not yet recorded durably).
fn fill_counts(s: &mut Snapshot, r: &Records, previous: Option<&Snapshot>) {
    s.retries = r.retries.max(previous.map_or(0, |p| p.retries));
    s.wall_seconds = previous.and_then(|p| p.wall_seconds);
    s.samples_total = r.meta.num_samples;
    s.set_records(r.meta.plan().len() as u64, &r.done, &r.failed);
    let mut errors: Vec<_> = r.failed.iter().collect();
    errors.sort_by_key(|r| r.failed_unix);
    s.last_errors = match previous {
        Some(p) if !p.last_errors.is_empty() => p.last_errors.clone(),
        _ => errors
            .iter()
            .map(|r| format!("shard {}: {}", r.shard, r.error))
            .collect(),
    };
    let extra = s.last_errors.len().saturating_sub(MAX_ERRORS);
    s.last_errors.drain(..extra);
}

/// Whether `samples.npz` is there and this job's, by the cheap check (zip directory, npy
/// headers, sizes, the provenance record; milliseconds): an npz cut short or of another job is
/// not "complete". `--verify` reads every byte.
fn npz_is_the_records(out_dir: &Path, r: &Records) -> bool {
    let npz = crate::outdir::OutDir::new(out_dir).npz();
    npz.is_file()
        && crate::outdir::provenance::check(out_dir, &r.done).is_ok()
        && crate::npz::npz_image_side(&npz)
            .and_then(|side| crate::npz::verify_npz(&npz, r.meta.num_samples, side))
            .is_ok()
}

/// The typed facts a state is decided from when no coordinator holds the lock.
#[derive(Debug, Clone, Copy)]
struct Facts {
    shards_total: u64,
    shards_done: u64,
    shards_failed: u64,
    /// The last snapshot's state and coordinator pid, if there is one.
    previous: Option<(JobState, Option<u32>)>,
    /// `samples.npz` is there and this job's.
    npz_ok: bool,
}

/// The state of a job whose lock is free.
fn decide(f: &Facts) -> PartitionState {
    let all_done = f.shards_done == f.shards_total;
    let last = f.previous.map(|(state, _)| state);
    // A run that was interrupted before finishing a shard is still a run that started.
    let was_running = matches!(last, Some(JobState::Running | JobState::Interrupted));
    if all_done && f.npz_ok {
        PartitionState::Complete
    } else if f.shards_failed > 0 && f.shards_done + f.shards_failed == f.shards_total {
        PartitionState::Failed {
            shards: f.shards_failed,
        }
    } else if f.shards_done > 0 || f.shards_failed > 0 || was_running {
        match f.previous {
            // The last snapshot says running, but no coordinator holds the lock: it died.
            Some((JobState::Running, pid)) => PartitionState::Crashed { pid },
            _ if all_done => PartitionState::Unassembled,
            _ => PartitionState::Interrupted,
        }
    } else {
        PartitionState::NotStarted
    }
}

#[cfg(test)]
pub(crate) mod tests;
