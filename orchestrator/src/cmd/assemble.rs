//! `fidshard assemble CONFIG`: only the last step, samples.npz from what the state DB records.
use crate::cmd::finish::assemble_npz;
use crate::cmd::run::final_snapshot;
use crate::job::config::Job;
use crate::outdir::lock::JobLock;
use crate::outdir::snapshot::JobState;
use crate::outdir::state::StateDb;
use crate::sys::exit::Fatal;
use anyhow::{anyhow, Result};

/// `fidshard assemble CONFIG`: only the last step, from what the state DB records.
pub(crate) fn run(config: &std::path::Path) -> Result<()> {
    let job = Job::load(config)?;
    let _lock = JobLock::acquire(&job.out_dir).map_err(|e| e.fatal())?;
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
    let db = StateDb::open(&job.out_dir).map_err(|e| e.fatal())?;
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
    assemble_npz(&job, db.done_records()?).map_err(|e| anyhow!(e))?;
    final_snapshot(&job, &db, JobState::Complete);
    Ok(())
}
