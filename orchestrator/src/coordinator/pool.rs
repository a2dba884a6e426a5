//! The coordinator's view of its workers: one slot per device. A slot is in exactly one
//! [`SlotState`], each with the data that state needs (the process only while there is one,
//! the held shards only while busy or terminating, the respawn time only while dead), and moves
//! between them through the methods below. Across states it keeps its generation (spawn count)
//! and the crash accounting that quarantines a device whose worker keeps dying.
//!
//! A preempted run (SIGUSR1) drains: Idle | Busy -> `Draining` (the worker was sent `drain`:
//! it finishes and writes the batch in flight, then exits), and after the grace -> `Terminating`.
use super::held::Held;
pub(crate) use super::held::Running;
use super::spawner::WorkerHandle;
use crate::job::devices::WorkerDevice;
use crate::job::plan::Shard;
use crate::outdir::snapshot::{WorkerSnapshot, WorkerState};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// Consecutive deaths without finishing a shard after which a device is quarantined.
pub(crate) const QUARANTINE_AFTER: u32 = 3;

type Handle = Box<dyn WorkerHandle>;

pub(crate) enum SlotState {
    /// Started, loading the model: gets no shard until it says `ready`.
    Loading {
        proc: Handle,
        last_progress: Instant,
    },
    /// Loaded and holding nothing.
    Idle { proc: Handle },
    /// Holding at least one shard.
    Busy {
        proc: Handle,
        held: Held,
        last_progress: Instant,
    },
    /// Sent `drain` (the run is being preempted): it finishes and writes the batch in flight,
    /// then exits 0. Gets no shard; SIGTERM follows after the grace period
    /// ([`Slot::drain_expired`]). What it still holds is lost when it exits (its written PNGs
    /// are reused when the shard is assigned again), unless it reports it done first.
    Draining {
        proc: Handle,
        since: Instant,
        held: Held,
    },
    /// Sent SIGTERM (a hang, or the run stopping); SIGKILL follows after the grace period. What
    /// it still holds is lost when it exits, unless it reports it done first.
    Terminating {
        proc: Handle,
        since: Instant,
        held: Held,
        /// It had not loaded yet (its death then counts against the device).
        loading: bool,
    },
    /// No process; a new one is started from `respawn_at` on, while work is left.
    Dead { respawn_at: Instant },
    /// Failed too often; gets no more workers.
    Quarantined,
}

/// What a worker left behind when its process ended.
pub(crate) struct Exit {
    pub lost: Vec<Running>,
    /// It died before it loaded, or while holding shards: a failure of the device.
    pub counts_as_death: bool,
}

pub(crate) struct Slot {
    pub id: usize,
    pub device: WorkerDevice,
    /// Incremented per spawn; events of an earlier process are ignored.
    pub gen: u64,
    pub deaths_in_row: u32,
    /// The micro-batch the worker last reported (it shrinks after an out-of-memory error).
    pub micro_batch: Option<usize>,
    state: SlotState,
}

impl Slot {
    pub fn new(id: usize, device: WorkerDevice) -> Slot {
        Slot {
            id,
            device,
            gen: 0,
            deaths_in_row: 0,
            micro_batch: None,
            state: SlotState::Dead {
                respawn_at: Instant::now(),
            },
        }
    }

    fn proc(&self) -> Option<&Handle> {
        match &self.state {
            SlotState::Loading { proc, .. }
            | SlotState::Idle { proc }
            | SlotState::Busy { proc, .. }
            | SlotState::Draining { proc, .. }
            | SlotState::Terminating { proc, .. } => Some(proc),
            SlotState::Dead { .. } | SlotState::Quarantined => None,
        }
    }

    fn proc_mut(&mut self) -> Option<&mut Handle> {
        match &mut self.state {
            SlotState::Loading { proc, .. }
            | SlotState::Idle { proc }
            | SlotState::Busy { proc, .. }
            | SlotState::Draining { proc, .. }
            | SlotState::Terminating { proc, .. } => Some(proc),
            SlotState::Dead { .. } | SlotState::Quarantined => None,
        }
    }

    pub fn alive(&self) -> bool {
        self.proc().is_some()
    }

    pub fn quarantined(&self) -> bool {
        matches!(self.state, SlotState::Quarantined)
    }

    /// Holds at least one shard.
    pub fn busy(&self) -> bool {
        match &self.state {
            SlotState::Busy { .. } => true,
            SlotState::Draining { held, .. } | SlotState::Terminating { held, .. } => {
                !held.is_empty()
            }
            _ => false,
        }
    }

    /// The shards held (for the snapshot's count).
    pub fn held_len(&self) -> usize {
        match &self.state {
            SlotState::Busy { held, .. }
            | SlotState::Draining { held, .. }
            | SlotState::Terminating { held, .. } => held.len(),
            _ => 0,
        }
    }

