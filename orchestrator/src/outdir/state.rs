//! The durable job state in `OUT/state.sled`: which shards are finished (with the CRC32 of every
//! PNG and the labels), which exhausted their retries, and the fingerprint of the job that owns
//! the out dir. A shard counts as done only once its record is flushed to disk, after its PNGs
//! were renamed into place, so a crash at any point loses at most the shards in flight.
//!
//! Keys (values are JSON, so the DB can be inspected with any sled tool):
//! - `meta`: [`Meta`]
//! - `done/{shard_id:012}`: [`ShardRecord`] (zero-padded so that key order is shard order)
//! - `failed/{shard_id:012}`: [`FailedRecord`]
//! - `counter/retries`: u64
//!
//! sled admits one process at a time (it `flock`s its own file); the coordinator opens it under
//! the [`JobLock`], and `status` only while it holds that lock too.
use crate::job::fingerprint::{describe, Change, Fingerprint};
use crate::job::plan::{plan, Shard};
use crate::outdir::lock::JobLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

const META: &str = "meta";
const DONE: &str = "done/";
const FAILED: &str = "failed/";
const RETRIES: &str = "counter/retries";

/// The plan-defining numbers stored next to the fingerprint, so `status` can rebuild the plan
/// without the job file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlanMeta {
    pub num_samples: u64,
    pub shard_size: u64,
    pub image_size: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub fingerprint: Fingerprint,
    pub num_samples: u64,
    pub shard_size: u64,
    pub image_size: i64,
    pub created_unix: u64,
}

impl Meta {
    pub fn plan(&self) -> Vec<Shard> {
        plan(self.num_samples, self.shard_size)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ShardRecord {
    pub shard: Shard,
    /// Attempts it took, this one included.
    pub attempts: u32,
    /// CRC32 of each PNG file, in index order (checked when `samples.npz` is assembled).
    pub crc32: Vec<u32>,
    pub labels: Vec<i64>,
    /// Which worker made it (`cuda:1`, ...), for forensics.
    pub worker: String,
    pub finished_unix: u64,
    /// Seconds the worker took for it (per-device images/s in `status`); 0 when unknown.
    #[serde(default)]
    pub seconds: f64,
    /// With `evaluate:`: the CRC32 of the shard's Inception features file
    /// (`OUT/features/`, fidshard-core's features.rs), which the worker wrote with its PNGs.
    #[serde(default)]
    pub features_crc32: Option<u32>,
}

/// What the records say each sample is, in index order: its label and its PNG's CRC-32. The
/// npz is assembled from these and checked against them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Recorded {
    pub labels: Vec<i64>,
    pub crc32: Vec<u32>,
}

impl Recorded {
    /// From shard records of any source (a state DB, the partitions' exports); sorts `records`
    /// by their first index, the order of the npz.
    pub fn of(records: &mut [ShardRecord]) -> Recorded {
        records.sort_by_key(|r| r.shard.start);
        Recorded {
            labels: records
                .iter()
                .flat_map(|r| r.labels.iter().copied())
                .collect(),
            crc32: records
                .iter()
                .flat_map(|r| r.crc32.iter().copied())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FailedRecord {
    pub shard: Shard,
    pub attempts: u32,
    /// The last attempt's error.
    pub error: String,
    pub failed_unix: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error(
        "{}: this out dir was made with a different job: {}; rerun with --restart to start over \
         (deletes its samples) or choose another out_dir",
        out_dir.display(),
        describe(changed)
    )]
    FingerprintChanged {
        out_dir: PathBuf,
        changed: Vec<Change>,
    },
    #[error("{}: the state database is open in another process", path.display())]
    Busy { path: PathBuf },
    #[error("{}: state database: {source}", path.display())]
    Db { path: PathBuf, source: sled::Error },
    #[error("{}: unreadable state record `{key}`: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        key: String,
        source: serde_json::Error,
    },
}

type Result<T, E = StateError> = std::result::Result<T, E>;

pub(crate) struct StateDb {
    db: sled::Db,
    path: PathBuf,
}

impl StateDb {
    pub fn path(out_dir: &Path) -> PathBuf {
        crate::outdir::OutDir::new(out_dir).state()
    }

    pub fn exists(out_dir: &Path) -> bool {
        Self::path(out_dir).is_dir()
    }

