//! The coordinator of `fidshard run`: owns the plan and the state, hands shards to workers,
//! records what they finish, retries what they lose. No worker ever waits for another.
//!
//! One tokio current-thread runtime drives everything: worker stdout readers and a 100 ms tick
//! for signals (see signals.rs), stall detection and snapshots. (Current-thread also keeps every child spawned from the
//! main thread, which is what the workers' parent-death signal refers to.)
//!
//! Workers are started through the [`Spawner`] seam (spawner.rs): real processes in production
//! (spawn.rs), scripted in-process workers in the tests (fake.rs, tests.rs).
//!
//! Stopping (sys/signals.rs): SIGUSR1 drains (no new shards; each worker is sent `drain`,
//! finishes and writes the batch in flight and exits; SIGTERM after the grace, SIGKILL after
//! another); SIGTERM / SIGINT terminate (SIGTERM now, SIGKILL after the grace); a second SIGINT
//! kills now. A stronger request escalates a weaker one. Every way ends in
//! [`Outcome::Interrupted`]; an interrupted shard's written PNGs are reused on resume.
#[cfg(test)]
mod fake;
mod held;
mod messages;
pub(crate) mod model_check;
mod pool;
mod progress;
mod queue;
mod report;
mod spawn;
mod spawner;
#[cfg(test)]
mod tests;

use crate::job::config::Job;
use crate::job::devices::WorkerDevice;
use crate::job::plan::Shard;
use crate::outdir::snapshot::{self, JobState, Snapshot};
use crate::outdir::state::{FailedRecord, StateDb};
use crate::sys::signals::{StopLevel, StopRequest};
use anyhow::Result;
use fidshard_core::protocol::ToWorker;
use nix::sys::signal::Signal;
use pool::{Slot, QUARANTINE_AFTER};
use progress::Progress;
use queue::{backoff, Queue};
use spawner::{Event, SpawnSpec, Spawner};
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
    /// A worker found the job itself unusable (its weights changed on disk, or the two binaries
    /// disagree): every worker was stopped; what finished before is recorded and valid.
    Stopped { reason: String },
}

pub(crate) struct Coordinator<'a> {
    pub job: &'a Job,
    pub db: &'a StateDb,
    pub devices: Vec<WorkerDevice>,
    /// Time from SIGTERM to workers until SIGKILL (preemption and hangs alike), and from
    /// `drain` (SIGUSR1) until SIGTERM.
    pub grace: Duration,
    pub samples_dir: PathBuf,
    pub log_dir: PathBuf,
    /// With the job's `evaluate:`: the workers compute each shard's Inception features.
    pub features: Option<fidshard_core::protocol::FeaturesSpec>,
}

