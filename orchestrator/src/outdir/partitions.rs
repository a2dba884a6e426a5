//! The out dir of a job run as partitions (job/partition.rs): each partition's state lives in
//! `OUT/partitions/K-of-N/` (the same files as a one-node run's, so every state operation works
//! unchanged there); when a partition has done all its shards it exports its records to
//! `records.json` beside its state, and the one `samples.npz` is assembled from all N exports.
//!
//! Changing N never redoes recorded work: a coordinator imports the records of every other
//! layout (another N, or the one-node state at the root) that cover its shards, and refuses
//! to start while a coordinator of another layout runs.
use super::lock::{JobLock, Probe};
use super::state::{ShardRecord, StateDb};
use super::OutDir;
use crate::job::config::Job;
use crate::job::partition::Partition;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a complete partition leaves for the assembler.
#[derive(Debug, Serialize, Deserialize)]
struct Export {
    partition: String,
    records: Vec<ShardRecord>,
}

/// Every partition state dir under `OUT/partitions/`, with its partition.
pub(crate) fn list(out: &Path) -> Vec<(Partition, PathBuf)> {
    let mut found: Vec<(Partition, PathBuf)> = std::fs::read_dir(OutDir::new(out).partitions())
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let p = Partition::from_tag(&e.file_name().to_string_lossy())?;
                    Some((p, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|(p, _)| (p.n, p.k));
    found
}

/// Writes `records` as partition `p`'s export (temp + rename).
pub(crate) fn export(job: &Job, records: Vec<ShardRecord>) -> Result<()> {
    let path = OutDir::new(job.state_dir()).records();
    let text = serde_json::to_vec(&Export {
        partition: job.partition.to_string(),
        records,
    })?;
    fidshard_core::output::write_atomic(&path, &text)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The exports of the N partitions of `job`'s layout: every record in shard order, or the
/// partitions that have not exported yet.
pub(crate) fn merged(job: &Job) -> Result<std::result::Result<Vec<ShardRecord>, Vec<Partition>>> {
    let n = job.partition.n;
    let mut missing = Vec::new();
    let mut all: BTreeMap<u64, ShardRecord> = BTreeMap::new();
    for k in 0..n {
        let p = Partition { k, n };
        let path = OutDir::new(OutDir::new(&job.out_dir).state_dir(p)).records();
        let Ok(bytes) = std::fs::read(&path) else {
            missing.push(p);
            continue;
        };
        let e: Export = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: unreadable export", path.display()))?;
        for r in e.records {
            all.insert(r.shard.id, r);
        }
    }
    if !missing.is_empty() {
        return Ok(Err(missing));
    }
    let total = job.total_shard_count();
    if all.len() as u64 != total || all.keys().next_back().is_some_and(|&k| k + 1 != total) {
        anyhow::bail!(
            "the exports of the {n} partitions cover {} of the {total} shards; run the partitions again",
            all.len()
        );
    }
    Ok(Ok(all.into_values().collect()))
}

/// State dirs of other layouts than `job`'s: the root's one-node state (for a partition) and
/// partitions of another N (for anyone).
fn other_layouts(job: &Job) -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    if !job.partition.is_whole() && StateDb::exists(&job.out_dir) {
        v.push(("the one-node run (0/1)".to_string(), job.out_dir.clone()));
    }
    for (p, dir) in list(&job.out_dir) {
        if p.n != job.partition.n || job.partition.is_whole() {
            v.push((format!("partition {p}"), dir));
        }
    }
    v
}

/// Imports into `db` the records of other layouts that cover this partition's shards (the
/// shard ids are the same: `shard_size` is part of the fingerprint). Refuses (exit 2) while a
/// coordinator of another layout is running: all partitions of a job must share one N.
pub(crate) fn import_other_layouts(job: &Job, db: &StateDb) -> Result<u64> {
    let mine = job.partition.shards(job.total_shard_count());
    let have: std::collections::HashSet<u64> =
        db.done_records()?.iter().map(|r| r.shard.id).collect();
    let mut imported = 0u64;
    for (what, dir) in other_layouts(job) {
        match JobLock::probe(&dir).map_err(|e| e.fatal())? {
            Probe::Held(h) => {
                return Err(fidshard_core::input_error!(
                    "{}: {what} of this job is running (pid {}{}) with another number of partitions than {}; all partitions of a job must use the same N: wait for it or stop it (its recorded shards are kept either way)",
                    job.out_dir.display(),
                    h.pid,
                    if h.hostname.is_empty() { String::new() } else { format!(" on {}", h.hostname) },
                    job.partition
                ));
            }
            Probe::Free(_guard) => {
                if !StateDb::exists(&dir) {
                    continue;
                }
                let other = StateDb::open(&dir).map_err(|e| e.fatal())?;
                let records: Vec<ShardRecord> = other
                    .done_records()?
                    .into_iter()
                    .filter(|r| mine.contains(&r.shard.id) && !have.contains(&r.shard.id))
                    .collect();
                drop(other);
                if !records.is_empty() {
                    tracing::info!(
                        shards = records.len(),
                        "imported the shards that {what} recorded (changing the number of partitions redoes no recorded work)"
                    );
                    imported += records.len() as u64;
                    db.record_done_many(&records).map_err(|e| e.fatal())?;
                }
            }
        }
    }
    Ok(imported)
}

/// The exclusive lock of the final assembly of a partitioned job (held while it lasts).
pub(crate) struct AssembleLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl AssembleLock {
    /// Waits for the lock: two partitions finishing together never both write the npz.
    pub fn take(out: &Path) -> Result<AssembleLock> {
        let path = OutDir::new(out).assemble_lock();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))?;
        Ok(AssembleLock(lock))
    }
}

/// The records partition state dir `dir` exported when it completed, if it has.
pub(crate) fn exported(dir: &Path) -> Result<Option<Vec<ShardRecord>>> {
    let path = OutDir::new(dir).records();
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    let e: Export = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: unreadable export", path.display()))?;
    Ok(Some(e.records))
}
