//! Rebuilding `OUT/state.sled` from the PNGs in `OUT/samples/` (`fidshard repair CONFIG`, and
//! automatically at the start of `run` when the DB is missing or cannot be read).
//!
//! The PNGs are the real results; the DB only says which of them are finished and checked. A
//! PNG with a final name is always complete (workers write a temporary file, fsync, rename), so
//! a shard whose every PNG exists and decodes to an `image_size^2` RGB image is as good as one
//! the coordinator recorded: its CRCs are recomputed from the files and its labels from the
//! random-number contract (`fidshard_core::labels::label_of`). Shards with a missing or
//! undecodable file are left unrecorded and get sampled again; their undecodable files are
//! removed (the worker would overwrite them anyway). `fidshard repair` of a readable state keeps
//! the CRCs it recorded ([`recover_trusting`]): a PNG that decodes but contradicts its record
//! (another valid image copied over it) is removed too, never recorded with its new CRC.
//!
//! A DB that cannot be read is never deleted: it is moved to `state.sled.broken-<unix time>`
//! first, so nothing it held is lost silently. What cannot be rebuilt from the files (failed
//! shards, the retry counter) starts from zero.
//!
//! The PNGs cannot say which job made them, so a rebuild checks the copy of the fingerprint
//! that `state.rs` keeps in `OUT/fingerprint.json`, and refuses (exit 2, as `run` refuses a
//! changed job) when another job made the out dir. Without that file (an out dir of an older
//! fidshard) the PNGs are trusted to belong to the job given.
use crate::job::config::Job;
use crate::job::fingerprint::Fingerprint;
use crate::job::plan::Shard;
use crate::outdir::lock::JobLock;
use crate::outdir::state::{PlanMeta, ShardRecord, StateDb, StateError};
use crate::outdir::STATE_DIR;
use anyhow::{Context, Result};
use fidshard_core::output::png_name;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// What a rebuild found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RepairReport {
    pub shards_total: u64,
    /// Shards recorded done from their PNGs.
    pub recovered: u64,
    pub samples_recovered: u64,
    /// Shards left to sample (some or all of their PNGs missing or bad).
    pub to_redo: u64,
    /// Undecodable PNGs that were deleted.
    pub removed_bad: u64,
    /// Where the previous DB went, if there was one.
    pub moved_aside: Option<PathBuf>,
}

impl std::fmt::Display for RepairReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} shards recovered from their PNGs ({} samples), {} to redo",
            self.recovered, self.shards_total, self.samples_recovered, self.to_redo
        )?;
        if self.removed_bad > 0 {
            write!(
                f,
                "; {} bad PNGs removed (undecodable, or not the recorded ones)",
                self.removed_bad
            )?;
        }
        if let Some(p) = &self.moved_aside {
            write!(f, "; the previous state is kept in {}", p.display())?;
        }
        Ok(())
    }
}

/// The state DB for `run`: opened and bound to the job, or rebuilt from the PNGs when it is
/// missing (while `samples/` holds PNGs), empty (idem) or unreadable. Call after
/// `--restart` deleted the samples, if it did.
pub(crate) fn open_for_run(lock: &JobLock, job: &Job, fp: &Fingerprint) -> Result<StateDb> {
    // The samples are the job's (shared by its partitions); the state is this coordinator's.
    let samples = crate::outdir::OutDir::new(&job.out_dir).samples();
    match inspect(lock)? {
        Found::Readable(db) => {
            let empty = db.meta()?.is_none();
            let rebuild = empty && count_pngs(&samples) > 0;
            if rebuild {
                check_saved_fingerprint(lock, fp)?;
            }
            db.check_or_init(fp, plan_meta(job), false)?;
            if rebuild {
                // A DB created but never written (a crash at the first start) next to samples.
                tracing::warn!(
                    "the state database is empty but samples/ holds PNGs; rebuilding the records \
                     from them"
                );
                let report = recover_into(job, &db)?;
                tracing::warn!(%report, "state rebuilt");
            }
            Ok(db)
        }
        Found::Missing => {
            let pngs = count_pngs(&samples);
            if pngs > 0 {
                check_saved_fingerprint(lock, fp)?;
            }
            let db = fresh(lock, job, fp)?;
            if pngs > 0 {
                tracing::warn!(
                    pngs,
                    "{} is missing but samples/ holds PNGs; rebuilding the records from them",
                    StateDb::path(lock.out_dir()).display()
                );
                let report = recover_into(job, &db)?;
                tracing::warn!(%report, "state rebuilt");
            }
            Ok(db)
        }
        Found::Broken(why) => {
            check_saved_fingerprint(lock, fp)?;
            let moved = set_aside_broken(lock, &why)?;
            let db = fresh(lock, job, fp)?;
            let mut report = recover_into(job, &db)?;
            report.moved_aside = Some(moved);
            tracing::warn!(%report, "state rebuilt");
            Ok(db)
        }
    }
}

