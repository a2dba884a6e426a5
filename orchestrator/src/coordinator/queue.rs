//! The shard queue: pending shards (lowest index first), retry backoff, attempt counts.
use crate::job::config::RetryPolicy;
use crate::job::plan::Shard;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(crate) struct Queue {
    /// Shards waiting, keyed by id, with the earliest time they may be handed out.
    pending: BTreeMap<u64, Instant>,
    shards: BTreeMap<u64, Shard>,
    /// Attempts made so far per shard (in this run plus those recorded before).
    attempts: BTreeMap<u64, u32>,
    policy: RetryPolicy,
    pub retries: u64,
}

/// What became of a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Retry { after: Duration },
    GiveUp { attempts: u32 },
}

impl Queue {
    pub fn new(todo: impl IntoIterator<Item = Shard>, policy: RetryPolicy) -> Self {
        let now = Instant::now();
        let mut q = Queue {
            pending: BTreeMap::new(),
            shards: BTreeMap::new(),
            attempts: BTreeMap::new(),
            policy,
            retries: 0,
        };
        for s in todo {
            q.pending.insert(s.id, now);
            q.shards.insert(s.id, s);
        }
        q
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The lowest-id shard that may run now, with its attempt number (1-based).
    pub fn pop_ready(&mut self, now: Instant) -> Option<(Shard, u32)> {
        let id = self
            .pending
            .iter()
            .find(|(_, &t)| t <= now)
            .map(|(&id, _)| id)?;
        self.pending.remove(&id);
        let attempt = self.attempts.get(&id).copied().unwrap_or(0) + 1;
        Some((self.shards[&id], attempt))
    }

    /// Counts a failed attempt and either schedules a retry with exponential backoff or
    /// gives up once `retry.attempts` are spent.
    pub fn failed(&mut self, shard: Shard) -> Verdict {
        let n = self.attempts.entry(shard.id).or_insert(0);
        *n += 1;
        let n = *n;
        if n >= self.policy.attempts {
            return Verdict::GiveUp { attempts: n };
        }
        self.retries += 1;
        let after = backoff(&self.policy, n);
        self.shards.insert(shard.id, shard);
        self.pending.insert(shard.id, Instant::now() + after);
        Verdict::Retry { after }
    }

    pub fn attempts(&self, id: u64) -> u32 {
        self.attempts.get(&id).copied().unwrap_or(0)
    }

    /// Remaining shards that were never handed out or are waiting for a retry.
    pub fn drain(&mut self) -> Vec<Shard> {
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        self.pending.clear();
        ids.into_iter().map(|id| self.shards[&id]).collect()
    }
}

/// `backoff * 2^(n-1)`, capped at `backoff_max`.
pub(crate) fn backoff(policy: &RetryPolicy, n: u32) -> Duration {
    let doubled = policy
        .backoff
        .saturating_mul(1u32 << n.saturating_sub(1).min(30));
    doubled.min(policy.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::plan::plan;

    #[test]
    fn retries_with_backoff_then_gives_up() {
        let policy = RetryPolicy {
            attempts: 3,
            backoff: Duration::ZERO,
            backoff_max: Duration::ZERO,
        };
        let mut q = Queue::new(plan(30, 10), policy);
        let now = Instant::now();
        let (s0, a) = q.pop_ready(now).unwrap();
        assert_eq!((s0.id, a), (0, 1));
        assert_eq!(
            q.failed(s0),
            Verdict::Retry {
                after: Duration::ZERO
            }
        );
        // The lowest id goes first, so the retried shard 0 comes before 1.
        let (s, a) = q.pop_ready(Instant::now()).unwrap();
        assert_eq!((s.id, a), (0, 2));
        assert!(matches!(q.failed(s), Verdict::Retry { .. }));
        let (s, a) = q.pop_ready(Instant::now()).unwrap();
        assert_eq!((s.id, a), (0, 3));
        assert_eq!(q.failed(s), Verdict::GiveUp { attempts: 3 });
        assert_eq!(q.pending_len(), 2);
        assert_eq!(q.retries, 2);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            attempts: 9,
            backoff: Duration::from_secs(2),
            backoff_max: Duration::from_secs(10),
        };
        let secs: Vec<f64> = (1..6).map(|n| backoff(&p, n).as_secs_f64()).collect();
        assert_eq!(secs, vec![2.0, 4.0, 8.0, 10.0, 10.0]);
        let mut q = Queue::new(plan(5, 5), p);
        let (s, _) = q.pop_ready(Instant::now()).unwrap();
        q.failed(s);
        assert!(
            q.pop_ready(Instant::now()).is_none(),
            "not before its backoff"
        );
    }
}