    /// Opens (creating) `OUT/state.sled`. `StateError::Busy` when another process has it.
    pub fn open(out_dir: &Path) -> Result<StateDb> {
        let path = Self::path(out_dir);
        // sled's flusher thread keeps the file lock for a moment after a handle is dropped, so
        // a DB just closed in this process may look busy: retry briefly before saying so.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match sled::Config::new().path(&path).open() {
                Ok(db) => return Ok(StateDb { db, path }),
                // sled reports its own flock failure as a plain I/O error with this text.
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StateError::Busy { path });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(source) => return Err(StateError::Db { path, source }),
            }
        }
    }

    /// Binds the DB to the job `fp`: stores it when the DB is new, accepts the same job, refuses
    /// another one (naming what changed). `restart` forgets every record and adopts `fp`; call
    /// [`restart_out_dir`] first, so a crash in between leaves records without files (which
    /// [`verify_done`](Self::verify_done) catches) rather than files without records.
    pub fn check_or_init(&self, fp: &Fingerprint, plan: PlanMeta, restart: bool) -> Result<()> {
        if !restart {
            if let Some(meta) = self.meta()? {
                let changed = meta.fingerprint.diff(fp);
                if changed.is_empty() {
                    if saved_fingerprint(self.out_dir()).is_none() {
                        self.save_fingerprint(fp);
                    }
                    return Ok(());
                }
                // Image i never depends on N: growing or shrinking a job keeps its work.
                if changed.iter().all(|(k, _, _)| k == "num_samples")
                    && same_png_names(meta.num_samples, plan.num_samples)
                {
                    return self.resize(meta, fp, plan);
                }
                return Err(StateError::FingerprintChanged {
                    out_dir: self.path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                    changed,
                });
            }
        }
        self.db.clear().map_err(|e| self.db_err(e))?;
        let meta = Meta {
            fingerprint: fp.clone(),
            num_samples: plan.num_samples,
            shard_size: plan.shard_size,
            image_size: plan.image_size,
            created_unix: crate::sys::time::unix_now() as u64,
        };
        self.put(META, &meta)?;
        self.flush()?;
        self.save_fingerprint(fp);
        Ok(())
    }

    /// `num_samples` changed, nothing else: keeps every record of the shards that are still in
    /// the plan, trims the shard the new end cuts, and drops the old plan's short last shard
    /// when the job grows (it is completed, not redone: its PNGs are reused by the worker).
    fn resize(&self, mut meta: Meta, fp: &Fingerprint, plan: PlanMeta) -> Result<()> {
        let (old_n, new_n) = (meta.num_samples, plan.num_samples);
        let mut batch = sled::Batch::default();
        let (mut kept, mut trimmed, mut reopened, mut dropped) = (0u64, 0u64, 0u64, 0u64);
        for mut r in self.done_records()? {
            if r.shard.start >= new_n {
                batch.remove(done_key(r.shard.id).as_bytes());
                dropped += 1;
            } else if r.shard.end > new_n {
                let keep = (new_n - r.shard.start) as usize;
                r.shard.end = new_n;
                r.crc32.truncate(keep);
                r.labels.truncate(keep);
                batch.insert(done_key(r.shard.id).as_bytes(), to_json(&r));
                trimmed += 1;
            } else if r.shard.end == old_n && r.shard.len() < plan.shard_size && new_n > old_n {
                batch.remove(done_key(r.shard.id).as_bytes());
                reopened += 1;
            } else {
                kept += 1;
            }
        }
        for f in self.failed_records()? {
            if f.shard.start >= new_n || f.shard.end != f.shard.end.min(new_n) || new_n > old_n {
                batch.remove(failed_key(f.shard.id).as_bytes());
            }
        }
        meta.fingerprint = fp.clone();
        meta.num_samples = new_n;
        batch.insert(META.as_bytes(), to_json(&meta));
        self.db.apply_batch(batch).map_err(|e| self.db_err(e))?;
        self.flush()?;
        self.save_fingerprint(fp);
        tracing::info!(
            from = old_n,
            to = new_n,
            kept,
            trimmed,
            reopened,
            dropped,
            "num_samples changed: recorded shards kept (image i does not depend on num_samples); only the new indices are sampled"
        );
        Ok(())
    }

    fn out_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Writes [`FINGERPRINT_FILE`] (temporary file + rename). The DB stays the authority, so a
    /// failure is only logged.
    fn save_fingerprint(&self, fp: &Fingerprint) {
        let path = crate::outdir::OutDir::new(self.out_dir()).fingerprint();
        let text = serde_json::to_vec_pretty(fp).expect("fingerprints serialize");
        if let Err(e) = fidshard_core::output::write_atomic(&path, &text) {
            tracing::warn!("cannot save a copy of the job fingerprint: {e}");
        }
    }

    pub fn meta(&self) -> Result<Option<Meta>> {
        self.get(META)
    }

    /// Marks a shard finished (and no longer failed), durably: on return the record is on disk.
    pub fn record_done(&self, rec: &ShardRecord) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert(done_key(rec.shard.id).as_bytes(), to_json(rec));
        batch.remove(failed_key(rec.shard.id).as_bytes());
        // One batch: a crash never leaves the shard both done and failed.
        self.db.apply_batch(batch).map_err(|e| self.db_err(e))?;
        self.flush()
    }

    /// Marks many shards finished with one flush (a rebuild of 50,000 one-sample shards would
    /// otherwise fsync 50,000 times). Durable on return, like [`record_done`](Self::record_done).
    pub fn record_done_many(&self, recs: &[ShardRecord]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for rec in recs {
            batch.insert(done_key(rec.shard.id).as_bytes(), to_json(rec));
            batch.remove(failed_key(rec.shard.id).as_bytes());
        }
        self.db.apply_batch(batch).map_err(|e| self.db_err(e))?;
        self.flush()
    }

    /// Reads every record once, so that a damaged DB shows up now, at the start of a run, as
    /// `Db`/`Corrupt`, rather than in the middle of one.
    pub fn check_readable(&self) -> Result<()> {
        self.meta()?;
        self.done_records()?;
        self.failed_records()?;
        self.retries().map(drop)
    }

    pub fn record_failed(&self, rec: &FailedRecord) -> Result<()> {
        self.put(&failed_key(rec.shard.id), rec)?;
        self.flush()
    }

    /// Adds `n` to the retry counter and returns the new total.
    pub fn add_retries(&self, n: u64) -> Result<u64> {
        let total = self.retries()? + n;
        self.put(RETRIES, &total)?;
        self.flush()?;
        Ok(total)
    }

    pub fn retries(&self) -> Result<u64> {
        Ok(self.get(RETRIES)?.unwrap_or(0))
    }

    /// Finished shards in shard order.
    pub fn done_records(&self) -> Result<Vec<ShardRecord>> {
        self.scan(DONE)
    }

    /// Failed shards in shard order.
    /// The labels and CRCs of the shards recorded done, in index order.
    pub fn recorded_labels(&self) -> Result<Recorded> {
        Ok(Recorded::of(&mut self.done_records()?))
    }
    pub fn failed_records(&self) -> Result<Vec<FailedRecord>> {
        self.scan(FAILED)
    }

    /// Forgets a finished shard (its files went missing); it will be sampled again.
    pub fn remove_done(&self, shard_id: u64) -> Result<()> {
        self.db
            .remove(done_key(shard_id))
            .map_err(|e| self.db_err(e))?;
        self.flush()
    }

    /// Ids of the done shards whose PNGs are not all in `samples_dir` (or whose record does not
    /// fit a job of `num_samples`). Existence only; the CRCs are checked at assembly.
    pub fn verify_done(&self, samples_dir: &Path, num_samples: u64) -> Result<Vec<u64>> {
        // One directory listing instead of 50,000 stat calls.
        let present: HashSet<OsString> = match std::fs::read_dir(samples_dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
            Err(_) => HashSet::new(),
        };
        Ok(self
            .done_records()?
            .into_iter()
            .filter(|r| {
                r.shard.end > num_samples
                    || r.crc32.len() as u64 != r.shard.len()
                    || r.shard.indices().any(|i| {
                        let name = fidshard_core::output::png_name(i, num_samples);
                        !present.contains(&OsString::from(name))
                    })
            })
            .map(|r| r.shard.id)
            .collect())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(|e| self.db_err(e))
    }

    fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.db
            .insert(key, to_json(value))
            .map(|_| ())
            .map_err(|e| self.db_err(e))
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.db.get(key).map_err(|e| self.db_err(e))? {
            None => Ok(None),
            Some(v) => self.decode(key, &v).map(Some),
        }
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>> {
        self.db
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.db_err(e))?;
                self.decode(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|source| StateError::Corrupt {
            path: self.path.clone(),
            key: key.to_string(),
            source,
        })
    }

    fn db_err(&self, source: sled::Error) -> StateError {
        StateError::Db {
            path: self.path.clone(),
            source,
        }
    }
}