/// `--restart`: the samples are gone, so nothing is rebuilt, but an unreadable DB is still
/// moved aside rather than failing the restart.
pub(crate) fn open_for_restart(lock: &JobLock, job: &Job, fp: &Fingerprint) -> Result<StateDb> {
    match inspect(lock)? {
        Found::Readable(db) => {
            db.check_or_init(fp, plan_meta(job), true)?;
            Ok(db)
        }
        Found::Missing => fresh(lock, job, fp),
        Found::Broken(why) => {
            set_aside_broken(lock, &why)?;
            fresh(lock, job, fp)
        }
    }
}

pub(crate) enum Found {
    Missing,
    Readable(StateDb),
    /// Why it cannot be used (the sled or decoding error, or sled's panic message).
    Broken(String),
}

/// Opens `OUT/state.sled` if there is one and reads all of it once.
pub(crate) fn inspect(lock: &JobLock) -> Result<Found> {
    let out = lock.out_dir();
    if std::fs::symlink_metadata(StateDb::path(out)).is_err() {
        return Ok(Found::Missing);
    }
    // sled panics on some kinds of damage instead of returning an error.
    let opened = std::panic::catch_unwind(|| {
        let db = StateDb::open(out)?;
        db.check_readable().map(|()| db)
    });
    match opened {
        Ok(Ok(db)) => Ok(Found::Readable(db)),
        Ok(Err(e)) if is_damage(&e) => Ok(Found::Broken(e.to_string())),
        Ok(Err(e)) => Err(e.into()),
        Err(panic) => Ok(Found::Broken(format!(
            "{}: the state database panicked on open: {}",
            StateDb::path(out).display(),
            fidshard_core::error::panic_message(&*panic)
        ))),
    }
}

/// Whether `e` means the DB's content is damaged (then it is rebuilt), as opposed to a problem
/// that rebuilding would not fix or might make worse: another process holding it, no
/// permission, a full disk.
fn is_damage(e: &StateError) -> bool {
    match e {
        StateError::Corrupt { .. } => true,
        StateError::Db { source, .. } => match source {
            sled::Error::Io(io) => {
                io.kind() != std::io::ErrorKind::PermissionDenied
                    && !matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EROFS))
            }
            _ => true,
        },
        StateError::Busy { .. } | StateError::FingerprintChanged { .. } => false,
    }
}

/// The PNGs cannot say which job made them; `OUT/fingerprint.json` can (exit 2 if another).
pub(crate) fn check_saved_fingerprint(lock: &JobLock, fp: &Fingerprint) -> Result<()> {
    crate::outdir::state::check_saved_fingerprint(lock.out_dir(), fp).map_err(Into::into)
}

pub(crate) fn set_aside_broken(lock: &JobLock, why: &str) -> Result<PathBuf> {
    let to = crate::outdir::state::move_aside(lock, "broken")
        .with_context(|| format!("{why}; and moving {STATE_DIR} aside to rebuild it failed"))?;
    tracing::warn!(
        error = why,
        kept = %to.display(),
        "the state database cannot be read; moved it aside, rebuilding the records from the PNGs"
    );
    Ok(to)
}

pub(crate) fn fresh(lock: &JobLock, job: &Job, fp: &Fingerprint) -> Result<StateDb> {
    let db = StateDb::open(lock.out_dir())?;
    db.check_or_init(fp, plan_meta(job), true)?;
    Ok(db)
}

pub(crate) fn plan_meta(job: &Job) -> PlanMeta {
    PlanMeta {
        num_samples: job.settings.num_samples,
        shard_size: job.run.shard_size,
        image_size: job.image_size,
    }
}

/// Final-named PNGs in `dir` (0 when it does not exist).
fn count_pngs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    !n.starts_with('.') && n.ends_with(".png")
                })
                .count()
        })
        .unwrap_or(0)
}

/// One shard's check: the CRC32 of each PNG, or the first bad file and why.
type Checked = (Shard, Result<Vec<u32>, (u64, String)>);

/// Records in `db` every shard of the job whose PNGs are all present and decodable.
pub(crate) fn recover_into(job: &Job, db: &StateDb) -> Result<RepairReport> {
    recover_trusting(job, db, &HashMap::new())
}

