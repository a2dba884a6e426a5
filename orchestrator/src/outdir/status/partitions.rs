//! The status of a job run as partitions (many nodes): one row per partition, read from each
//! partition's own snapshot and records (never a lock another partition needs for long), and
//! the totals of the whole job.
use super::{derive, JobStatus, PartitionState, Totals};
use crate::job::partition::Partition;
use crate::outdir::snapshot::{JobState, PartitionRow, Snapshot, MAX_ERRORS};
use crate::outdir::OutDir;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The size of the job: `(num_samples, shard_size)`.
#[derive(Debug, Clone, Copy)]
struct Size {
    samples: u64,
    shard_size: u64,
}

impl Size {
    fn shards(self) -> u64 {
        self.samples.div_ceil(self.shard_size)
    }
}

/// The whole-job status when `out` holds partitions, else `None`.
pub(super) fn compute_partitioned(out: &Path, totals: Totals) -> Result<Option<Snapshot>> {
    let parts = crate::outdir::partitions::list(out);
    if parts.is_empty() {
        return Ok(None);
    }
    let n = current_layout(&parts);
    let size = job_size(out, totals);
    let mut job = Snapshot::empty(out, JobState::NotStarted);
    job.host = None;
    job.samples_total = size.samples;
    let mut states = Vec::new();
    for (p, dir) in parts.iter().filter(|(p, _)| p.n == n) {
        let (state, s) = partition_status(out, *p, dir, size)?;
        add_partition(&mut job, *p, dir, state, &s);
        states.push((*p, state));
    }
    job.shards_total = size.shards();
    job.shards_pending = job
        .shards_total
        .saturating_sub(job.shards_done + job.shards_failed + job.shards_running);
    let all_complete =
        states.len() == n as usize && states.iter().all(|(_, s)| *s == PartitionState::Complete);
    let state = job_state(&job, &states, all_complete, || {
        npz_is_the_partitions(out, n, size)
    });
    job.state = state.job_state();
    if state != PartitionState::Complete {
        job.note = Some(job_note(n, &states, all_complete));
    }
    job.missing_ranges = crate::job::plan::merge_ranges(std::mem::take(&mut job.missing_ranges));
    let extra = job.last_errors.len().saturating_sub(MAX_ERRORS);
    job.last_errors.drain(..extra);
    Ok(Some(job))
}

/// The layout (N) of the newest partition: the job's current one.
fn current_layout(parts: &[(Partition, PathBuf)]) -> u32 {
    parts
        .iter()
        .max_by(|a, b| modified(&a.1).total_cmp(&modified(&b.1)))
        .map(|(p, _)| p.n)
        .unwrap_or(1)
}

/// The job's size from the job file, else from the fingerprint the out dir recorded.
fn job_size(out: &Path, totals: Totals) -> Size {
    let saved = |key: &str| -> Option<u64> {
        crate::outdir::state::saved_fingerprint(out).and_then(|fp| fp.get(key)?.parse().ok())
    };
    let (samples, shard_size) = match totals {
        Some(t) => t,
        None => (
            saved("num_samples").unwrap_or(0),
            saved("shard_size").unwrap_or(1).max(1),
        ),
    };
    Size {
        samples,
        shard_size,
    }
}

/// Partition `p`'s state and snapshot, its counts cut to its share of the current plan (its
/// DB knows the whole job's, maybe of an earlier size: what it recorded counts only inside its
/// share of the current plan). Its valid export makes it complete; an export of an earlier
/// size of the job is stale: that partition must run again.
fn partition_status(
    out: &Path,
    p: Partition,
    dir: &Path,
    size: Size,
) -> Result<(PartitionState, Snapshot)> {
    let JobStatus {
        mut state,
        snapshot: mut s,
    } = derive(dir, None)?;
    let r = p.shards(size.shards());
    s.shards_total = r.end - r.start;
    let (a, b) = p.samples(size.samples, size.shard_size);
    s.samples_total = b - a;
    let (samples_done, shards_done) = done_within(&s.done_ranges, r, size.samples, size.shard_size);
    s.samples_done = samples_done;
    s.shards_done = shards_done;
    if state == PartitionState::Complete && samples_done < s.samples_total {
        state = PartitionState::Interrupted;
    }
    let exported = crate::outdir::partitions::valid_export(out, p, size.samples, size.shard_size)
        .ok()
        .flatten()
        .is_some();
    if exported {
        state = PartitionState::Complete;
    }
    Ok((state, s))
}

/// Adds partition `p` (its state dir `dir`) to the job's totals and rows.
fn add_partition(
    job: &mut Snapshot,
    p: Partition,
    dir: &Path,
    state: PartitionState,
    s: &Snapshot,
) {
    let running = matches!(state, PartitionState::Running { .. });
    job.samples_done += s.samples_done;
    job.shards_done += s.shards_done;
    job.shards_failed += s.shards_failed;
    job.shards_running += s.shards_running;
    job.retries += s.retries;
    job.images_per_sec += if running { s.images_per_sec } else { 0.0 };
    job.updated_unix = job.updated_unix.max(s.updated_unix);
    job.missing_ranges.extend(s.missing_ranges.iter().copied());
    job.last_errors.extend(s.last_errors.iter().cloned());
    let last = || crate::outdir::snapshot::read(dir);
    job.partitions.push(PartitionRow {
        partition: p.to_string(),
        state: state.as_str().to_string(),
        host: s.host.clone().or_else(|| last().and_then(|p| p.host)),
        // A finished partition's devices are in its last snapshot.
        devices: if s.workers.is_empty() {
            last()
                .map(|p| p.workers.iter().map(|w| w.device.clone()).collect())
                .unwrap_or_default()
        } else {
            s.workers.iter().map(|w| w.device.clone()).collect()
        },
        samples_done: s.samples_done,
        samples_total: s.samples_total,
        images_per_sec: s.images_per_sec,
        updated_unix: s.updated_unix,
    });
}

