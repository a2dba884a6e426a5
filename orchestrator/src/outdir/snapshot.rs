//! `OUT/status.json`: the coordinator's view of a running job, rewritten about once a second and
//! on every event, read by `fidshard status` (and by anything else: it is plain JSON).
//!
//! Written to a temporary name, fsynced and renamed over the old file, so a reader sees either
//! the previous snapshot or the new one, never a partial file, even if the coordinator dies
//! mid-write. The temporary name matches the `.{name}.tmp.*` pattern that
//! `state::remove_stale_temps` cleans up.
use crate::job::plan::Shard;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// At most this many entries in `last_errors`.
pub(crate) const MAX_ERRORS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobState {
    NotStarted,
    Running,
    /// Stopped (signal, crash) before finishing; running again resumes.
    Interrupted,
    /// Everything that could be done is done, but some shards exhausted their retries.
    Failed,
    /// Every sample exists and `samples.npz` is written.
    Complete,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::NotStarted => "not_started",
            JobState::Running => "running",
            JobState::Interrupted => "interrupted",
            JobState::Failed => "failed",
            JobState::Complete => "complete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WorkerState {
    /// Starting up / loading the model.
    Loading,
    Idle,
    Busy,
    Dead,
    /// Failed too often; gets no more shards.
    Quarantined,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Loading => "loading",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Dead => "dead",
            WorkerState::Quarantined => "quarantined",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WorkerSnapshot {
    pub id: usize,
    /// `cpu`, `cuda:0`, ...
    pub device: String,
    pub pid: Option<u32>,
    pub state: WorkerState,
    pub shard: Option<Shard>,
    /// Images of `shard` done / its length.
    pub progress: Option<(u64, u64)>,
    /// The batch size in use (it shrinks after an out-of-memory error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub state: JobState,
    pub samples_done: u64,
    pub samples_total: u64,
    pub shards_done: u64,
    pub shards_total: u64,
    pub shards_running: u64,
    pub shards_pending: u64,
    pub shards_failed: u64,
    pub workers: Vec<WorkerSnapshot>,
    pub images_per_sec: f64,
    pub eta_seconds: Option<f64>,
    pub retries: u64,
    /// Latest last, at most [`MAX_ERRORS`].
    pub last_errors: Vec<String>,
    /// Half-open index ranges of the failed shards, merged.
    pub missing_ranges: Vec<(u64, u64)>,
    /// Half-open index ranges of the shards recorded done, merged.
    #[serde(default)]
    pub done_ranges: Vec<(u64, u64)>,
    pub coordinator_pid: Option<u32>,
    pub updated_unix: f64,
    pub out_dir: PathBuf,
    /// A remark from whoever built the snapshot (e.g. `status` explaining where the numbers
    /// come from); absent in the coordinator's own snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The weights file `run` is downloading before any worker starts (fetch/); absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetching: Option<Fetching>,
    /// The host of the coordinator that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A complete job's npz and what it took (`status` fills these in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub npz: Option<NpzInfo>,
    /// Seconds of the last run, start to end (of a complete job: the run that wrote the npz).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
    /// When a complete job last changed: its npz was written (`status` fills this in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_unix: Option<f64>,
    /// Images per second of each device, from the recorded shards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceRate>,
    /// A complete job's `metrics.json` when it scores the npz as it is now (`status` fills
    /// this in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
    /// What to run next (an interrupted or failed job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Keys of the YAML that no longer match what the out dir recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_changed: Vec<String>,
    /// For a job run as partitions: one row per partition (`status` fills this in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionRow>,
}

/// `samples.npz` of a complete job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NpzInfo {
    pub path: PathBuf,
    pub bytes: u64,
}

/// One device's share of a job: samples it made and its rate while it made them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeviceRate {
    pub device: String,
    pub samples: u64,
    pub images_per_sec: f64,
    /// The recorded shards' sampling time on this device (seconds).
    #[serde(default)]
    pub seconds: f64,
}

/// One partition of a job run on many nodes, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PartitionRow {
    /// `K/N`.
    pub partition: String,
    /// `running`, `complete`, `interrupted`, `crashed` (its coordinator died while running),
    /// `failed` or `not_started`.
    pub state: String,
    pub host: Option<String>,
    pub devices: Vec<String>,
    pub samples_done: u64,
    pub samples_total: u64,
    pub images_per_sec: f64,
    pub updated_unix: f64,
}

/// A download in progress: `file` (a repo file or URL), bytes on disk, bytes in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Fetching {
    pub file: String,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
}

impl Fetching {
    /// `acme/vae/config.json 1.2 MB of 3.4 MB (35.3%)`.
    pub fn describe(&self) -> String {
        let done = crate::sys::size::human(self.bytes_done);
        match self.bytes_total {
            Some(t) if t > 0 => format!(
                "{} {done} of {} ({:.1}%)",
                self.file,
                crate::sys::size::human(t),
                100.0 * self.bytes_done as f64 / t as f64
            ),
            _ => format!("{} {done}", self.file),
        }
    }
}