struct Run<'a> {
    c: &'a Coordinator<'a>,
    spawner: &'a mut dyn Spawner,
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
    /// Set once a stop was asked for (a signal, or a fatal worker message): how hard.
    stopping: Option<StopLevel>,
    /// Why the whole run must stop (see [`Outcome::Stopped`]).
    fatal: Option<String>,
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
        self.run_with(
            &mut spawn::ProcessSpawner,
            &crate::sys::signals::requested,
            todo,
            done_before,
            total_shards,
        )
    }

    /// [`Coordinator::run`] with workers from `spawner`, and stop requests from `signals`
    /// (polled every tick).
    pub(crate) fn run_with(
        &self,
        spawner: &mut dyn Spawner,
        signals: &dyn Fn() -> Option<StopRequest>,
        todo: Vec<Shard>,
        done_before: (u64, u64),
        total_shards: u64,
    ) -> Result<Outcome> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(self.run_async(spawner, signals, todo, done_before, total_shards))
    }

    async fn run_async(
        &self,
        spawner: &mut dyn Spawner,
        signals: &dyn Fn() -> Option<StopRequest>,
        todo: Vec<Shard>,
        done_before: (u64, u64),
        total_shards: u64,
    ) -> Result<Outcome> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        // The weights the job's fingerprint recorded: every worker (first start and respawn)
        // checks that it loads these, so a file replaced mid-run stops the run.
        let weights = self.db.meta()?.and_then(|m| m.fingerprint.weights());
        let init = ToWorker::Init {
            settings: Box::new(self.job.settings.clone()),
            samples_dir: self.samples_dir.clone(),
            weights,
            features: self.features.clone(),
        };
        let mut snap = Snapshot::empty(&self.job.out_dir, JobState::Running);
        snap.samples_total = self.job.samples_owned();
        snap.shards_total = total_shards;
        snap.coordinator_pid = Some(std::process::id());
        let mut run = Run {
            c: self,
            spawner,
            slots: self
                .devices
                .iter()
                .enumerate()
                .map(|(i, d)| Slot::new(i, d.clone()))
                .collect(),
            queue: Queue::new(todo, self.job.run.retry.clone()),
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
            fatal: None,
            snap,
            progress: Progress::new(
                self.job.samples_owned(),
                done_before.1,
                self.job.run.progress_interval,
            ),
            last_snapshot: Instant::now() - Duration::from_secs(10),
            init,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            if let Some(req) = signals() {
                if req.level == StopLevel::Kill {
                    tracing::warn!("{}: killing the workers now", req.signal);
                    run.kill_all(Signal::SIGKILL);
                    run.write_snapshot(true);
                    return Ok(Outcome::Interrupted);
                }
                run.begin_stop(req.signal, req.level);
            }
            run.housekeeping();
            if let Some(outcome) = run.finished() {
                run.shutdown_workers(&mut events).await;
                run.write_snapshot(true);
                run.progress.finish();
                return Ok(outcome);
            }
            tokio::select! {
                Some(ev) = events.recv() => run.on_event(ev),
                _ = tick.tick() => {}
            }
        }
    }
}

