//! The hooks of `notify:` (job/notify.rs), fired once when `run` ends: a shell command with the
//! run's end in `FIDSHARD_*` variables (command.rs) and/or an HTTP POST of the status JSON
//! (webhook.rs). A hook that fails, hangs past its bound or cannot reach its server is logged as
//! a warning; it never changes the run's exit code.
//!
//! Layer: beside coordinator/, fetch/ and evaluate/, called by `cmd/run.rs` only. It reads what
//! the layers below wrote (the coordinator's `status.json` through outdir/, `metrics.json` and
//! the npz's CRC through npz/), so it needs none of its siblings: the webhook has its own small
//! ureq agent (fetch/'s client is made for resumable downloads and the hub's token, neither of
//! which a POST wants), and `metrics.json` is read as JSON rather than through evaluate/.
mod command;
mod webhook;

use crate::job::config::Job;
use crate::job::notify::Event;
use crate::outdir::snapshot::{JobState, NpzInfo, Snapshot};
use crate::outdir::OutDir;
use fidshard_core::Exit;
use std::path::{Path, PathBuf};

/// The metrics of `metrics.json` and the variables that carry them.
const METRICS: [(&str, &str); 5] = [
    ("fid", "FIDSHARD_FID"),
    ("sfid", "FIDSHARD_SFID"),
    ("inception_score", "FIDSHARD_IS"),
    ("precision", "FIDSHARD_PRECISION"),
    ("recall", "FIDSHARD_RECALL"),
];

/// How a run that ended with `result` looks to a hook: `complete`, `interrupted` (a signal:
/// exit 75), else `failed`.
pub(crate) fn event_of(result: &anyhow::Result<Exit>) -> Event {
    let exit = match result {
        Ok(exit) => *exit,
        Err(e) => fidshard_core::error::code_of_with(e, &|_| None),
    };
    match exit {
        Exit::Complete => Event::Complete,
        Exit::Interrupted => Event::Interrupted,
        _ => Event::Failed,
    }
}

/// Fires `job`'s hooks for the end `result` of its run, when `notify.on` lists that end.
/// Called once the coordinator lock is released, so that a hook may run `fidshard status`.
pub(crate) fn fire(job: &Job, result: &anyhow::Result<Exit>) {
    let Some(notify) = &job.notify else {
        return;
    };
    let event = event_of(result);
    if !notify.fires_on(event) {
        return;
    }
    let end = End::of(job, event, result.as_ref().err());
    if let Some(line) = &notify.command {
        let log = OutDir::new(job.state_dir()).logs().join("notify.log");
        if let Err(why) = command::run(line, &end.env(), &log) {
            tracing::warn!(
                state = event.as_str(),
                "notify.command: {why}; the run's exit code is unchanged (its output: {})",
                log.display()
            );
        }
    }
    if let Some(url) = &notify.webhook {
        match serde_json::to_string(&end.snapshot) {
            Ok(body) => {
                if let Err(why) = webhook::post(url, &body) {
                    tracing::warn!(
                        state = event.as_str(),
                        "notify.webhook: {why}; the run's exit code is unchanged"
                    );
                }
            }
            Err(e) => tracing::warn!("notify.webhook: cannot write the status JSON: {e}"),
        }
    }
}

