//! The coordinator of `fidshard run`: owns the plan and the state, hands shards to workers,
//! records what they finish, retries what they lose. No worker ever waits for another.
//!
//! One tokio current-thread runtime drives everything: worker stdout readers and a 100 ms tick
//! for signals (see signals.rs), stall detection and snapshots. (Current-thread also keeps every child spawned from the
//! main thread, which is what the workers' parent-death signal refers to.)
mod pool;
mod progress;
mod queue;
pub(crate) mod spawn;

use crate::job::config::Job;
use crate::job::plan::Shard;
use fidshard_core::protocol::{FromWorker, ToWorker};
use crate::outdir::snapshot::{self, JobState, Snapshot, WorkerState};
use crate::outdir::state::{FailedRecord, ShardRecord, StateDb};
use anyhow::Result;
use nix::sys::signal::Signal;
use pool::{Running, Slot, QUARANTINE_AFTER};
use progress::Progress;
use queue::{backoff, Queue, Verdict};
use crate::job::devices::WorkerDevice;
use spawn::{Event, SpawnSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How a coordination round ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every shard is recorded done (or failed for good: see `failed`).
    Finished { failed: usize },
    /// A signal stopped it; what finished is recorded.
    Interrupted,
}

pub(crate) struct Coordinator<'a> {
    pub job: &'a Job,
    pub db: &'a StateDb,
    pub devices: Vec<WorkerDevice>,
    /// Time from SIGTERM to workers until SIGKILL (preemption and hangs alike).
    pub grace: Duration,
    pub samples_dir: PathBuf,
    pub log_dir: PathBuf,
}

struct Run<'a> {
    c: &'a Coordinator<'a>,
    slots: Vec<Slot>,
    queue: Queue,
    /// Shards failed for good: id -> index range (for the snapshot's missing ranges).
    failed: BTreeMap<u64, (u64, u64)>,
    done: u64,
    /// Index ranges recorded done (for the snapshot).
    done_ranges: Vec<(u64, u64)>,
    total_shards: u64,
    samples_done: u64,
    events_tx: mpsc::UnboundedSender<Event>,
    stopping: Option<Instant>,
    snap: Snapshot,
    progress: Progress,
    last_snapshot: Instant,
    init: ToWorker,
}

impl<'a> Coordinator<'a> {
    /// Samples `todo` (shards not yet recorded), given `done_before` shards / samples already
    /// recorded. Returns when all are done or failed, or after an interrupting signal.
    pub fn run(
        &self,
        todo: Vec<Shard>,
        done_before: (u64, u64),
        total_shards: u64,
    ) -> Result<Outcome> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(self.run_async(todo, done_before, total_shards))
    }

    async fn run_async(
        &self,
        todo: Vec<Shard>,
        done_before: (u64, u64),
        total_shards: u64,
    ) -> Result<Outcome> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let init = ToWorker::Init {
            settings: Box::new(self.job.settings.clone()),
            samples_dir: self.samples_dir.clone(),
        };
        let mut snap = Snapshot::empty(&self.job.out_dir, JobState::Running);
        snap.samples_total = self.job.settings.num_samples;
        snap.shards_total = total_shards;
        snap.coordinator_pid = Some(std::process::id());
        let mut run = Run {
            c: self,
            slots: self
                .devices
                .iter()
                .enumerate()
                .map(|(i, d)| Slot::new(i, d.clone()))
                .collect(),
            queue: Queue::new(todo, self.job.raw.retry.clone()),
            failed: BTreeMap::new(),
            done: done_before.0,
            done_ranges: self
                .db
                .done_records()?
                .iter()
                .map(|r| (r.shard.start, r.shard.end))
                .collect(),
            total_shards,
            samples_done: done_before.1,
            events_tx,
            stopping: None,
            snap,
            progress: Progress::new(self.job.settings.num_samples, done_before.1),
            last_snapshot: Instant::now() - Duration::from_secs(10),
            init,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            if let Some(sig) = crate::sys::signals::pending() {
                if crate::sys::signals::urgent() {
                    tracing::warn!("second SIGINT: killing the workers now");
                    run.kill_all(Signal::SIGKILL);
                    run.write_snapshot(true);
                    return Ok(Outcome::Interrupted);
                }
                run.begin_stop(sig);
            }
            run.housekeeping().await;
            if let Some(outcome) = run.finished() {
                run.shutdown_workers(&mut events).await;
                run.write_snapshot(true);
                run.progress.finish();
                return Ok(outcome);
            }
            tokio::select! {
                Some(ev) = events.recv() => run.on_event(ev).await,
                _ = tick.tick() => {}
            }
        }
    }
}

