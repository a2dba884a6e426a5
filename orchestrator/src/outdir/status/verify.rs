//! `status --verify`: a complete job read in full, every PNG and every byte of the npz against
//! the records. Opens no file for writing.
use crate::outdir::lock::{JobLock, Probe};
use crate::outdir::state::{Recorded, ShardRecord, StateDb};
use crate::outdir::OutDir;
use anyhow::{anyhow, Result};
use std::path::{Path, PathBuf};

/// Reads a complete job in full: every PNG against the CRC-32 recorded for it, and every image
/// and label of the npz against the PNGs and the records (`npz::check_against_pngs`); returns
/// the seconds taken. Damage is an error (exit 1) naming the file and what is wrong.
pub(crate) fn verify_complete(out_dir: &Path, n: u64) -> Result<f64> {
    let started = std::time::Instant::now();
    let out = OutDir::new(out_dir);
    let recorded = if crate::outdir::partitions::list(out_dir).is_empty() {
        whole_job_labels(out_dir)?
    } else {
        Recorded::of(&mut partition_records(out_dir)?)
    };
    if recorded.labels.len() as u64 != n || recorded.crc32.len() as u64 != n {
        return Err(anyhow!(
            "{}: the records hold {} samples, the job {n}; `fidshard run` records the rest",
            out_dir.display(),
            recorded.labels.len()
        ));
    }
    let side = crate::npz::npz_image_side(&out.npz())?;
    let found = crate::npz::check_against_pngs(
        &out.npz(),
        &out.samples(),
        side,
        &recorded.labels,
        &recorded.crc32,
    );
    let mut damage = Vec::new();
    if let Some((_, first)) = found.bad_pngs.first() {
        damage.push(format!(
            "{} PNGs missing or not the recorded ones (first: {first})",
            found.bad_pngs.len()
        ));
    }
    if let Some(why) = &found.npz {
        damage.push(format!("{}: {why}", out.npz().display()));
    }
    if !damage.is_empty() {
        return Err(anyhow!(damage.join("; ")));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The labels and CRCs a job run on one node recorded (its `state.sled`, read under the job
/// lock).
fn whole_job_labels(out_dir: &Path) -> Result<Recorded> {
    match JobLock::probe(out_dir)? {
        Probe::Free(_guard) => {
            let db = StateDb::open(out_dir)?;
            Ok(db.recorded_labels()?)
        }
        Probe::Held(h) => Err(fidshard_core::input_error!(
            "{}: a coordinator (pid {}) is running; verify after it finishes",
            out_dir.display(),
            h.pid
        )),
    }
}

/// The records that the partitions of one layout exported, when all N of them did.
fn partition_records(out_dir: &Path) -> Result<Vec<ShardRecord>> {
    let parts = crate::outdir::partitions::list(out_dir);
    let mut layouts: Vec<u32> = parts.iter().map(|(p, _)| p.n).collect();
    layouts.dedup();
    for n in layouts {
        let dirs: Vec<&PathBuf> = parts
            .iter()
            .filter(|(p, _)| p.n == n)
            .map(|(_, d)| d)
            .collect();
        if dirs.len() != n as usize {
            continue;
        }
        if let Some(all) = all_exported(&dirs)? {
            return Ok(all);
        }
    }
    Err(anyhow!(
        "{}: no layout of partitions has exported the records of all its partitions",
        out_dir.display()
    ))
}

/// The records exported in every one of `dirs`, or `None` when one has not exported.
fn all_exported(dirs: &[&PathBuf]) -> Result<Option<Vec<ShardRecord>>> {
    let (mut all, mut every) = (Vec::new(), true);
    for dir in dirs {
        match crate::outdir::partitions::exported(dir)? {
            Some(records) => all.extend(records),
            None => every = false,
        }
    }
    Ok(every.then_some(all))
}
