//! The out dir of a job run as partitions (job/partition.rs): each partition's state lives in
//! `OUT/partitions/K-of-N/` (the same files as a one-node run's, so every state operation works
//! unchanged there); when a partition has done all its shards it exports its records to
//! `records.json` beside its state, and the one `samples.npz` is assembled from all N exports.
//!
//! Changing N never redoes recorded work: a coordinator imports the records of every other
//! layout (another N, or the one-node state at the root) that cover its shards, and refuses
//! to start while a coordinator of another layout runs.
use super::lock::{JobLock, Probe};
use super::state::{saved_fingerprint, ShardRecord, StateDb, StateError};
use super::OutDir;
use crate::job::config::Job;
use crate::job::fingerprint::Fingerprint;
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

/// Writes the records of `job`'s partition's shards as its export (temp + rename). Records
/// of other shards (the DB of a job that shrank, or of another layout) stay out of it.
pub(crate) fn export(job: &Job, mut records: Vec<ShardRecord>) -> Result<()> {
    let plan = job.plan();
    records.retain(|r| plan.contains(&r.shard));
    let path = OutDir::new(job.state_dir()).records();
    let text = serde_json::to_vec(&Export {
        partition: job.partition.to_string(),
        records,
    })?;
    fidshard_core::output::write_atomic(&path, &text)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The records partition `p` exported, if it exported exactly its shards of the current plan
/// (`num_samples` in shards of `shard_size`); an export of an earlier size of the job is stale
/// (the partition must run again) and counts as none.
pub(crate) fn valid_export(
    out: &Path,
    p: Partition,
    num_samples: u64,
    shard_size: u64,
) -> Result<Option<Vec<ShardRecord>>> {
    let path = OutDir::new(OutDir::new(out).state_dir(p)).records();
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    let e: Export = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: unreadable export", path.display()))?;
    let plan = crate::job::plan::plan(num_samples, shard_size);
    let mine = p.shards(plan.len() as u64);
    let fits = e.records.len() as u64 == mine.end - mine.start
        && e.records.iter().all(|r| {
            mine.contains(&r.shard.id)
                && plan.get(r.shard.id as usize) == Some(&r.shard)
                && r.crc32.len() as u64 == r.shard.len()
                && r.labels.len() as u64 == r.shard.len()
        });
    Ok(fits.then_some(e.records))
}

/// The exports of the N partitions of `job`'s layout: every record in shard order, or the
/// partitions that have not exported yet (or exported for another size of the job).
pub(crate) fn merged(job: &Job) -> Result<std::result::Result<Vec<ShardRecord>, Vec<Partition>>> {
    merged_in(
        &job.out_dir,
        job.partition.n,
        job.settings.num_samples,
        job.run.shard_size,
    )
}

/// [`merged`] for the out dir `out` of a job of `num_samples` in shards of `shard_size`, run as
/// `n` partitions (`status` has no job file).
pub(crate) fn merged_in(
    out: &Path,
    n: u32,
    num_samples: u64,
    shard_size: u64,
) -> Result<std::result::Result<Vec<ShardRecord>, Vec<Partition>>> {
    let mut missing = Vec::new();
    let mut all: BTreeMap<u64, ShardRecord> = BTreeMap::new();
    for k in 0..n {
        let p = Partition { k, n };
        match valid_export(out, p, num_samples, shard_size)? {
            Some(records) => all.extend(records.into_iter().map(|r| (r.shard.id, r))),
            None => missing.push(p),
        }
    }
    if !missing.is_empty() {
        return Ok(Err(missing));
    }
    Ok(Ok(all.into_values().collect()))
}

/// The job's fingerprint, shared by every coordinator of the out dir in `OUT/fingerprint.json`:
/// written the first time (atomically, the first writer wins), compared by every later
/// partition and whole-job run. Another job is refused (exit 2, naming what changed) before
/// anything is sampled; a change of `num_samples` alone is the job growing or shrinking (image
/// i does not depend on it) and replaces the record.
pub(crate) fn bind_fingerprint(out: &Path, fp: &Fingerprint) -> Result<()> {
    let path = OutDir::new(out).fingerprint();
    for _ in 0..3 {
        match compare(out, fp)? {
            Some(true) => return Ok(()),
            Some(false) => {
                let text = serde_json::to_vec_pretty(fp)?;
                return fidshard_core::output::write_atomic(&path, &text)
                    .with_context(|| format!("writing {}", path.display()));
            }
            // Another partition may write it first: then compare with that one.
            None if create_new(&path, fp)? => return Ok(()),
            None => {}
        }
    }
    anyhow::bail!("{}: cannot be read back", path.display())
}

/// [`bind_fingerprint`]'s refusal without writing anything (before a state is opened).
pub(crate) fn check_fingerprint(out: &Path, fp: &Fingerprint) -> Result<()> {
    compare(out, fp).map(drop)
}

/// `None`: no shared fingerprint yet; `Some(true)`: the same job; `Some(false)`: the same job
/// with another `num_samples`; another job is an error naming what changed (exit 2).
fn compare(out: &Path, fp: &Fingerprint) -> Result<Option<bool>> {
    let Some(saved) = saved_fingerprint(out) else {
        return Ok(None);
    };
    let changed = saved.diff(fp);
    if changed.is_empty() {
        return Ok(Some(true));
    }
    let n = |f: &Fingerprint| f.get("num_samples").and_then(|v| v.parse::<u64>().ok());
    let resized = changed.iter().all(|(k, _, _)| k == "num_samples")
        && matches!((n(&saved), n(fp)), (Some(a), Some(b))
            if fidshard_core::output::png_name(0, a) == fidshard_core::output::png_name(0, b));
    if resized {
        return Ok(Some(false));
    }
    Err(StateError::FingerprintChanged {
        out_dir: out.to_path_buf(),
        changed,
    }
    .into())
}

/// Writes `fp` at `path` unless a file is there (temp + hard link: never a half-written file,
/// never one replaced). `false` when it existed. An unreadable file there is replaced.
fn create_new(path: &Path, fp: &Fingerprint) -> Result<bool> {
    let text = serde_json::to_vec_pretty(fp)?;
    if path.exists() {
        let readable = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Fingerprint>(&b).ok())
            .is_some();
        if readable {
            return Ok(false);
        }
        // There, but unreadable (a crash of an older version, or damage): the first run after
        // it rewrites it.
        fidshard_core::output::write_atomic(path, &text)
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(true);
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    {
        use std::io::Write;
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}

/// `--restart` of a job, whole or partition `job.partition` (whose own state dir `own` is
/// locked by the caller): deletes every other partition's state dir, this partition's export,
/// the one-node state, the shared fingerprint, the npz and the samples, refusing (exit 4)
/// while any other coordinator of this out dir runs. The caller then starts its own state over.
pub(crate) fn restart(job: &Job, own: &JobLock) -> Result<()> {
    let out = &job.out_dir;
    let refuse = |what: String, h: &super::lock::Holder| -> anyhow::Error {
        fidshard_core::Fatal::new(
            fidshard_core::Exit::Locked,
            anyhow::anyhow!(
                "--restart: {what} of this job is running in {} (pid {}{}); a restart deletes the samples of every partition: wait for it or stop it, then restart once (with one partition) and start the others without --restart",
                out.display(),
                h.pid,
                if h.hostname.is_empty() { String::new() } else { format!(" on {}", h.hostname) },
            ),
        )
        .into()
    };
    // The root's lock: no one-node coordinator may run while its samples are deleted.
    let root_held;
    let root: &JobLock = if job.partition.is_whole() {
        own
    } else {
        root_held = JobLock::acquire(out)?;
        &root_held
    };
    let mut others = Vec::new();
    for (p, dir) in list(out) {
        if p == job.partition {
            continue;
        }
        match JobLock::probe(&dir)? {
            Probe::Held(h) => return Err(refuse(format!("partition {p}"), &h)),
            Probe::Free(guard) => others.push((dir, guard)),
        }
    }
    // Every other coordinator is locked out (the guards) while their state goes.
    for (dir, _guard) in &others {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("--restart: removing {}", dir.display()))?;
    }
    let dir = OutDir::new(out);
    let own_export = OutDir::new(job.state_dir()).records();
    for file in [own_export, dir.fingerprint(), dir.provenance()] {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("--restart: removing {}", file.display()))
            }
            _ => {}
        }
    }
    if !job.partition.is_whole() && dir.state().is_dir() {
        std::fs::remove_dir_all(dir.state())
            .with_context(|| format!("--restart: removing {}", dir.state().display()))?;
    }
    super::state::restart_out_dir(root)
        .with_context(|| format!("--restart: deleting the samples in {}", out.display()))?;
    drop(others);
    Ok(())
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
    let plan = crate::job::plan::plan(job.settings.num_samples, job.run.shard_size);
    let mine = job.partition.shards(plan.len() as u64);
    let have: std::collections::HashSet<u64> =
        db.done_records()?.iter().map(|r| r.shard.id).collect();
    let mut imported = 0u64;
    for (what, dir) in other_layouts(job) {
        match JobLock::probe(&dir)? {
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
                let other = StateDb::open(&dir)?;
                let records: Vec<ShardRecord> = other
                    .done_records()?
                    .into_iter()
                    .filter(|r| {
                        // A record of another size of the job imports only where its shard is
                        // the same shard of this plan (the trimmed or grown last one is redone).
                        mine.contains(&r.shard.id)
                            && !have.contains(&r.shard.id)
                            && plan.get(r.shard.id as usize) == Some(&r.shard)
                    })
                    .collect();
                drop(other);
                if !records.is_empty() {
                    tracing::info!(
                        shards = records.len(),
                        "imported the shards that {what} recorded (changing the number of partitions redoes no recorded work)"
                    );
                    imported += records.len() as u64;
                    db.record_done_many(&records)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(seed: &str, n: &str) -> Fingerprint {
        let mut f = Fingerprint::default();
        f.insert("seed", seed);
        f.insert("num_samples", n);
        f
    }

    #[test]
    fn the_first_fingerprint_binds_the_out_dir() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        check_fingerprint(out, &fp("0", "16")).unwrap();
        bind_fingerprint(out, &fp("0", "16")).unwrap();
        // The first writer wins: a second one never replaces it.
        assert!(!create_new(&OutDir::new(out).fingerprint(), &fp("1", "16")).unwrap());
        assert_eq!(saved_fingerprint(out), Some(fp("0", "16")));
        let err = bind_fingerprint(out, &fp("1", "16")).unwrap_err();
        assert_eq!(
            crate::exit_code::code_of(&err),
            fidshard_core::Exit::InvalidInput
        );
        assert!(err.to_string().contains("seed 0 -> 1"), "{err}");
        assert!(check_fingerprint(out, &fp("1", "16")).is_err());
        assert_eq!(
            saved_fingerprint(out),
            Some(fp("0", "16")),
            "a refusal writes nothing"
        );
        // Growing or shrinking is the same job; past 10^6 the PNG names change.
        bind_fingerprint(out, &fp("0", "8")).unwrap();
        assert_eq!(saved_fingerprint(out), Some(fp("0", "8")));
        assert!(check_fingerprint(out, &fp("0", "2000000")).is_err());
        // Leftover temporary files: none.
        let names: Vec<_> = std::fs::read_dir(out).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
