//! A shard: consecutive sample indices `[start, end)`, the unit of work a coordinator hands to a
//! worker and records when done. The plan that cuts a job into shards is the coordinator's
//! (`orchestrator/src/job/plan.rs`).
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    pub id: u64,
    pub start: u64,
    /// Exclusive.
    pub end: u64,
}

impl Shard {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub fn indices(&self) -> std::ops::Range<u64> {
        self.start..self.end
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{} [{}..{})", self.id, self.start, self.end)
    }
}