fn done_key(id: u64) -> String {
    format!("{DONE}{id:012}")
}

fn failed_key(id: u64) -> String {
    format!("{FAILED}{id:012}")
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("state records serialize")
}

/// The fingerprint copy in `out_dir`, if there is a readable one.
pub(crate) fn saved_fingerprint(out_dir: &Path) -> Option<Fingerprint> {
    let bytes = std::fs::read(crate::outdir::OutDir::new(out_dir).fingerprint()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Refuses to rebuild the state of job `fp` from PNGs that the saved fingerprint says another
/// job made (the error `run` gives for a changed job). Without a saved copy (an out dir of an
/// older fidshard) the PNGs are trusted.
pub(crate) fn check_saved_fingerprint(out_dir: &Path, fp: &Fingerprint) -> Result<()> {
    let Some(saved) = saved_fingerprint(out_dir) else {
        return Ok(());
    };
    let changed = saved.diff(fp);
    if changed.is_empty() {
        return Ok(());
    }
    Err(StateError::FingerprintChanged {
        out_dir: out_dir.to_path_buf(),
        changed,
    })
}

/// Renames `OUT/state.sled` to `OUT/state.sled.{tag}-{unix time}` (with `.2`, `.3`... if that
/// exists) and returns the new path. Used instead of deleting a DB that cannot be opened or is
/// being replaced, so that whatever it holds can still be inspected or recovered by hand.
/// Call only while holding the [`JobLock`], with the DB closed.
pub(crate) fn move_aside(lock: &JobLock, tag: &str) -> std::io::Result<PathBuf> {
    let from = StateDb::path(lock.out_dir());
    let base = format!(
        "{}.{tag}-{}",
        crate::outdir::STATE_DIR,
        crate::sys::time::unix_now() as u64
    );
    let mut to = lock.out_dir().join(&base);
    let mut n = 1;
    while std::fs::symlink_metadata(&to).is_ok() {
        n += 1;
        to = lock.out_dir().join(format!("{base}.{n}"));
    }
    std::fs::rename(&from, &to)?;
    Ok(to)
}

/// Deletes the leftovers of writes that never finished: `.{name}.tmp.{pid}[...]` files of
/// fidshard's own names (the worker's PNGs, `status.json`, the npz, the fingerprint). Call only while holding the [`JobLock`] and before
/// starting workers; a missing folder is fine. Returns how many were removed.
pub(crate) fn remove_stale_temps(dir: &Path) -> std::io::Result<usize> {
    remove_stale_temps_where(dir, |_| true)
}

/// [`remove_stale_temps`] for the names `mine` accepts: a partition of a many-node job cleans
/// only the temporary files of its own samples, never those another partition is writing.
pub(crate) fn remove_stale_temps_where(
    dir: &Path,
    mine: impl Fn(&str) -> bool,
) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Only fidshard's own temporary names: a user's `.x.tmp.1` is not ours to delete.
        let stale =
            crate::outdir::claim::is_own_temp(&name) && mine(&name) && entry.file_type()?.is_file();
        if !stale {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Whether jobs of `a` and `b` samples name their PNGs alike (the width of the zero-padded
/// index grows past 10^6 samples).
fn same_png_names(a: u64, b: u64) -> bool {
    use fidshard_core::output::png_name;
    png_name(0, a) == png_name(0, b)
}

/// `--restart`: deletes the samples, the npz and the old snapshot (never anything else in the
/// out dir, and never the dir itself). Taking the lock as an argument makes "no coordinator is
/// writing here" a precondition the compiler checks. Symlinks are removed, not followed.
pub(crate) fn restart_out_dir(lock: &JobLock) -> std::io::Result<()> {
    let out = lock.out_dir();
    let ignore_missing = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    let samples = crate::outdir::OutDir::new(out).samples();
    match std::fs::symlink_metadata(&samples) {
        Ok(m) if m.is_dir() => {
            // Only the samples and their temporary files; anything else a user put there stays
            // (and then so does the folder).
            for entry in std::fs::read_dir(&samples)? {
                let entry = entry?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let ours = crate::outdir::claim::is_own_png(&name)
                    || crate::outdir::claim::is_own_temp(&name);
                if ours && !entry.file_type()?.is_dir() {
                    ignore_missing(std::fs::remove_file(entry.path()))?;
                }
            }
            match std::fs::remove_dir(&samples) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Not empty: the user's files are kept.
                Err(_) => {}
            }
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    ignore_missing(std::fs::remove_file(crate::outdir::OutDir::new(out).npz()))?;
    crate::outdir::verified::remove(out)?;
    ignore_missing(std::fs::remove_file(
        crate::outdir::OutDir::new(out).snapshot(),
    ))?;
    remove_stale_temps(out).map(|_| ())
}

#[cfg(test)]
#[path = "state_tests.rs"]
pub(crate) mod tests;
