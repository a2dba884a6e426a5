//! The coordinator's view of its workers: one slot per device, the process in it, the shards
//! it holds, and the crash accounting that quarantines a device whose worker keeps dying.
use super::spawn::Proc;
use crate::job::devices::WorkerDevice;
use crate::job::plan::Shard;
use crate::outdir::snapshot::{WorkerSnapshot, WorkerState};
use std::time::{Duration, Instant};

/// Consecutive deaths without finishing a shard after which a device is quarantined.
pub(crate) const QUARANTINE_AFTER: u32 = 3;

pub(crate) struct Running {
    pub shard: Shard,
    pub attempt: u32,
    pub sampled: u64,
}

pub(crate) struct Slot {
    pub id: usize,
    pub device: WorkerDevice,
    pub proc: Option<Proc>,
    /// Incremented per spawn; events of an earlier process are ignored.
    pub gen: u64,
    pub state: WorkerState,
    /// The shard being sampled.
    pub sampling: Option<Running>,
    /// Shards fully sampled whose PNGs are still being written.
    pub writing: Vec<Running>,
    pub last_progress: Instant,
    pub deaths_in_row: u32,
    pub respawn_at: Option<Instant>,
    /// When we sent SIGTERM (hang or shutdown); SIGKILL follows after the grace period.
    pub terminating_since: Option<Instant>,
    pub micro_batch: Option<usize>,
}

impl Slot {
    pub fn new(id: usize, device: WorkerDevice) -> Slot {
        Slot {
            id,
            device,
            proc: None,
            gen: 0,
            state: WorkerState::Dead,
            sampling: None,
            writing: Vec::new(),
            last_progress: Instant::now(),
            deaths_in_row: 0,
            respawn_at: Some(Instant::now()),
            terminating_since: None,
            micro_batch: None,
        }
    }

    pub fn alive(&self) -> bool {
        self.proc.is_some()
    }

    /// Ready for a shard: loaded, nothing being sampled, at most one shard being written.
    pub fn can_take(&self) -> bool {
        self.alive()
            && self.terminating_since.is_none()
            && matches!(self.state, WorkerState::Idle | WorkerState::Busy)
            && self.sampling.is_none()
            && self.writing.len() <= 1
    }

    pub fn busy(&self) -> bool {
        self.sampling.is_some() || !self.writing.is_empty()
    }

    /// Takes every shard this worker holds (it died or was stopped).
    pub fn take_shards(&mut self) -> Vec<Running> {
        let mut v: Vec<Running> = self.sampling.take().into_iter().collect();
        v.append(&mut self.writing);
        v
    }

    /// Removes and returns the shard `id` if this worker holds it.
    pub fn take_shard(&mut self, id: u64) -> Option<Running> {
        if self.sampling.as_ref().map(|r| r.shard.id) == Some(id) {
            return self.sampling.take();
        }
        let pos = self.writing.iter().position(|r| r.shard.id == id)?;
        Some(self.writing.remove(pos))
    }

    pub fn stalled(&self, now: Instant, timeout: Duration) -> bool {
        let waiting_for_load = self.state == WorkerState::Loading;
        (self.busy() || waiting_for_load)
            && self.terminating_since.is_none()
            && now.duration_since(self.last_progress) > timeout
    }

    pub fn snapshot(&self) -> WorkerSnapshot {
        let current = self.sampling.as_ref().or(self.writing.first());
        WorkerSnapshot {
            id: self.id,
            device: self.device.to_string(),
            pid: self.proc.as_ref().map(|p| p.pid),
            state: self.state,
            shard: current.map(|r| r.shard),
            progress: current.map(|r| (r.sampled, r.shard.len())),
        }
    }
}