/// [`recover_into`], where `known` holds the CRC-32 recorded for some indices (a readable
/// state being rebuilt): a PNG that contradicts its record is not the one that was recorded
/// (another valid PNG copied over it, say), so it is removed and its shard sampled again,
/// never recorded with its new CRC.
pub(crate) fn recover_trusting(
    job: &Job,
    db: &StateDb,
    known: &HashMap<u64, u32>,
) -> Result<RepairReport> {
    let n = job.settings.num_samples;
    let side = job.image_size as u32;
    let dir = crate::outdir::OutDir::new(&job.out_dir).samples();
    let shards = job.plan();
    // One listing instead of a stat per file: shards with a missing file need no decoding.
    let present: HashSet<OsString> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
        Err(_) => HashSet::new(),
    };
    let complete: Vec<Shard> = shards
        .iter()
        .filter(|s| {
            s.indices()
                .all(|i| present.contains(&OsString::from(png_name(i, n))))
        })
        .copied()
        .collect();
    let checked = check_shards(&dir, n, side, &complete);
    if let Some(sig) = crate::sys::signals::pending() {
        // The check stopped half way: record nothing, the next run checks again.
        return Err(fidshard_core::Fatal::new(
            fidshard_core::exit::Exit::Interrupted,
            anyhow::anyhow!(
                "{sig} while checking the PNGs; nothing was changed, run the same command again"
            ),
        )
        .into());
    }

    let mut report = RepairReport {
        shards_total: shards.len() as u64,
        ..RepairReport::default()
    };
    let now = crate::outdir::snapshot::unix_now() as u64;
    let s = &job.settings;
    let mut records = Vec::new();
    for (shard, result) in checked {
        let result = result
            .and_then(|crc32| contradiction(&shard, &crc32, known, &dir, n).map_or(Ok(crc32), Err));
        match result {
            Ok(crc32) => records.push(ShardRecord {
                seconds: 0.0,
                features_crc32: None,
                shard,
                // Unknown: the record of how it was made is what got lost.
                attempts: 0,
                crc32,
                // On this thread only: label_of uses libtorch's global generator.
                labels: shard
                    .indices()
                    .map(|i| {
                        fidshard_core::labels::label_of(s.seed, i, s.labels, s.dit.num_classes)
                    })
                    .collect(),
                worker: "repair".into(),
                finished_unix: now,
            }),
            Err((index, why)) => {
                tracing::warn!(shard = %shard, "{why}; the shard will be sampled again");
                let path = dir.join(png_name(index, n));
                match std::fs::remove_file(&path) {
                    Ok(()) => report.removed_bad += 1,
                    Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
                }
            }
        }
    }
    records.sort_by_key(|r| r.shard.id);
    db.record_done_many(&records)
        .context("recording the recovered shards")?;
    report.recovered = records.len() as u64;
    report.samples_recovered = records.iter().map(|r| r.shard.len()).sum();
    report.to_redo = report.shards_total - report.recovered;
    Ok(report)
}

/// The first PNG of `shard` whose CRC-32 differs from the one `known` records for it.
fn contradiction(
    shard: &Shard,
    crc32: &[u32],
    known: &HashMap<u64, u32>,
    dir: &Path,
    n: u64,
) -> Option<(u64, String)> {
    let (i, (now, was)) = shard
        .indices()
        .zip(crc32)
        .filter_map(|(i, c)| known.get(&i).map(|k| (i, (*c, *k))))
        .find(|(_, (now, was))| now != was)?;
    Some((
        i,
        format!(
            "{}: CRC32 {now:08x} differs from the {was:08x} recorded when it was written; not \
             the recorded PNG",
            dir.join(png_name(i, n)).display()
        ),
    ))
}

