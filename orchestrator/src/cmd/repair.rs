//! `fidshard repair CONFIG`: rebuilds the state from the PNGs (outdir/rebuild.rs does the work).
use crate::job::config::Job;
use crate::job::fingerprint::Fingerprint;
use crate::outdir::lock::JobLock;
use crate::outdir::rebuild::{
    check_saved_fingerprint, fresh, inspect, plan_meta, recover_trusting, set_aside_broken, Found,
};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// `fidshard repair CONFIG`: rebuilds the state from the PNGs, whatever the DB holds (a
/// readable DB is moved to `state.sled.old-<unix>`, an unreadable one to `.broken-<unix>`).
pub(crate) fn run(config: &Path) -> Result<()> {
    let job = Job::load(config)?;
    let lock = JobLock::acquire(&job.out_dir)?;
    let fp = Fingerprint::compute(&job)?;
    let found = inspect(&lock)?;
    check_saved_fingerprint(&lock, &fp)?;
    // The CRCs a readable state recorded are kept: a PNG that contradicts them is not trusted.
    let mut known = HashMap::new();
    let moved = match found {
        Found::Missing => None,
        Found::Readable(db) => {
            // Refuse another job's DB: rebuilding would bind its PNGs to this job.
            if db.meta()?.is_some() {
                db.check_or_init(&fp, plan_meta(&job), false)?;
            }
            for r in db.done_records()? {
                known.extend(r.shard.indices().zip(r.crc32.iter().copied()));
            }
            drop(db);
            Some(
                crate::outdir::state::move_aside(&lock, "old")
                    .context("moving the old state aside")?,
            )
        }
        Found::Broken(why) => Some(set_aside_broken(&lock, &why)?),
    };
    let db = fresh(&lock, &job, &fp)?;
    let mut report = recover_trusting(&job, &db, &known)?;
    report.moved_aside = moved;
    tracing::info!(%report, "state rebuilt");
    crate::sys::out::outln!("{}: {report}", job.out_dir.display());
    Ok(())
}
