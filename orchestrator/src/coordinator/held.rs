//! The shards a worker holds: the one it samples and those whose PNGs it still writes.
use crate::job::plan::Shard;

/// One attempt at a shard, held by a worker.
pub(crate) struct Running {
    pub shard: Shard,
    pub attempt: u32,
    pub sampled: u64,
}

/// The shards a worker holds: at most one being sampled, and those fully sampled whose PNGs
/// are still being written.
#[derive(Default)]
pub(crate) struct Held {
    sampling: Option<Running>,
    writing: Vec<Running>,
}

impl Held {
    pub(super) fn sampling(run: Running) -> Held {
        Held {
            sampling: Some(run),
            writing: Vec::new(),
        }
    }

    /// Room for another shard: nothing being sampled, at most one shard being written.
    pub(super) fn can_take(&self) -> bool {
        self.sampling.is_none() && self.writing.len() <= 1
    }

    pub(super) fn start(&mut self, run: Running) {
        debug_assert!(self.can_take());
        self.sampling = Some(run);
    }

    /// The shard being sampled.
    pub(super) fn in_sampling(&self) -> Option<&Running> {
        self.sampling.as_ref()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.sampling.is_none() && self.writing.is_empty()
    }

    pub(super) fn current(&self) -> Option<&Running> {
        self.sampling.as_ref().or(self.writing.first())
    }

    pub(super) fn len(&self) -> usize {
        self.sampling.iter().count() + self.writing.len()
    }

    pub(super) fn take(&mut self, id: u64) -> Option<Running> {
        if self.sampling.as_ref().map(|r| r.shard.id) == Some(id) {
            return self.sampling.take();
        }
        let pos = self.writing.iter().position(|r| r.shard.id == id)?;
        Some(self.writing.remove(pos))
    }

    /// Records sampling progress; returns the samples newly sampled.
    pub(super) fn progress(&mut self, id: u64, sampled: u64, total: u64) -> u64 {
        let Some(r) = self.sampling.as_mut().filter(|r| r.shard.id == id) else {
            return 0;
        };
        let newly = sampled.saturating_sub(r.sampled);
        r.sampled = sampled;
        if sampled >= total {
            let r = self.sampling.take().expect("checked above");
            self.writing.push(r);
        }
        newly
    }

    pub(super) fn into_vec(self) -> Vec<Running> {
        self.sampling.into_iter().chain(self.writing).collect()
    }
}
