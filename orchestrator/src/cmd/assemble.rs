//! `fidshard assemble CONFIG`: only the last step, samples.npz from what the state DB records.
use crate::job::config::Job;
use crate::outdir::finish::{assemble_interruptible, final_snapshot};
use crate::outdir::lock::JobLock;
use crate::outdir::snapshot::JobState;
use crate::outdir::state::StateDb;
use anyhow::{anyhow, Result};
use fidshard_core::Fatal;

/// `fidshard assemble CONFIG`: only the last step, from what the state DB records.
pub(crate) fn run(config: &std::path::Path) -> Result<()> {
    crate::sys::signals::install()?;
    let mut job = Job::load(config)?;
    crate::npz::check_target(&crate::outdir::OutDir::new(&job.out_dir).npz())
        .map_err(|e| Fatal::input(anyhow!(e)))?;
    if let Some(n) = partition_count(&job) {
        return assemble_partitions(&mut job, n);
    }
    let _lock = JobLock::acquire(&job.out_dir)?;
    if !StateDb::exists(&job.out_dir) {
        let c = config.display();
        let hint = if crate::outdir::OutDir::new(&job.out_dir).samples().is_dir() {
            format!(
                "`fidshard repair {c}` rebuilds the records from samples/, or `fidshard run {c}` \
                 does that and samples what is missing"
            )
        } else {
            format!("use `fidshard run {c}`")
        };
        return Err(Fatal::input(anyhow!(
            "{}: no recorded run here; {hint}",
            job.out_dir.display()
        ))
        .into());
    }
    let db = StateDb::open(&job.out_dir)?;
    let shards = job.plan();
    let done = db.done_records()?.len();
    if done < shards.len() {
        return Err(Fatal::input(anyhow!(
            "{}: {done} of {} shards are recorded; `fidshard run {}` samples the rest and assembles",
            job.out_dir.display(),
            shards.len(),
            config.display()
        ))
        .into());
    }
    assemble_interruptible(&job, db.done_records()?)?.map_err(|e| anyhow!(e))?;
    final_snapshot(&job, &db, JobState::Complete);
    Ok(())
}

/// The number of partitions of the job's current layout, when it was run as partitions (and
/// not also completed as a whole).
fn partition_count(job: &Job) -> Option<u32> {
    let parts = crate::outdir::partitions::list(&job.out_dir);
    let newest = parts
        .iter()
        .max_by_key(|(_, dir)| std::fs::metadata(dir).and_then(|m| m.modified()).ok())?;
    Some(newest.0.n)
}

/// A job run as partitions: the npz from every partition's exported records, under the same
/// lock the finishing partitions take; says which partitions are not complete yet.
fn assemble_partitions(job: &mut Job, n: u32) -> Result<()> {
    job.partition = crate::job::partition::Partition { k: 0, n };
    let _lock = crate::outdir::partitions::AssembleLock::take(&job.out_dir)?;
    match crate::outdir::partitions::merged(job)? {
        Ok(records) => {
            assemble_interruptible(job, records)?.map_err(|e| anyhow!(e))?;
            Ok(())
        }
        Err(missing) => {
            let list: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
            Err(Fatal::input(anyhow!(
                "{}: partitions {} of {n} have not completed; run them (`fidshard run {} --partition K/{n}`, or requeue their array tasks), then assemble",
                job.out_dir.display(),
                list.join(", "),
                job.source.display()
            ))
            .into())
        }
    }
}