/// The whole job's state from its partitions' (`npz_ok` is asked only when every partition is
/// complete).
fn job_state(
    job: &Snapshot,
    states: &[(Partition, PartitionState)],
    all_complete: bool,
    npz_ok: impl FnOnce() -> bool,
) -> PartitionState {
    let any = |f: fn(&PartitionState) -> bool| states.iter().any(|(_, s)| f(s));
    if all_complete && npz_ok() {
        PartitionState::Complete
    } else if any(|s| matches!(s, PartitionState::Running { .. })) {
        PartitionState::Running { pid: None }
    } else if any(|s| matches!(s, PartitionState::Failed { .. })) {
        PartitionState::Failed {
            shards: job.shards_failed,
        }
    } else if all_complete {
        PartitionState::Unassembled
    } else if job.samples_done > 0 || !states.is_empty() {
        PartitionState::Interrupted
    } else {
        PartitionState::NotStarted
    }
}

/// Which of the `n` partitions are not complete, or that only the assembly is missing.
fn job_note(n: u32, states: &[(Partition, PartitionState)], all_complete: bool) -> String {
    if all_complete {
        return "every partition is complete but samples.npz is missing or damaged: run `fidshard assemble CONFIG`".into();
    }
    let missing: Vec<String> = (0..n)
        .filter(|&k| {
            !states
                .iter()
                .any(|(p, s)| p.k == k && *s == PartitionState::Complete)
        })
        .map(|k| format!("{k}/{n}"))
        .collect();
    format!(
        "{} of {n} partitions complete; not complete: {}",
        n as usize - missing.len(),
        missing.join(", ")
    )
}

/// Whether `samples.npz` is this job's: assembled from the partitions' records for the current
/// fingerprint (an npz copied from another job of the same shape is not this job's result),
/// and whole by the cheap check.
fn npz_is_the_partitions(out: &Path, n: u32, size: Size) -> bool {
    let npz = OutDir::new(out).npz();
    let own_npz = || {
        matches!(
            crate::outdir::partitions::merged_in(out, n, size.samples, size.shard_size),
            Ok(Ok(records)) if crate::outdir::provenance::check(out, &records).is_ok()
        )
    };
    npz.is_file()
        && own_npz()
        && crate::npz::npz_image_side(&npz)
            .and_then(|side| crate::npz::verify_npz(&npz, size.samples, side))
            .is_ok()
}

/// The samples and whole shards of the partition's shards `shards` (of a job of `num_samples`
/// in shards of `shard_size`) that the recorded ranges `done` cover.
fn done_within(
    done: &[(u64, u64)],
    shards: std::ops::Range<u64>,
    num_samples: u64,
    shard_size: u64,
) -> (u64, u64) {
    let (mut samples, mut whole) = (0, 0);
    for id in shards {
        let (a, b) = (id * shard_size, ((id + 1) * shard_size).min(num_samples));
        let covered: u64 = done
            .iter()
            .map(|&(x, y)| y.min(b).saturating_sub(x.max(a)))
            .sum();
        samples += covered.min(b - a);
        whole += u64::from(covered >= b - a);
    }
    (samples, whole)
}

fn modified(p: &Path) -> f64 {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PartitionState::*;

    fn p(k: u32) -> Partition {
        Partition { k, n: 3 }
    }

    fn state_of(states: &[PartitionState], samples_done: u64, npz_ok: bool) -> PartitionState {
        let mut job = Snapshot::empty(Path::new("out"), JobState::NotStarted);
        job.samples_done = samples_done;
        job.shards_failed = 4;
        let states: Vec<_> = (0..).map(p).zip(states.iter().copied()).collect();
        let all = states.len() == 3 && states.iter().all(|(_, s)| *s == Complete);
        job_state(&job, &states, all, || npz_ok)
    }

    #[test]
    fn the_job_state_follows_its_partitions() {
        assert_eq!(state_of(&[Complete; 3], 30, true), Complete);
        assert_eq!(state_of(&[Complete; 3], 30, false), Unassembled);
        // Two of three partitions complete and an npz: not this layout's result.
        assert_eq!(state_of(&[Complete, Complete], 20, true), Interrupted);
        let running = Running { pid: Some(9) };
        assert_eq!(
            state_of(&[Failed { shards: 1 }, running], 5, false),
            Running { pid: None }
        );
        assert_eq!(
            state_of(
                &[Complete, Failed { shards: 1 }, Crashed { pid: None }],
                5,
                false
            ),
            Failed { shards: 4 }
        );
        assert_eq!(state_of(&[Crashed { pid: Some(3) }], 0, false), Interrupted);
        assert_eq!(state_of(&[], 0, false), NotStarted);
    }

    #[test]
    fn the_note_names_the_partitions_not_complete() {
        let states = [(p(0), Complete), (p(2), Crashed { pid: None })];
        assert_eq!(
            job_note(3, &states, false),
            "1 of 3 partitions complete; not complete: 1/3, 2/3"
        );
        assert!(job_note(3, &[], true).contains("`fidshard assemble CONFIG`"));
    }

    #[test]
    fn done_within_counts_only_the_partitions_share() {
        // 25 samples in shards of 10; the partition owns shards 1..3 ([10..25)).
        assert_eq!(done_within(&[(0, 15)], 1..3, 25, 10), (5, 0));
        assert_eq!(done_within(&[(0, 25)], 1..3, 25, 10), (15, 2));
        assert_eq!(done_within(&[], 1..3, 25, 10), (0, 0));
    }
}
