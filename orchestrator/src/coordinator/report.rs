//! The run's `status.json` (see outdir/snapshot.rs), rewritten about once a second and at the
//! end, for `fidshard status`.
use super::pool::Slot;
use super::Run;
use crate::outdir::snapshot::{self, JobState};
use std::time::{Duration, Instant};

impl Run<'_> {
    pub(super) fn write_snapshot(&mut self, force: bool) {
        let now = Instant::now();
        if !force && now.duration_since(self.last_snapshot) < Duration::from_millis(900) {
            return;
        }
        self.last_snapshot = now;
        let running = self.slots.iter().map(Slot::held_len).sum::<usize>();
        let job = self.c.job;
        let s = &mut self.snap;
        s.state = if self.stopping.is_some() {
            JobState::Interrupted
        } else {
            JobState::Running
        };
        s.samples_done = self.samples_done;
        s.shards_done = self.done;
        s.shards_running = running as u64;
        s.shards_pending = self.queue.pending_len() as u64;
        s.shards_failed = self.failed.len() as u64;
        s.workers = self.slots.iter().map(Slot::snapshot).collect();
        s.images_per_sec = self.progress.rate();
        s.eta_seconds = self
            .progress
            .eta(job.samples_owned().saturating_sub(self.samples_done));
        s.retries = self.queue.retries;
        s.missing_ranges = crate::job::plan::merge_ranges(self.failed.values().copied().collect());
        s.done_ranges = self.done_ranges.clone();
        s.updated_unix = snapshot::unix_now();
        if let Err(e) = snapshot::write(&job.state_dir(), s) {
            tracing::warn!("cannot write status.json: {e}");
        }
    }
}
