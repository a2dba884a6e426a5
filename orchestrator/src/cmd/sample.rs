//! `fidshard sample CONFIG --out DIR`: samples a range of indices in one worker process and
//! writes `DIR/{index:06}.png`. The job is resolved and checked here; the worker binary samples.
use crate::job::config::Job;
use crate::worker::{no_answer, run_task, Output};
use anyhow::Result;
use fidshard_core::task::Task;
use fidshard_core::DeviceSpec;
use std::path::PathBuf;

pub(crate) struct SampleArgs {
    pub config: PathBuf,
    pub out: PathBuf,
    pub range: Option<(u64, u64)>,
    pub device: DeviceSpec,
    pub batch_size: Option<usize>,
    pub save_latents: bool,
}

/// Parses `A..B` (half-open, like Rust ranges).
pub(crate) fn parse_range(s: &str) -> std::result::Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}` is not a range A..B"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("`{a}` is not a sample index"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("`{b}` is not a sample index"))?;
    if a >= b {
        return Err(format!("range {a}..{b} is empty"));
    }
    Ok((a, b))
}

/// `--out` must be a folder (or a path where one can be made) that this process can write.
fn check_out(out: &std::path::Path) -> Result<()> {
    let shown = out.display();
    if out.exists() && !out.is_dir() {
        return Err(fidshard_core::input_error!(
            "--out {shown}: exists and is not a folder; pass a new or existing folder for the PNGs"
        ));
    }
    if let Some(dir) = crate::sys::access::nearest_existing_dir(out) {
        crate::sys::access::check_writable_dir(dir).map_err(|e| {
            fidshard_core::input_error!(
                "--out {shown}: cannot write in {} ({e}); pass a folder you can write",
                dir.display()
            )
        })?;
    }
    Ok(())
}

pub(crate) fn run(args: SampleArgs) -> Result<()> {
    check_out(&args.out)?;
    crate::fetch::prepare(&args.config, crate::fetch::For::Other)?;
    let mut job = Job::load(&args.config)?;
    if let Some(b) = args.batch_size {
        if b == 0 {
            return Err(fidshard_core::input_error!(
                "--batch-size must be at least 1"
            ));
        }
        job.settings.batch_size = fidshard_core::BatchSize::Fixed(b);
    }
    let n = job.settings.num_samples;
    let (a, b) = args.range.unwrap_or((0, n));
    if b > n {
        return Err(fidshard_core::input_error!(
            "--range {a}..{b} goes past num_samples = {n} in {}",
            args.config.display()
        ));
    }
    let task = Task::Sample {
        settings: Box::new(job.settings),
        out: args.out.clone(),
        range: (a, b),
        device: args.device,
        save_latents: args.save_latents,
    };
    run_task(&task, Output::Inherit)?;
    // An exit 0 is not enough: the worker's answer is the images (and their labels).
    if let Some(missing) = unwritten(&args.out, (a, b), n) {
        return Err(no_answer(
            "the sample task",
            &format!("{} was not written", missing.display()),
        ));
    }
    Ok(())
}

/// The first file the sample task should have written in `out` and did not.
fn unwritten(out: &std::path::Path, (a, b): (u64, u64), n: u64) -> Option<PathBuf> {
    (a..b)
        .map(|i| out.join(fidshard_core::output::png_name(i, n)))
        .chain(std::iter::once(out.join("labels.json")))
        .find(|p| !p.is_file())
}