/// What the hooks are told about the end of a run.
struct End {
    event: Event,
    out: PathBuf,
    /// `OUT/samples.npz`, when the run is complete and the file is there (for a partition: once
    /// all partitions are done).
    npz: Option<PathBuf>,
    /// This coordinator's last `status.json`, its state set to the event's, with the npz and
    /// the metrics that score it (as `fidshard status --json` shows a complete job).
    snapshot: Snapshot,
    /// `(variable, value)` of each metric computed for the npz.
    metrics: Vec<(&'static str, String)>,
}

impl End {
    fn of(job: &Job, event: Event, error: Option<&anyhow::Error>) -> End {
        let out = std::path::absolute(&job.out_dir).unwrap_or_else(|_| job.out_dir.clone());
        let npz_path = OutDir::new(&out).npz();
        // A partition's npz is the job's once every partition exported its records for the
        // job's current size (the last to finish assembled it before it ended).
        let whole_done = job.partition.is_whole()
            || crate::outdir::partitions::merged(job).is_ok_and(|m| m.is_ok());
        let npz =
            (event == Event::Complete && whole_done && npz_path.is_file()).then_some(npz_path);
        let mut snapshot = crate::outdir::snapshot::read(&job.state_dir())
            .unwrap_or_else(|| Snapshot::empty(&out, JobState::NotStarted));
        snapshot.state = match event {
            Event::Complete => JobState::Complete,
            Event::Failed => JobState::Failed,
            Event::Interrupted => JobState::Interrupted,
        };
        snapshot.out_dir = out.clone();
        let scores = npz
            .as_deref()
            .and_then(|n| metrics_of(&OutDir::new(&out).metrics(), n));
        let metrics = scores
            .as_ref()
            .map(|m| {
                METRICS
                    .iter()
                    .filter_map(|(key, var)| m.get(*key)?.as_f64().map(|v| (*var, v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(path) = &npz {
            let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            snapshot.npz = Some(NpzInfo {
                path: path.clone(),
                bytes,
            });
            snapshot.metrics = scores;
        }
        let mut end = End {
            event,
            out,
            npz,
            snapshot,
            metrics,
        };
        end.snapshot.note = Some(end.summary(job, error));
        end
    }

    /// One line: what ended, how far it got, where the npz is, the metrics or the error.
    fn summary(&self, job: &Job, error: Option<&anyhow::Error>) -> String {
        let s = &self.snapshot;
        let what = if job.partition.is_whole() {
            format!("fidshard job {}", job.source.display())
        } else {
            format!(
                "fidshard job {} (partition {})",
                job.source.display(),
                job.partition
            )
        };
        let mut line = format!(
            "{what}: {}, {} of {} samples",
            self.event.as_str(),
            s.samples_done,
            s.samples_total
        );
        if let Some(secs) = s.wall_seconds {
            line += &format!(" in {secs:.0} s");
        }
        if let Some(npz) = &self.npz {
            line += &format!(", {}", npz.display());
        }
        for (var, v) in &self.metrics {
            line += &format!(", {}={v}", var.trim_start_matches("FIDSHARD_"));
        }
        if let Some(e) = error {
            let text = format!("{e:#}");
            let first: String = text
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect();
            line += &format!(": {first}");
        }
        line
    }

    /// The variables of the command hook.
    fn env(&self) -> Vec<(&'static str, String)> {
        let text = |p: &Path| p.display().to_string();
        let mut env = vec![
            ("FIDSHARD_STATE", self.event.as_str().to_string()),
            ("FIDSHARD_OUT", text(&self.out)),
            (
                "FIDSHARD_SUMMARY",
                self.snapshot.note.clone().unwrap_or_default(),
            ),
        ];
        if let Some(npz) = &self.npz {
            env.push(("FIDSHARD_NPZ", text(npz)));
        }
        env.extend(self.metrics.iter().cloned());
        env
    }
}

/// `metrics.json` as JSON when it scores `npz` as it is now (the CRC32 of its images, as
/// `status` checks it).
fn metrics_of(metrics: &Path, npz: &Path) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(metrics).ok()?).ok()?;
    let crc = crate::npz::images_crc(npz).ok()?;
    (v.get("samples_crc32")?.as_u64()? == u64::from(crc)).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fidshard_core::Fatal;

    #[test]
    fn the_event_follows_the_exit_code() {
        assert_eq!(event_of(&Ok(Exit::Complete)), Event::Complete);
        assert_eq!(event_of(&Ok(Exit::Interrupted)), Event::Interrupted);
        assert_eq!(event_of(&Ok(Exit::ShardsFailed)), Event::Failed);
        assert_eq!(event_of(&Err(anyhow::anyhow!("disk full"))), Event::Failed);
        let stopped = Fatal::new(Exit::Interrupted, anyhow::anyhow!("SIGTERM"));
        assert_eq!(event_of(&Err(stopped.into())), Event::Interrupted);
    }
}
