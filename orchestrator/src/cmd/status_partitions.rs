//! `fidshard status` of a job run as partitions (many nodes): one row per partition, read from
//! each partition's own snapshot and records (never a lock another partition needs for long),
//! and the totals of the whole job.
use crate::cmd::status::{compute, Totals};
use crate::outdir::snapshot::{JobState, PartitionRow, Snapshot};
use crate::outdir::OutDir;
use anyhow::Result;
use std::path::Path;

/// The whole-job status when `out` holds partitions, else `None`.
pub(crate) fn compute_partitioned(out: &Path, totals: Totals) -> Result<Option<Snapshot>> {
    let parts = crate::outdir::partitions::list(out);
    if parts.is_empty() {
        return Ok(None);
    }
    // The layout of the newest partition is the job's current one.
    let n = parts
        .iter()
        .max_by(|a, b| modified(&a.1).total_cmp(&modified(&b.1)))
        .map(|(p, _)| p.n)
        .unwrap_or(1);
    let mut job = Snapshot::empty(out, JobState::NotStarted);
    job.host = None;
    let saved = |key: &str| -> Option<u64> {
        crate::outdir::state::saved_fingerprint(out).and_then(|fp| fp.get(key)?.parse().ok())
    };
    let (samples_total, shard_size) = match totals {
        Some(t) => t,
        None => (
            saved("num_samples").unwrap_or(0),
            saved("shard_size").unwrap_or(1).max(1),
        ),
    };
    job.samples_total = samples_total;
    let shards = samples_total.div_ceil(shard_size);
    let mut states = Vec::new();
    for (p, dir) in parts.iter().filter(|(p, _)| p.n == n) {
        let mut s = compute(dir, None)?;
        // This partition's share of the plan (its DB knows the whole job's, maybe of an
        // earlier size: what it recorded counts only inside its share of the current plan).
        let r = p.shards(shards);
        s.shards_total = r.end - r.start;
        let (a, b) = p.samples(samples_total, shard_size);
        s.samples_total = b - a;
        let (samples_done, shards_done) = done_within(&s.done_ranges, r, samples_total, shard_size);
        s.samples_done = samples_done;
        s.shards_done = shards_done;
        if s.state == JobState::Complete && samples_done < s.samples_total {
            s.state = JobState::Interrupted;
        }
        // An export of an earlier size of the job is stale: that partition must run again.
        let exported = crate::outdir::partitions::valid_export(out, *p, samples_total, shard_size)
            .ok()
            .flatten()
            .is_some();
        let crashed = s.state == JobState::Interrupted
            && s.note
                .as_deref()
                .is_some_and(|n| n.contains("without finishing"));
        let state = match s.state {
            JobState::Complete => "complete",
            _ if exported => "complete",
            JobState::Running => "running",
            JobState::Failed => "failed",
            JobState::NotStarted => "not_started",
            JobState::Interrupted if crashed => "crashed",
            JobState::Interrupted => "interrupted",
        };
        states.push(state);
        job.samples_done += s.samples_done;
        job.shards_done += s.shards_done;
        job.shards_failed += s.shards_failed;
        job.shards_running += s.shards_running;
        job.retries += s.retries;
        job.images_per_sec += if state == "running" {
            s.images_per_sec
        } else {
            0.0
        };
        job.updated_unix = job.updated_unix.max(s.updated_unix);
        job.missing_ranges.extend(s.missing_ranges.iter().copied());
        job.last_errors.extend(s.last_errors.iter().cloned());
        job.partitions.push(PartitionRow {
            partition: p.to_string(),
            state: state.to_string(),
            host: s
                .host
                .clone()
                .or_else(|| crate::outdir::snapshot::read(dir).and_then(|p| p.host)),
            // A finished partition's devices are in its last snapshot.
            devices: if s.workers.is_empty() {
                crate::outdir::snapshot::read(dir)
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
    let started = job.partitions.len() as u32;
    let npz = OutDir::new(out).npz();
    // This job's npz: assembled from the partitions' records for the current fingerprint (an
    // npz copied from another job of the same shape is not this job's result).
    let own_npz = || {
        matches!(
            crate::outdir::partitions::merged_in(out, n, samples_total, shard_size),
            Ok(Ok(records)) if crate::outdir::provenance::check(out, &records).is_ok()
        )
    };
    let npz_ok = npz.is_file()
        && own_npz()
        && crate::npz::npz_image_side(&npz)
            .and_then(|side| crate::npz::verify_npz(&npz, samples_total, side))
            .is_ok();
    let all_complete = started == n && states.iter().all(|s| *s == "complete");
    job.shards_total = shards;
    job.shards_pending = job
        .shards_total
        .saturating_sub(job.shards_done + job.shards_failed + job.shards_running);
    job.state = if all_complete && npz_ok {
        JobState::Complete
    } else if states.contains(&"running") {
        JobState::Running
    } else if states.contains(&"failed") {
        JobState::Failed
    } else if job.samples_done > 0 || !states.is_empty() {
        JobState::Interrupted
    } else {
        JobState::NotStarted
    };
    if job.state != JobState::Complete {
        let missing: Vec<String> = (0..n)
            .filter(|k| {
                !job.partitions
                    .iter()
                    .any(|r| r.partition == format!("{k}/{n}") && r.state == "complete")
            })
            .map(|k| format!("{k}/{n}"))
            .collect();
        job.note = Some(if all_complete {
            "every partition is complete but samples.npz is missing or damaged: run `fidshard assemble CONFIG`".into()
        } else {
            format!(
                "{} of {n} partitions complete; not complete: {}",
                n as usize - missing.len(),
                missing.join(", ")
            )
        });
    }
    job.missing_ranges = crate::job::plan::merge_ranges(std::mem::take(&mut job.missing_ranges));
    let extra = job
        .last_errors
        .len()
        .saturating_sub(crate::outdir::snapshot::MAX_ERRORS);
    job.last_errors.drain(..extra);
    Ok(Some(job))
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