impl Snapshot {
    /// An all-zero snapshot in `state`, for the caller to fill in.
    pub fn empty(out_dir: &Path, state: JobState) -> Snapshot {
        Snapshot {
            state,
            samples_done: 0,
            samples_total: 0,
            shards_done: 0,
            shards_total: 0,
            shards_running: 0,
            shards_pending: 0,
            shards_failed: 0,
            workers: Vec::new(),
            images_per_sec: 0.0,
            eta_seconds: None,
            retries: 0,
            last_errors: Vec::new(),
            missing_ranges: Vec::new(),
            done_ranges: Vec::new(),
            coordinator_pid: None,
            updated_unix: unix_now(),
            out_dir: out_dir.to_path_buf(),
            note: None,
            fetching: None,
            host: Some(crate::sys::host::hostname()),
            npz: None,
            wall_seconds: None,
            changed_unix: None,
            devices: Vec::new(),
            metrics: None,
            next: None,
            config_changed: Vec::new(),
            partitions: Vec::new(),
        }
    }

    /// Sets the counts and ranges that follow from the recorded shards (done and failed for
    /// good); nothing is running afterwards.
    pub fn set_records(
        &mut self,
        shards_total: u64,
        done: &[crate::outdir::state::ShardRecord],
        failed: &[crate::outdir::state::FailedRecord],
    ) {
        self.shards_total = shards_total;
        self.shards_done = done.len() as u64;
        self.samples_done = done.iter().map(|r| r.shard.len()).sum();
        self.shards_failed = failed.len() as u64;
        self.shards_running = 0;
        self.shards_pending = shards_total.saturating_sub(self.shards_done + self.shards_failed);
        self.missing_ranges = crate::job::plan::merge_ranges(
            failed
                .iter()
                .map(|r| (r.shard.start, r.shard.end))
                .collect(),
        );
        self.done_ranges = crate::job::plan::merge_ranges(
            done.iter().map(|r| (r.shard.start, r.shard.end)).collect(),
        );
    }

    /// Appends an error, keeping the latest [`MAX_ERRORS`].
    pub fn push_error(&mut self, err: String) {
        self.last_errors.push(err);
        let extra = self.last_errors.len().saturating_sub(MAX_ERRORS);
        self.last_errors.drain(..extra);
    }
}

/// Replaces `OUT/status.json` atomically (fidshard-core's `write_atomic`).
pub(crate) fn write(out_dir: &Path, snap: &Snapshot) -> std::io::Result<()> {
    let path = crate::outdir::OutDir::new(out_dir).snapshot();
    let mut text = serde_json::to_vec_pretty(snap).map_err(std::io::Error::other)?;
    text.push(b'\n');
    fidshard_core::output::write_atomic(&path, &text).map_err(fidshard_core::CoreError::into_io)
}

/// The last snapshot written, if any and readable (a file from an incompatible version reads as
/// `None` rather than failing `status`).
pub(crate) fn read(out_dir: &Path) -> Option<Snapshot> {
    let text = std::fs::read(crate::outdir::OutDir::new(out_dir).snapshot()).ok()?;
    serde_json::from_slice(&text).ok()
}

pub(crate) use crate::sys::time::{format_utc, unix_now};

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(out: &Path) -> Snapshot {
        let mut s = Snapshot::empty(out, JobState::Running);
        s.samples_done = 1500;
        s.samples_total = 5000;
        s.shards_total = 5;
        s.shards_done = 1;
        s.shards_running = 1;
        s.shards_pending = 3;
        s.workers.push(WorkerSnapshot {
            id: 0,
            device: "cuda:0".into(),
            pid: Some(42),
            state: WorkerState::Busy,
            shard: Some(Shard {
                id: 1,
                start: 1000,
                end: 2000,
            }),
            progress: Some((500, 1000)),
            batch: Some(4),
        });
        s.eta_seconds = Some(12.5);
        s.coordinator_pid = Some(7);
        // serde_json (without its float_roundtrip feature) may parse an arbitrary f64 one ulp
        // off; a binary fraction compares exactly.
        s.updated_unix = 1_700_000_000.25;
        s
    }

    #[test]
    fn writes_and_reads_back_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let s = sample(dir.path());
        write(dir.path(), &s).unwrap();
        assert_eq!(read(dir.path()), Some(s.clone()));

        let mut s2 = s.clone();
        s2.state = JobState::Complete;
        write(dir.path(), &s2).unwrap();
        assert_eq!(read(dir.path()).unwrap().state, JobState::Complete);
        // Only status.json is left: no temporary files.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(crate::outdir::SNAPSHOT_FILE)]
        );

        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(crate::outdir::OutDir::new(dir.path()).snapshot()).unwrap(),
        )
        .unwrap();
        assert_eq!(v["state"], "complete");
        assert_eq!(v["workers"][0]["state"], "busy");
        assert!(v.get("note").is_none());

        // A garbled file reads as None instead of failing.
        std::fs::write(
            crate::outdir::OutDir::new(dir.path()).snapshot(),
            b"{\"state\": ",
        )
        .unwrap();
        assert_eq!(read(dir.path()), None);
    }

    #[test]
    fn keeps_the_latest_ten_errors() {
        let mut s = Snapshot::empty(Path::new("/x"), JobState::Running);
        for i in 0..15 {
            s.push_error(format!("e{i}"));
        }
        assert_eq!(s.last_errors.len(), MAX_ERRORS);
        assert_eq!(s.last_errors.first().unwrap(), "e5");
        assert_eq!(s.last_errors.last().unwrap(), "e14");
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_714_571_107), "2024-05-01 13:45:07 UTC");
    }
}