impl Run<'_> {
    fn finished(&self) -> Option<Outcome> {
        if self.stopping.is_some() {
            if self.slots.iter().all(|s| !s.alive()) {
                return Some(match &self.fatal {
                    Some(reason) => Outcome::Stopped {
                        reason: reason.clone(),
                    },
                    None => Outcome::Interrupted,
                });
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

    /// Stops assigning and stops the workers (`Drain` or `Terminate`; `Kill` is the loop's);
    /// a stronger level escalates a weaker one, a weaker or equal one changes nothing.
    pub(super) fn begin_stop(&mut self, why: &str, level: StopLevel) {
        if self.stopping.is_some_and(|l| l >= level) {
            return;
        }
        let grace_s = self.c.grace.as_secs_f64();
        match level {
            StopLevel::Drain => {
                tracing::warn!(
                    grace_s,
                    "{why}: draining; no new shards, each worker finishes and writes the batch in \
                     flight, then exits (SIGTERM after the grace); finished shards stay recorded"
                );
                let now = Instant::now();
                for s in &mut self.slots {
                    s.drain(now);
                }
            }
            StopLevel::Terminate | StopLevel::Kill => {
                tracing::warn!(
                    grace_s,
                    "{why}: stopping; no new shards, workers get SIGTERM, finished shards stay recorded"
                );
                self.kill_all(Signal::SIGTERM);
            }
        }
        self.stopping = Some(level);
    }

    fn kill_all(&mut self, sig: Signal) {
        let now = Instant::now();
        for s in &mut self.slots {
            s.terminate(sig, now);
        }
    }

    /// Spawns, assigns, detects hangs and escalates, writes the snapshot.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        let workers: Vec<_> = self.slots.iter().map(Slot::snapshot).collect();
        self.progress.tick(&workers);
        if self.stopping.is_some() {
            let grace = self.c.grace;
            for slot in &mut self.slots {
                if slot.drain_expired(now, grace) {
                    tracing::warn!(
                        worker = slot.id,
                        device = %slot.device,
                        "still draining after {:.0} s: SIGTERM",
                        grace.as_secs_f64()
                    );
                    slot.terminate(Signal::SIGTERM, now);
                } else if slot.kill_due(now, grace) {
                    slot.kill();
                }
            }
            self.write_snapshot(false);
            return;
        }
        let stall = self.job().run.stall_timeout;
        let kill_after = self.c.grace;
        let work_left = self.queue.pending_len() > 0;
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.stalled(now, stall) {
                let what = slot.doing();
                tracing::warn!(worker = slot.id, device = %slot.device, "no progress for {:.0} s ({what}): SIGTERM", stall.as_secs_f64());
                self.snap.push_error(format!(
                    "worker {} ({}) hung for {:.0} s ({what}); restarted",
                    slot.id,
                    slot.device,
                    stall.as_secs_f64()
                ));
                slot.terminate(Signal::SIGTERM, now);
            } else if slot.kill_due(now, kill_after) {
                slot.kill();
            }
            if self.slots[i].respawn_due(now) && work_left {
                self.spawn(i);
            }
        }
        self.assign();
        self.write_snapshot(false);
    }

    fn job(&self) -> &Job {
        self.c.job
    }

    /// Starts a worker in the dead slot `i` and sends it the settings.
    fn spawn(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.gen += 1;
        let spec = SpawnSpec {
            worker: slot.id,
            gen: slot.gen,
            device: &slot.device,
            log_dir: &self.c.log_dir,
            line_limit: spawner::line_limit(self.c.job.run.shard_size),
        };
        match self.spawner.spawn(spec, self.events_tx.clone()) {
            Ok(mut proc) => {
                tracing::info!(worker = slot.id, device = %slot.device, pid = proc.pid(), "worker started");
                proc.send(&self.init);
                slot.started(proc, Instant::now());
            }
            Err(e) => {
                slot.deaths_in_row += 1;
                self.snap.push_error(format!("worker {}: {e:#}", slot.id));
                self.after_death(i);
            }
        }
    }

    fn assign(&mut self) {
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
            slot.assign(shard, attempt, now);
        }
    }

    fn on_event(&mut self, ev: Event) {
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

    fn on_exit(&mut self, w: usize, status: String) {
        let slot = &mut self.slots[w];
        let exit = slot.exited();
        let stopped_by_us = self.stopping.is_some();
        // A worker the run stopped did not fail: its death does not count against its device.
        if exit.counts_as_death && !stopped_by_us {
            slot.deaths_in_row += 1;
        }
        let id = slot.id;
        let device = slot.device.to_string();
        if !stopped_by_us {
            tracing::warn!(worker = id, %device, "worker {status}");
        }
        for r in exit.lost {
            if stopped_by_us {
                // Interrupted, not failed: it runs again on resume, uncounted, and reuses the
                // PNGs this attempt wrote.
                tracing::info!(
                    "shard {} interrupted ({} of {} sampled): worker {id} ({device}) {status}",
                    r.shard,
                    r.sampled,
                    r.shard.len()
                );
                continue;
            }
            let msg = format!("shard {} lost: worker {id} ({device}) {status}", r.shard);
            self.attempt_failed(r, msg);
        }
        self.after_death(w);
    }

    fn after_death(&mut self, w: usize) {
        let slot = &mut self.slots[w];
        if slot.deaths_in_row >= QUARANTINE_AFTER {
            if slot.quarantine() {
                let msg = format!(
                    "device {} quarantined after {} failures in a row; the other devices carry on",
                    slot.device, slot.deaths_in_row
                );
                tracing::error!("{msg}");
                self.snap.push_error(msg);
            }
            if self.slots.iter().all(Slot::quarantined) {
                self.give_up_all("every device is quarantined");
            }
            return;
        }
        let wait = backoff(&self.c.job.run.retry, slot.deaths_in_row.max(1));
        slot.dead(Instant::now() + wait);
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
            s.shut_down();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.slots.iter().any(Slot::alive) {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::Exited { worker, gen, .. })) if self.slots[worker].gen == gen => {
                    self.slots[worker].exited();
                }
                Ok(Some(_)) => {}
                _ => {
                    self.kill_all(Signal::SIGKILL);
                    break;
                }
            }
        }
    }
}