impl Run<'_> {
    fn finished(&self) -> Option<Outcome> {
        if let Some(_since) = self.stopping {
            if self.slots.iter().all(|s| !s.alive()) {
                return Some(Outcome::Interrupted);
            }
            return None;
        }
        let in_flight = self.slots.iter().any(Slot::busy);
        if self.queue.pending_len() == 0 && !in_flight {
            return Some(Outcome::Finished {
                failed: self.failed.len(),
            });
        }
        None
    }

    fn begin_stop(&mut self, why: &str) {
        if self.stopping.is_some() {
            return;
        }
        tracing::warn!(
            grace_s = self.c.grace.as_secs_f64(),
            "{why}: stopping; no new shards, workers get SIGTERM, finished shards stay recorded"
        );
        self.stopping = Some(Instant::now());
        self.kill_all(Signal::SIGTERM);
    }

    fn kill_all(&mut self, sig: Signal) {
        for s in &mut self.slots {
            if let Some(p) = &s.proc {
                p.signal(sig);
                s.terminating_since.get_or_insert_with(Instant::now);
            }
        }
    }

    /// Spawns, assigns, detects hangs and escalates, writes the snapshot.
    async fn housekeeping(&mut self) {
        let now = Instant::now();
        if let Some(since) = self.stopping {
            if now.duration_since(since) > self.c.grace {
                self.kill_all(Signal::SIGKILL);
            }
            self.write_snapshot(false);
            return;
        }
        let stall = Duration::from_secs_f64(self.job().raw.stall_timeout);
        let kill_after = self.c.grace;
        let work_left = self.queue.pending_len() > 0;
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.stalled(now, stall) {
                let what = match &slot.sampling {
                    Some(r) => format!("shard {}", r.shard),
                    None if slot.state == WorkerState::Loading => "loading".to_string(),
                    None => "writing".to_string(),
                };
                tracing::warn!(worker = slot.id, device = %slot.device, "no progress for {:.0} s ({what}): SIGTERM", stall.as_secs_f64());
                self.snap.push_error(format!(
                    "worker {} ({}) hung for {:.0} s ({what}); restarted",
                    slot.id,
                    slot.device,
                    stall.as_secs_f64()
                ));
                if let Some(p) = &slot.proc {
                    p.signal(Signal::SIGTERM);
                }
                slot.terminating_since = Some(now);
            } else if let (Some(t), Some(p)) = (slot.terminating_since, &slot.proc) {
                if now.duration_since(t) > kill_after {
                    p.signal(Signal::SIGKILL);
                }
            }
            let slot = &mut self.slots[i];
            let due = slot.respawn_at.is_some_and(|t| t <= now);
            if !slot.alive() && due && slot.state != WorkerState::Quarantined && work_left {
                self.spawn(i).await;
            }
        }
        self.assign().await;
        self.write_snapshot(false);
    }

    fn job(&self) -> &Job {
        self.c.job
    }

    async fn spawn(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.gen += 1;
        slot.respawn_at = None;
        slot.terminating_since = None;
        let spec = SpawnSpec {
            worker: slot.id,
            gen: slot.gen,
            device: &slot.device,
            log_dir: &self.c.log_dir,
            init: &self.init,
        };
        match spawn::spawn(spec, self.events_tx.clone()).await {
            Ok(proc) => {
                tracing::info!(worker = slot.id, device = %slot.device, pid = proc.pid, "worker started");
                slot.proc = Some(proc);
                slot.state = WorkerState::Loading;
                slot.last_progress = Instant::now();
            }
            Err(e) => {
                slot.deaths_in_row += 1;
                self.snap.push_error(format!("worker {}: {e:#}", slot.id));
                self.after_death(i);
            }
        }
    }

    async fn assign(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if !self.slots[i].can_take() {
                continue;
            }
            let Some((shard, attempt)) = self.queue.pop_ready(now) else {
                return;
            };
            let slot = &mut self.slots[i];
            tracing::debug!(worker = slot.id, %shard, attempt, "assign");
            if let Some(p) = slot.proc.as_mut() {
                p.send(&ToWorker::Assign { shard, attempt }).await;
            }
            slot.sampling = Some(Running {
                shard,
                attempt,
                sampled: 0,
            });
            slot.state = WorkerState::Busy;
            slot.last_progress = now;
        }
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Msg { worker, gen, msg } if self.slots[worker].gen == gen => {
                self.on_message(worker, msg);
            }
            Event::Exited {
                worker,
                gen,
                status,
            } if self.slots[worker].gen == gen => {
                self.on_exit(worker, status);
            }
            _ => {} // from an earlier process of that slot
        }
    }

    fn on_message(&mut self, w: usize, msg: FromWorker) {
        let now = Instant::now();
        self.slots[w].last_progress = now;
        match msg {
            FromWorker::Ready { load_seconds, .. } => {
                let slot = &mut self.slots[w];
                tracing::info!(worker = slot.id, device = %slot.device, "ready after {load_seconds:.1} s");
                slot.state = WorkerState::Idle;
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
                let mut newly = 0;
                if let Some(r) = slot.sampling.as_mut().filter(|r| r.shard.id == shard) {
                    newly = sampled.saturating_sub(r.sampled);
                    r.sampled = sampled;
                    if sampled >= total {
                        let r = slot.sampling.take().expect("checked above");
                        slot.writing.push(r);
                    }
                }
                self.progress.sampled(newly);
            }
            FromWorker::ShardDone {
                shard,
                crc32,
                labels,
                seconds,
            } => self.on_shard_done(w, shard, crc32, labels, seconds),
            FromWorker::ShardFailed {
                shard,
                kind,
                message,
            } => {
                let slot = &mut self.slots[w];
                if let Some(r) = slot.take_shard(shard) {
                    let msg = format!(
                        "shard {} on worker {} ({}): {kind:?}: {message}",
                        r.shard, slot.id, slot.device
                    );
                    self.attempt_failed(r, msg);
                }
                let slot = &mut self.slots[w];
                if !slot.busy() {
                    slot.state = WorkerState::Idle;
                }
            }
            FromWorker::Fatal { kind, message } => {
                let slot = &mut self.slots[w];
                let msg = format!(
                    "worker {} ({}) cannot work: {kind:?}: {message}",
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
        crc32: Vec<u32>,
        labels: Vec<i64>,
        seconds: f64,
    ) {
        let slot = &mut self.slots[w];
        let Some(r) = slot.take_shard(id) else {
            return;
        };
        if !slot.busy() {
            slot.state = WorkerState::Idle;
        }
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
            shard: r.shard,
            attempts: r.attempt,
            crc32,
            labels,
            worker: worker.clone(),
            finished_unix: snapshot::unix_now() as u64,
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

    fn attempt_failed(&mut self, r: Running, msg: String) {
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

    fn on_exit(&mut self, w: usize, status: String) {
        let slot = &mut self.slots[w];
        slot.proc = None;
        let lost = slot.take_shards();
        let was_loading = slot.state == WorkerState::Loading;
        let stopped_by_us = self.stopping.is_some();
        if !lost.is_empty() || was_loading {
            slot.deaths_in_row += 1;
        }
        let id = slot.id;
        let device = slot.device.to_string();
        if !stopped_by_us {
            tracing::warn!(worker = id, %device, "worker {status}");
        }
        for r in lost {
            let msg = format!("shard {} lost: worker {id} ({device}) {status}", r.shard);
            self.attempt_failed(r, msg);
        }
        self.after_death(w);
    }

    fn after_death(&mut self, w: usize) {
        let slot = &mut self.slots[w];
        slot.proc = None;
        if slot.deaths_in_row >= QUARANTINE_AFTER {
            if slot.state != WorkerState::Quarantined {
                let msg = format!(
                    "device {} quarantined after {} failures in a row; the other devices carry on",
                    slot.device, slot.deaths_in_row
                );
                tracing::error!("{msg}");
                self.snap.push_error(msg);
            }
            slot.state = WorkerState::Quarantined;
            slot.respawn_at = None;
            if self
                .slots
                .iter()
                .all(|s| s.state == WorkerState::Quarantined)
            {
                self.give_up_all("every device is quarantined");
            }
            return;
        }
        slot.state = WorkerState::Dead;
        let wait = backoff(&self.c.job.raw.retry, slot.deaths_in_row.max(1));
        slot.respawn_at = Some(Instant::now() + wait);
    }

    /// No worker is left: the remaining shards fail with `why`.
    fn give_up_all(&mut self, why: &str) {
        for shard in self.queue.drain() {
            self.failed.insert(shard.id, (shard.start, shard.end));
            let rec = FailedRecord {
                shard,
                attempts: self.queue.attempts(shard.id),
                error: why.to_string(),
                failed_unix: snapshot::unix_now() as u64,
            };
            let _ = self.c.db.record_failed(&rec);
        }
    }

    async fn shutdown_workers(&mut self, events: &mut mpsc::UnboundedReceiver<Event>) {
        for s in &mut self.slots {
            if let Some(p) = s.proc.as_mut() {
                p.send(&ToWorker::Shutdown).await;
                p.close();
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.slots.iter().any(Slot::alive) {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::Exited { worker, gen, .. })) if self.slots[worker].gen == gen => {
                    self.slots[worker].proc = None;
                    self.slots[worker].state = WorkerState::Dead;
                }
                Ok(Some(_)) => {}
                _ => {
                    self.kill_all(Signal::SIGKILL);
                    break;
                }
            }
        }
    }

    fn write_snapshot(&mut self, force: bool) {
        let now = Instant::now();
        if !force && now.duration_since(self.last_snapshot) < Duration::from_millis(900) {
            return;
        }
        self.last_snapshot = now;
        let running = self
            .slots
            .iter()
            .map(|s| s.sampling.iter().count() + s.writing.len())
            .sum::<usize>();
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
            .eta(job.settings.num_samples - self.samples_done);
        s.retries = self.queue.retries;
        s.missing_ranges = crate::job::plan::merge_ranges(self.failed.values().copied().collect());
        s.done_ranges = self.done_ranges.clone();
        s.updated_unix = snapshot::unix_now();
        if let Err(e) = snapshot::write(&job.out_dir, s) {
            tracing::warn!("cannot write status.json: {e}");
        }
    }
}
