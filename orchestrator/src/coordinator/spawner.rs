//! The seam between the event loop and its workers. The loop starts workers through a
//! [`Spawner`] and talks to each through a [`WorkerHandle`]; everything a worker says comes back
//! as an [`Event`] on the loop's channel. `spawn.rs` implements it with real processes; the
//! tests (`fake.rs`) with scripted in-process workers.
use crate::job::devices::WorkerDevice;
use anyhow::Result;
use fidshard_core::protocol::{FromWorker, ToWorker};
use nix::sys::signal::Signal;
use std::path::Path;
use tokio::sync::mpsc::UnboundedSender;

/// What a worker reports, tagged with its slot and the generation (spawn count) of that slot,
/// so that late events of an earlier process are told apart.
#[derive(Debug)]
pub(crate) enum Event {
    Msg {
        worker: usize,
        gen: u64,
        msg: FromWorker,
    },
    Exited {
        worker: usize,
        gen: u64,
        status: String,
    },
}

/// Which worker to start, and where it logs.
pub(crate) struct SpawnSpec<'a> {
    pub worker: usize,
    pub gen: u64,
    pub device: &'a WorkerDevice,
    pub log_dir: &'a Path,
    /// The longest output line the worker may send (see [`line_limit`]).
    pub line_limit: usize,
}

/// The longest line a worker may send for shards of `shard_size` samples: its largest
/// message, `shard_done`, carries a CRC32 and a label per sample (at most about 17 bytes
/// each); 64 KiB + 32 bytes per sample leaves room and bounds the coordinator's memory. A
/// longer line is a misbehaving worker: it is killed and its shards are retried.
pub(crate) fn line_limit(shard_size: u64) -> usize {
    (64 << 10) + 32 * shard_size as usize
}

/// Starts workers. A started worker reports through `events` and ends with exactly one
/// `Event::Exited` (after its last message).
pub(crate) trait Spawner {
    fn spawn(
        &mut self,
        spec: SpawnSpec<'_>,
        events: UnboundedSender<Event>,
    ) -> Result<Box<dyn WorkerHandle>>;
}

/// The coordinator's end of one worker. None of these block: a worker that does not read or
/// does not die shows up later as an exit, a stall or a missing event, never as a wait.
pub(crate) trait WorkerHandle {
    /// The process id (for the snapshot and the log).
    fn pid(&self) -> u32;
    /// Queues one message; one that cannot be delivered is dropped (the exit event follows).
    fn send(&mut self, msg: &ToWorker);
    /// Ends the worker's input once queued messages are delivered: the worker exits.
    fn close(&mut self);
    /// Signals the worker (its whole process group).
    fn signal(&self, sig: Signal);
}