    /// Dead, and its respawn time has come.
    pub fn respawn_due(&self, now: Instant) -> bool {
        matches!(self.state, SlotState::Dead { respawn_at } if respawn_at <= now)
    }

    /// Dead -> Loading: a new process was started.
    pub fn started(&mut self, proc: Handle, now: Instant) {
        debug_assert!(!self.alive() && !self.quarantined());
        self.state = SlotState::Loading {
            proc,
            last_progress: now,
        };
    }

    /// Ready for a shard: loaded, nothing being sampled, at most one shard being written.
    pub fn can_take(&self) -> bool {
        match &self.state {
            SlotState::Idle { .. } => true,
            SlotState::Busy { held, .. } => held.can_take(),
            _ => false,
        }
    }

    /// Idle | Busy -> Busy with `shard` being sampled; sends the assignment.
    pub fn assign(&mut self, shard: Shard, attempt: u32, now: Instant) {
        debug_assert!(self.can_take());
        let run = Running {
            shard,
            attempt,
            sampled: 0,
        };
        self.state = match std::mem::replace(&mut self.state, SlotState::Quarantined) {
            SlotState::Idle { proc } => SlotState::Busy {
                proc,
                held: Held::sampling(run),
                last_progress: now,
            },
            SlotState::Busy { proc, mut held, .. } => {
                held.start(run);
                SlotState::Busy {
                    proc,
                    held,
                    last_progress: now,
                }
            }
            other => other,
        };
        let msg = fidshard_core::protocol::ToWorker::Assign { shard, attempt };
        if let Some(p) = self.proc_mut() {
            p.send(&msg);
        }
    }

    /// Any message from the worker: it is alive and making progress.
    pub fn heard_from(&mut self, now: Instant) {
        match &mut self.state {
            SlotState::Loading { last_progress, .. } | SlotState::Busy { last_progress, .. } => {
                *last_progress = now
            }
            _ => {}
        }
    }

    /// Loading -> Idle. (A terminating worker stays terminating; a draining one was loaded.)
    pub fn ready(&mut self) {
        self.state = match std::mem::replace(&mut self.state, SlotState::Quarantined) {
            SlotState::Loading { proc, .. } => SlotState::Idle { proc },
            SlotState::Terminating {
                proc, since, held, ..
            } => SlotState::Terminating {
                proc,
                since,
                held,
                loading: false,
            },
            other => other,
        };
    }

    /// Records sampling progress of shard `id`; returns the samples newly sampled.
    pub fn progress(&mut self, id: u64, sampled: u64, total: u64) -> u64 {
        match &mut self.state {
            SlotState::Busy { held, .. }
            | SlotState::Draining { held, .. }
            | SlotState::Terminating { held, .. } => held.progress(id, sampled, total),
            _ => 0,
        }
    }

    /// Removes and returns the shard `id` if this worker holds it; Busy -> Idle when it was the
    /// last one.
    pub fn take_shard(&mut self, id: u64) -> Option<Running> {
        let (taken, now_empty) = match &mut self.state {
            SlotState::Busy { held, .. } => {
                let r = held.take(id);
                (r, held.is_empty())
            }
            SlotState::Draining { held, .. } | SlotState::Terminating { held, .. } => {
                (held.take(id), false)
            }
            _ => (None, false),
        };
        if now_empty {
            if let SlotState::Busy { proc, .. } =
                std::mem::replace(&mut self.state, SlotState::Quarantined)
            {
                self.state = SlotState::Idle { proc };
            }
        }
        taken
    }

    /// Loading or busy, and silent for longer than `timeout`.
    pub fn stalled(&self, now: Instant, timeout: Duration) -> bool {
        match &self.state {
            SlotState::Loading { last_progress, .. } | SlotState::Busy { last_progress, .. } => {
                now.duration_since(*last_progress) > timeout
            }
            _ => false,
        }
    }

    /// What a stalled worker was doing, for the messages.
    pub fn doing(&self) -> String {
        match &self.state {
            SlotState::Busy { held, .. } => match held.in_sampling() {
                Some(r) => format!("shard {}", r.shard),
                None => "writing".to_string(),
            },
            SlotState::Loading { .. } => "loading".to_string(),
            _ => "writing".to_string(),
        }
    }

    /// Signals the worker; a live one that is not yet terminating becomes Terminating (SIGKILL
    /// follows after the grace period, see [`Slot::kill_due`]).
    pub fn terminate(&mut self, sig: Signal, now: Instant) {
        let Some(p) = self.proc() else { return };
        p.signal(sig);
        self.state = match std::mem::replace(&mut self.state, SlotState::Quarantined) {
            SlotState::Loading { proc, .. } => SlotState::Terminating {
                proc,
                since: now,
                held: Held::default(),
                loading: true,
            },
            SlotState::Idle { proc } => SlotState::Terminating {
                proc,
                since: now,
                held: Held::default(),
                loading: false,
            },
            SlotState::Busy { proc, held, .. } | SlotState::Draining { proc, held, .. } => {
                SlotState::Terminating {
                    proc,
                    since: now,
                    held,
                    loading: false,
                }
            }
            other => other,
        };
    }

