//! What `status` adds to the bare counts, so that it answers the questions a user has: for a
//! complete job, the npz (path, size), the wall time, images/s overall and per device; for an
//! interrupted or failed one, what to run next; and whether the YAML still matches what the
//! out dir recorded.
use crate::job::config::Job;
use crate::outdir::snapshot::{DeviceRate, JobState, NpzInfo, Snapshot};
use crate::outdir::state::StateDb;
use crate::outdir::OutDir;
use std::collections::BTreeMap;
use std::path::Path;

/// Fills in the details of `snap` for the job in `out` (`job` when the target was its YAML).
pub(crate) fn add_details(snap: &mut Snapshot, out: &Path, job: Option<&Job>) {
    let mut yaml = job
        .map(|j| crate::sys::text::shell_quote(&j.source.display().to_string()).into_owned())
        .unwrap_or_else(|| "JOB.yaml".into());
    // The command to run next is this one's job: with the same `--set` overrides.
    for o in crate::job::config::overrides::global() {
        yaml += &format!(" --set {}", crate::sys::text::shell_quote(&o.text));
    }
    match snap.state {
        JobState::Complete => {
            let npz = OutDir::new(out).npz();
            if let Ok(m) = std::fs::metadata(&npz) {
                snap.npz = Some(NpzInfo {
                    path: npz,
                    bytes: m.len(),
                });
            }
            snap.devices = device_rates(out);
            record_of_production(snap, out);
            if let Some(wall) = snap.wall_seconds.filter(|w| *w > 0.0) {
                snap.images_per_sec = snap.samples_total as f64 / wall;
            }
        }
        JobState::Interrupted | JobState::NotStarted => {
            snap.next = Some(format!(
                "fidshard run {yaml}   (resumes: recorded shards are kept)"
            ));
        }
        JobState::Failed => {
            snap.next = Some(format!(
                "fidshard run {yaml}   (retries only the failed shards; see last_errors)"
            ));
        }
        JobState::Running => {}
    }
    if let Some(job) = job {
        snap.config_changed = changed_keys(job, out);
    }
}

/// The wall time of the run that wrote the npz and when that was, from `OUT/verified.json`
/// when it describes the npz there now (a rerun that changed nothing never rewrites them);
/// else the npz's mtime.
fn record_of_production(snap: &mut Snapshot, out: &Path) {
    use crate::outdir::verified::{self, Stamp};
    let npz = OutDir::new(out).npz();
    let now = Stamp::of(&npz).ok();
    match verified::read(out) {
        Some(v) if Some(v.npz) == now => {
            snap.changed_unix = Some(v.produced_unix);
            if v.wall_seconds.is_some() {
                snap.wall_seconds = v.wall_seconds;
            }
        }
        _ => snap.changed_unix = now.map(|s| s.1 as f64 / 1e9),
    }
}

/// Samples and images/s of each device, from the recorded shards (their `seconds`).
fn device_rates(out: &Path) -> Vec<DeviceRate> {
    // `status` creates nothing: a job run as partitions has no state at its root.
    if !StateDb::exists(out) {
        return Vec::new();
    }
    let Ok(crate::outdir::lock::Probe::Free(_guard)) = crate::outdir::lock::JobLock::probe(out)
    else {
        return Vec::new();
    };
    let Ok(db) = StateDb::open(out) else {
        return Vec::new();
    };
    let mut by: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for r in db.done_records().unwrap_or_default() {
        let e = by.entry(r.worker.clone()).or_default();
        e.0 += r.shard.len();
        e.1 += r.seconds;
    }
    by.into_iter()
        .map(|(device, (samples, secs))| DeviceRate {
            device,
            samples,
            seconds: secs,
            images_per_sec: if secs > 0.0 {
                samples as f64 / secs
            } else {
                0.0
            },
        })
        .collect()
}

/// Settings of the YAML that differ from what the out dir recorded (its fingerprint.json),
/// without hashing the weights (that is `run`'s job): `seed 0 -> 1`.
fn changed_keys(job: &Job, out: &Path) -> Vec<String> {
    let Some(saved) = crate::outdir::state::saved_fingerprint(out) else {
        return Vec::new();
    };
    let now = crate::job::fingerprint::Fingerprint::settings_only(job);
    saved
        .diff(&now)
        .into_iter()
        .filter(|(k, _, _)| k != "checkpoint" && k != "vae")
        .map(|(k, old, new)| {
            if k == "num_samples" {
                format!(
                    "num_samples {old} -> {new} (`run` grows or shrinks the job, keeping its work)"
                )
            } else {
                format!(
                    "{k} {old} -> {new} (`run` refuses: it changes pixels; --restart starts over)"
                )
            }
        })
        .collect()
}
