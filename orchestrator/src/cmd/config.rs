//! `fidshard config CONFIG [--set key=value ...]`: the job as fidshard will run it, every default
//! filled in, paths made absolute, the `--set` overrides applied (outdir/resolved.rs). The output
//! is itself a job file; `run` writes the same text to `OUT/job.resolved.yaml`. Needs no
//! weights.
use crate::job::config::Job;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct ConfigArgs {
    /// The job's YAML file.
    config: PathBuf,
}

pub(crate) fn run(args: ConfigArgs) -> Result<()> {
    let job = Job::load_without_weights(&args.config)?;
    crate::sys::out::print(&crate::outdir::resolved::resolved_yaml(&job)?);
    Ok(())
}
