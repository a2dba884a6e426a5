//! What workers say: `ready`, `progress`, `shard_done` (checked, then recorded in the state
//! DB), `shard_failed` and `fatal`, and what a failed attempt means for its shard (retry with
//! backoff, or failed for good).
use super::pool::{Running, QUARANTINE_AFTER};
use super::queue::Verdict;
use super::Run;
use crate::outdir::snapshot;
use crate::outdir::state::{FailedRecord, ShardRecord};
use crate::sys::signals::StopLevel;
use fidshard_core::labels::label_of;
use fidshard_core::protocol::{FailureKind, FromWorker};
use std::time::Instant;

impl Run<'_> {
    pub(super) fn on_message(&mut self, w: usize, msg: FromWorker) {
        self.slots[w].heard_from(Instant::now());
        match msg {
            FromWorker::Ready { load_seconds, .. } => {
                let slot = &mut self.slots[w];
                tracing::info!(worker = slot.id, device = %slot.device, "ready after {load_seconds:.1} s");
                slot.ready();
            }
            FromWorker::Progress {
                shard,
                sampled,
                total,
                batch,
                ..
            } => {
                let slot = &mut self.slots[w];
                slot.micro_batch = Some(batch);
                let newly = slot.progress(shard, sampled, total);
                self.progress.sampled(newly);
            }
            FromWorker::ShardDone {
                shard,
                crc32,
                labels,
                seconds,
                features_crc32,
            } => self.on_shard_done(w, shard, (crc32, labels), seconds, features_crc32),
            FromWorker::ShardFailed {
                shard,
                kind,
                message,
            } => {
                let slot = &mut self.slots[w];
                if let Some(r) = slot.take_shard(shard) {
                    let msg = format!(
                        "shard {} on worker {} ({}): {kind}: {message}",
                        r.shard, slot.id, slot.device
                    );
                    self.attempt_failed(r, msg);
                }
            }
            FromWorker::Fatal {
                kind: kind @ (FailureKind::WeightsChanged | FailureKind::Protocol),
                message,
            } => {
                // Not this worker's problem but the job's: retrying on another device would
                // mix two models into one npz (or keep speaking a protocol nobody understands).
                tracing::error!("worker {}: {kind}: {message}", self.slots[w].id);
                self.snap.push_error(message.clone());
                self.fatal.get_or_insert(message);
                self.begin_stop("the job cannot continue", StopLevel::Terminate);
            }
            FromWorker::Fatal { kind, message } => {
                let slot = &mut self.slots[w];
                let msg = format!(
                    "worker {} ({}) cannot work: {kind}: {message}",
                    slot.id, slot.device
                );
                tracing::error!("{msg}");
                self.snap.push_error(msg);
                // A worker that cannot load will not load on a retry either.
                slot.deaths_in_row = QUARANTINE_AFTER;
            }
        }
    }

    fn on_shard_done(
        &mut self,
        w: usize,
        id: u64,
        (crc32, labels): (Vec<u32>, Vec<i64>),
        seconds: f64,
        features_crc32: Option<u32>,
    ) {
        let slot = &mut self.slots[w];
        let Some(r) = slot.take_shard(id) else {
            return;
        };
        slot.deaths_in_row = 0;
        let worker = format!("{} ({})", slot.id, slot.device);
        let n = r.shard.len();
        if crc32.len() as u64 != n || labels.len() as u64 != n {
            let msg = format!(
                "shard {}: worker {worker} reported {} files for {n} samples",
                r.shard,
                crc32.len()
            );
            self.attempt_failed(r, msg);
            return;
        }
        // The labels are the job's, not the worker's: a worker that reports others (a wrong
        // binary, a bug) fails the shard, naming the first sample that differs.
        let s = &self.c.job.settings;
        let expected: Vec<i64> = r
            .shard
            .indices()
            .map(|i| label_of(s.seed, i, s.labels, s.dit.num_classes))
            .collect();
        if let Some((k, (want, got))) = expected
            .iter()
            .zip(&labels)
            .enumerate()
            .find(|(_, (want, got))| want != got)
        {
            let msg = format!(
                "shard {}: worker {worker} reported label {got} for sample {}, but the job's label of that sample is {want} (labels: {}, seed {}): the worker disagrees with the job; the shard is sampled again",
                r.shard,
                r.shard.start + k as u64,
                s.labels.as_str(),
                s.seed
            );
            self.attempt_failed(r, msg);
            return;
        }
        // Trust, but check: every file must exist under its final name before the record.
        let n_total = self.c.job.settings.num_samples;
        if let Some(i) = r.shard.indices().find(|&i| {
            !self
                .c
                .samples_dir
                .join(fidshard_core::output::png_name(i, n_total))
                .is_file()
        }) {
            let msg = format!(
                "shard {}: worker {worker} reported it done but sample {i} has no PNG",
                r.shard
            );
            self.attempt_failed(r, msg);
            return;
        }
        let rec = ShardRecord {
            seconds,
            shard: r.shard,
            attempts: r.attempt,
            crc32,
            labels: expected,
            worker: worker.clone(),
            finished_unix: snapshot::unix_now() as u64,
            features_crc32,
        };
        if let Err(e) = self.c.db.record_done(&rec) {
            let msg = format!("shard {}: cannot record it as done: {e:#}", r.shard);
            self.attempt_failed(r, msg);
            return;
        }
        self.done += 1;
        self.samples_done += n;
        self.done_ranges.push((r.shard.start, r.shard.end));
        self.done_ranges = crate::job::plan::merge_ranges(std::mem::take(&mut self.done_ranges));
        self.progress
            .shard_done(&r.shard, &worker, seconds, self.done, self.total_shards);
    }

    pub(super) fn attempt_failed(&mut self, r: Running, msg: String) {
        tracing::warn!("{msg}");
        self.snap.push_error(msg.clone());
        if self.stopping.is_some() {
            // Interrupted, not failed: it runs again on resume, uncounted.
            return;
        }
        match self.queue.failed(r.shard) {
            Verdict::Retry { after } => {
                let _ = self.c.db.add_retries(1);
                tracing::info!(shard = %r.shard, "retry in {:.1} s", after.as_secs_f64());
            }
            Verdict::GiveUp { attempts } => {
                tracing::error!(shard = %r.shard, attempts, "shard failed for good");
                self.failed.insert(r.shard.id, (r.shard.start, r.shard.end));
                let rec = FailedRecord {
                    shard: r.shard,
                    attempts,
                    error: msg,
                    failed_unix: snapshot::unix_now() as u64,
                };
                if let Err(e) = self.c.db.record_failed(&rec) {
                    tracing::error!("cannot record the failure of shard {}: {e:#}", r.shard);
                }
            }
        }
    }
}