/// Reads and decodes the PNGs of `shards` on a few threads, logging progress every 10%.
/// Decoding is the slow part (about 1 ms per 256^2 image per core): 50,000 images take
/// a minute on one core.
fn check_shards(dir: &Path, n: u64, side: u32, shards: &[Shard]) -> Vec<Checked> {
    let total: u64 = shards.iter().map(Shard::len).sum();
    if total == 0 {
        return Vec::new();
    }
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    tracing::info!(
        samples = total,
        threads,
        "checking the PNGs of {} complete-looking shards",
        shards.len()
    );
    let (tx, rx) = std::sync::mpsc::channel::<Checked>();
    let mut results = Vec::with_capacity(shards.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                let mut buf = Vec::new();
                while let Some(&shard) = shards.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if crate::sys::signals::pending().is_some() {
                        return;
                    }
                    let mut crcs = Vec::with_capacity(shard.len() as usize);
                    let mut result = Ok(());
                    for i in shard.indices() {
                        match check_png(&dir.join(png_name(i, n)), side, &mut buf) {
                            Ok(crc) => crcs.push(crc),
                            Err(why) => {
                                result = Err((i, why));
                                break;
                            }
                        }
                    }
                    if tx.send((shard, result.map(|()| crcs))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let tenth = total.div_ceil(10);
        let mut done = 0u64;
        for checked in rx {
            let before = done / tenth;
            done += checked.0.len();
            if total >= 100 && done / tenth > before && done < total {
                tracing::info!(
                    "checked {done} of {total} PNGs ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
            results.push(checked);
        }
    });
    results
}

/// The CRC32 of the file's bytes, if it decodes to a `side x side` 8-bit RGB image (what the
/// assembly of samples.npz requires). A decoder panic on a hostile file counts as bad.
fn check_png(path: &Path, side: u32, buf: &mut Vec<u8>) -> Result<u32, String> {
    let bad = |msg: String| format!("{}: {msg}", path.display());
    fidshard_core::output::read_regular(path, buf).map_err(|e| bad(format!("cannot read: {e}")))?;
    let bytes = &buf[..];
    fidshard_core::output::check_png(bytes, side).map_err(bad)?;
    Ok(crc32fast::hash(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::plan::plan;

    fn png(side: u32, seed: u8) -> Vec<u8> {
        let pixels: Vec<u8> = (0..side * side * 3)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect();
        fidshard_core::output::encode_png(&pixels, side).unwrap()
    }

    #[test]
    fn check_png_accepts_only_whole_rgb_images_of_the_size() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("000000.png");
        let bytes = png(8, 3);
        std::fs::write(&p, &bytes).unwrap();
        let mut buf = Vec::new();
        assert_eq!(check_png(&p, 8, &mut buf), Ok(crc32fast::hash(&bytes)));
        assert!(check_png(&p, 16, &mut buf)
            .unwrap_err()
            .contains("expected 16x16"));
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(check_png(&p, 8, &mut buf).is_err());
        std::fs::write(&p, b"garbage").unwrap();
        assert!(check_png(&p, 8, &mut buf)
            .unwrap_err()
            .contains("not a readable PNG"));
        assert!(check_png(&tmp.path().join("nope.png"), 8, &mut buf).is_err());
    }

    #[test]
    fn check_shards_reports_each_shard_once() {
        let tmp = tempfile::tempdir().unwrap();
        let shards = plan(25, 4);
        for i in 0..25u64 {
            let bytes = if i == 9 {
                b"bad".to_vec()
            } else {
                png(4, i as u8)
            };
            std::fs::write(tmp.path().join(png_name(i, 25)), bytes).unwrap();
        }
        let mut got = check_shards(tmp.path(), 25, 4, &shards);
        got.sort_by_key(|c| c.0.id);
        assert_eq!(got.len(), shards.len());
        for (shard, result) in got {
            match result {
                Ok(crcs) => {
                    assert_ne!(shard.id, 2);
                    assert_eq!(crcs.len() as u64, shard.len());
                }
                Err((index, why)) => {
                    assert_eq!((shard.id, index), (2, 9));
                    assert!(why.contains("000009.png"), "{why}");
                }
            }
        }
    }

    #[test]
    fn garbage_in_every_sled_file_is_damage_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        {
            let db = StateDb::open(out).unwrap();
            db.check_or_init(
                &crate::outdir::state::tests::fp("0"),
                crate::outdir::state::tests::PLAN,
                false,
            )
            .unwrap();
            db.record_done(&crate::outdir::state::tests::done(plan(25, 10)[0]))
                .unwrap();
        }
        overwrite_with_garbage(&StateDb::path(out));
        let lock = JobLock::acquire(out).unwrap();
        match inspect(&lock).unwrap() {
            Found::Broken(why) => assert!(why.contains("state.sled"), "{why}"),
            Found::Readable(_) => panic!("garbage read as a DB"),
            Found::Missing => panic!("missing"),
        }
        let moved = crate::outdir::state::move_aside(&lock, "broken").unwrap();
        assert!(moved.is_dir());
        assert!(matches!(inspect(&lock).unwrap(), Found::Missing));
    }

    /// Deterministic "random" bytes in every file under `dir`, same length as before.
    pub(crate) fn overwrite_with_garbage(dir: &Path) {
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let len = std::fs::metadata(&p).unwrap().len().max(64) as usize;
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                std::fs::write(&p, bytes).unwrap();
            }
        }
    }
}