    /// Sends `drain`: Idle | Busy -> Draining (SIGTERM follows after the grace period, see
    /// [`Slot::drain_expired`]). A loading worker has nothing in flight and gets SIGTERM now.
    pub fn drain(&mut self, now: Instant) {
        if matches!(self.state, SlotState::Loading { .. }) {
            self.terminate(Signal::SIGTERM, now);
            return;
        }
        self.state = match std::mem::replace(&mut self.state, SlotState::Quarantined) {
            SlotState::Idle { proc } => SlotState::Draining {
                proc,
                since: now,
                held: Held::default(),
            },
            SlotState::Busy { proc, held, .. } => SlotState::Draining {
                proc,
                since: now,
                held,
            },
            other => other,
        };
        if let SlotState::Draining { proc, .. } = &mut self.state {
            proc.send(&fidshard_core::protocol::ToWorker::Drain);
        }
    }

    /// Draining for longer than `grace`: time for SIGTERM.
    pub fn drain_expired(&self, now: Instant, grace: Duration) -> bool {
        matches!(self.state, SlotState::Draining { since, .. } if now.duration_since(since) > grace)
    }

    /// Terminating for longer than `grace`: time for SIGKILL.
    pub fn kill_due(&self, now: Instant, grace: Duration) -> bool {
        matches!(self.state, SlotState::Terminating { since, .. } if now.duration_since(since) > grace)
    }

    /// Sends SIGKILL (without changing state; the exit event follows).
    pub fn kill(&self) {
        if let Some(p) = self.proc() {
            p.signal(Signal::SIGKILL);
        }
    }

    /// Asks a live worker to exit after what it holds, and ends its input.
    pub fn shut_down(&mut self) {
        if let Some(p) = self.proc_mut() {
            p.send(&fidshard_core::protocol::ToWorker::Shutdown);
            p.close();
        }
    }

    /// The process ended: any live state -> Dead (respawn now; [`Slot::dead`] or
    /// [`Slot::quarantine`] decide). Returns what it held.
    pub fn exited(&mut self) -> Exit {
        let old = std::mem::replace(
            &mut self.state,
            SlotState::Dead {
                respawn_at: Instant::now(),
            },
        );
        let (held, loading) = match old {
            SlotState::Loading { .. } => (Held::default(), true),
            SlotState::Busy { held, .. } | SlotState::Draining { held, .. } => (held, false),
            SlotState::Terminating { held, loading, .. } => (held, loading),
            SlotState::Idle { .. } | SlotState::Dead { .. } => (Held::default(), false),
            SlotState::Quarantined => {
                self.state = SlotState::Quarantined;
                (Held::default(), false)
            }
        };
        let lost = held.into_vec();
        Exit {
            counts_as_death: loading || !lost.is_empty(),
            lost,
        }
    }

    /// -> Dead, to be respawned at `respawn_at`.
    pub fn dead(&mut self, respawn_at: Instant) {
        debug_assert!(!self.alive());
        self.state = SlotState::Dead { respawn_at };
    }

    /// -> Quarantined. Returns false if it already was.
    pub fn quarantine(&mut self) -> bool {
        debug_assert!(!self.alive());
        !matches!(
            std::mem::replace(&mut self.state, SlotState::Quarantined),
            SlotState::Quarantined
        )
    }

    pub fn snapshot(&self) -> WorkerSnapshot {
        let (state, current) = match &self.state {
            SlotState::Loading { .. } => (WorkerState::Loading, None),
            SlotState::Idle { .. } => (WorkerState::Idle, None),
            SlotState::Busy { held, .. } => (WorkerState::Busy, held.current()),
            SlotState::Draining { held, .. } => {
                let state = if held.is_empty() {
                    WorkerState::Idle
                } else {
                    WorkerState::Busy
                };
                (state, held.current())
            }
            SlotState::Terminating { held, loading, .. } => {
                let state = match (held.is_empty(), loading) {
                    (false, _) => WorkerState::Busy,
                    (true, true) => WorkerState::Loading,
                    (true, false) => WorkerState::Idle,
                };
                (state, held.current())
            }
            SlotState::Dead { .. } => (WorkerState::Dead, None),
            SlotState::Quarantined => (WorkerState::Quarantined, None),
        };
        WorkerSnapshot {
            id: self.id,
            device: self.device.to_string(),
            pid: self.proc().map(|p| p.pid()),
            state,
            shard: current.map(|r| r.shard),
            progress: current.map(|r| (r.sampled, r.shard.len())),
            batch: self.micro_batch,
        }
    }
}
