//! `fidshard run CONFIG`: the whole job. Lock the out dir, check the fingerprint, skip recorded
//! shards (after checking their files), check models and disk before spawning anything, let the
//! coordinator sample the rest, then assemble `samples.npz` (outdir/finish/). Each step is one
//! function below, called in order by [`run`] and [`run_with_state`].
use crate::coordinator::{Coordinator, Outcome};
use crate::job::config::Job;
use crate::job::devices::WorkerDevice;
use crate::job::partition::Partition;
use crate::job::plan::Shard;
use crate::outdir::finish::{self, Checked, PartitionEnd};
use crate::outdir::lock::JobLock;
use crate::outdir::snapshot::JobState;
use crate::outdir::state::StateDb;
use crate::outdir::OutDir;

use anyhow::{anyhow, Context, Result};
use fidshard_core::{Exit, Fatal};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) struct RunArgs {
    pub config: PathBuf,
    pub restart: bool,
    pub force: bool,
    pub grace: Duration,
    /// `--partition K/N` or `slurm` (else `partitions:` of the job file, else the whole job).
    pub partition: Option<crate::job::partition::Requested>,
}

/// Rounds of "assemble, find bad files, redo their shards" before giving up.
const REPAIR_ROUNDS: usize = 2;

pub(crate) fn run(args: RunArgs) -> Result<Exit> {
    finish::mark_started();
    crate::sys::signals::install()?;
    // Weights from the hub or URLs, downloaded here, once, before any worker exists.
    crate::fetch::prepare(&args.config, crate::fetch::For::Run(args.partition))?;
    let (job, devices) = load_job(&args)?;
    // The out dir is the job's (shared by its partitions); the state is this coordinator's.
    crate::outdir::claim::claim(&job.out_dir)?;
    let lock = JobLock::acquire(&job.state_dir())?;
    let result = run_locked(&args, &job, &devices, lock);
    // `notify:` (once the lock is released: a hook may run `fidshard status`).
    crate::notify::fire(&job, &result);
    result
}

/// The run under this coordinator's lock (released when it returns).
fn run_locked(args: &RunArgs, job: &Job, devices: &[WorkerDevice], lock: JobLock) -> Result<Exit> {
    let out = job.out_dir.clone();
    let started = Instant::now();
    // Build the DiT and the VAE once on the CPU before anything in the out dir is deleted or
    // written: a bad checkpoint or VAE then fails in seconds with one message (exit 2), instead
    // of once per worker, and leaves the samples and the state as they were.
    crate::coordinator::model_check::check_models(job)?;
    // `evaluate:`: the Inception weights are checked (and hashed) before anything is sampled.
    let features = crate::evaluate::features_spec(job)?;
    let db = open_state(job, &lock, args)?;
    let run = Run {
        job,
        db: &db,
        args,
        devices,
        started,
        samples_dir: OutDir::new(&out).samples(),
        features,
    };
    let result = run_with_state(&run);
    if let Err(e) = &result {
        warn_if_state_failed(e, &out);
    }
    result
}

/// The job with its partition resolved, and its worker devices. Refused (exit 2, nothing
/// written): a partition that does not fit the plan, a FIFO or a device where samples.npz goes
/// (it would block its verification), a device that is not there.
fn load_job(args: &RunArgs) -> Result<(Job, Vec<WorkerDevice>)> {
    let mut job = Job::load(&args.config)?;
    let (partition, why) = Partition::resolve(args.partition, job.partitions_from)
        .and_then(|(p, why)| {
            p.check_plan(job.settings.num_samples, job.run.shard_size)?;
            Ok((p, why))
        })
        .map_err(|e| fidshard_core::input_error!("{}: {e}", args.config.display()))?;
    job.partition = partition;
    crate::npz::check_target(&OutDir::new(&job.out_dir).npz())
        .map_err(|e| Fatal::input(anyhow!(e)))?;
    let devices = job.workers()?;
    // A whole job that asked for no partitioning says nothing about partitions.
    let partitioned = (why != crate::job::partition::Source::Whole).then_some((partition, why));
    tracing::info!(
        config = %args.config.display(),
        samples = job.samples_owned(),
        partition = partitioned.as_ref().map(|(p, _)| tracing::field::display(p)),
        partition_from = partitioned.as_ref().map(|(_, w)| tracing::field::display(w)),
        devices = %crate::job::devices::describe(&devices),
        out = %job.out_dir.display(),
        "fidshard run"
    );
    if let Some(w) = crate::job::shared_gpus::warning(&devices, |k| std::env::var(k).ok()) {
        tracing::warn!("{w}");
    }
    Ok((job, devices))
}

/// Opens this coordinator's state under `lock` (after `--restart` deleted it; rebuilt from the
/// PNGs when it is missing or unreadable), once the fingerprint is the out dir's and the disk
/// can hold a new job; then records the fingerprint and the resolved job beside the results.
fn open_state(job: &Job, lock: &JobLock, args: &RunArgs) -> Result<StateDb> {
    let out = &job.out_dir;
    if args.restart {
        tracing::warn!(out = %out.display(), "--restart: deleting the recorded state and samples (of every partition)");
        crate::outdir::partitions::restart(job, lock)?;
    }
    let fp = crate::job::fingerprint::Fingerprint::compute(job)?;
    // Every coordinator of the out dir (partitions, the whole job) runs one job: another one is
    // refused here, before any state is opened or anything sampled.
    crate::outdir::partitions::check_fingerprint(out, &fp)?;
    let fresh = !StateDb::exists(&job.state_dir()) && !OutDir::new(out).samples().is_dir();
    if args.restart || fresh {
        // A new job: check the disk before the state is created, so that a refusal leaves
        // nothing behind (a resumed job checks what is left to sample, in the first round).
        preflight(job, job.samples_owned(), args.force)?;
    }
    let db = if args.restart {
        crate::outdir::rebuild::open_for_restart(lock, job, &fp)?
    } else {
        crate::outdir::rebuild::open_for_run(lock, job, &fp)?
    };
    // The job's fingerprint at the root, shared by the partitions (and for `grid OUT`, `repair`).
    crate::outdir::partitions::bind_fingerprint(out, &fp)?;
    crate::outdir::partitions::import_other_layouts(job, &db)?;
    // What produces this npz, beside it: the job with every default and --set applied.
    let resolved = crate::outdir::resolved::resolved_yaml(job)?;
    fidshard_core::output::write_atomic(&OutDir::new(out).resolved_job(), resolved.as_bytes())?;
    Ok(db)
}

/// A sled failure in the middle of a run costs no finished work, since every recorded shard's
/// PNGs are on disk; but say so, and how to get the records back.
fn warn_if_state_failed(e: &anyhow::Error, out: &std::path::Path) {
    let state_error = e.chain().any(|c| {
        c.downcast_ref::<crate::outdir::state::StateError>()
            .is_some()
    });
    if state_error {
        tracing::error!(
            out = %out.display(),
            "the state database failed; the finished PNGs in samples/ are kept, and the next \
             `fidshard run` (or `fidshard repair CONFIG`) rebuilds the records from them if the \
             database stays unreadable"
        );
    }
}

/// What every step of a run with its state open needs.
struct Run<'a> {
    job: &'a Job,
    db: &'a StateDb,
    args: &'a RunArgs,
    devices: &'a [WorkerDevice],
    /// When the job lock was taken (the seconds of the completion line).
    started: Instant,
    samples_dir: PathBuf,
    /// With `evaluate:`: what the workers compute of each shard.
    features: Option<fidshard_core::protocol::FeaturesSpec>,
}

/// What a round of [`run_with_state`] came to.
enum Next {
    /// The run ends with this code.
    Exit(Exit),
    /// Shards were forgotten (damaged PNGs): another round samples them.
    Again,
}

/// Rounds of "sample what is pending, then finish" until the job is complete, or its end is
/// decided (stopped, shards failed, a partition done); a round after damaged files were found
/// samples their shards again.
fn run_with_state(r: &Run) -> Result<Exit> {
    prepare_samples_dir(r)?;
    for round in 0..=REPAIR_ROUNDS {
        if let Next::Exit(exit) = one_round(r, round)? {
            return Ok(exit);
        }
    }
    Err(anyhow!(
        "samples.npz: files kept going bad after {REPAIR_ROUNDS} repair rounds"
    ))
}

/// Creates `samples/` and removes the temporary files an interrupted run left: of the whole
/// out dir for the whole job, only of this partition's own samples for a partition (other
/// partitions write into samples/ and the root at the same time).
fn prepare_samples_dir(r: &Run) -> Result<()> {
    let (job, samples_dir) = (r.job, &r.samples_dir);
    std::fs::create_dir_all(samples_dir)
        .with_context(|| format!("cannot create {}", samples_dir.display()))?;
    let features = OutDir::new(&job.out_dir).features();
    let removed = if job.partition.is_whole() {
        crate::outdir::state::remove_stale_temps(samples_dir)?
            + crate::outdir::state::remove_stale_temps(&job.out_dir)?
            + crate::outdir::state::remove_stale_temps(&features)?
    } else {
        let (a, b) = job.sample_range();
        let own = |name: &str| {
            name.trim_start_matches('.')
                .split('.')
                .next()
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|i| (a..b).contains(&i))
        };
        crate::outdir::state::remove_stale_temps_where(samples_dir, own)?
            + crate::outdir::state::remove_stale_temps(&job.state_dir())?
            // A shard's features file is named by its first index (`0000000064-64.features`).
            + crate::outdir::state::remove_stale_temps_where(&features, |name| {
                own(name.split('-').next().unwrap_or_default())
            })?
    };
    if removed > 0 {
        tracing::info!(
            removed,
            "removed temporary files of an earlier, interrupted run"
        );
    }
    Ok(())
}

/// One round: sample the pending shards, then end a partition, or recheck a complete job, or
/// assemble the npz.
fn one_round(r: &Run, round: usize) -> Result<Next> {
    let (job, db) = (r.job, r.db);
    let todo = pending_shards(db, &job.plan(), &r.samples_dir, job.settings.num_samples)?;
    if todo.is_empty() && !job.partition.is_whole() {
        return end_partition(r);
    }
    if round == 0 && todo.is_empty() && OutDir::new(&job.out_dir).npz().is_file() {
        if let Some(next) = recheck_complete(r)? {
            return Ok(next);
        }
    }
    if !todo.is_empty() {
        if round == 0 {
            preflight(job, todo.iter().map(Shard::len).sum(), r.args.force)?;
        }
        if let Some(exit) = sample(r, todo)? {
            return Ok(Next::Exit(exit));
        }
        if !job.partition.is_whole() {
            return end_partition(r);
        }
    }
    if let Some(sig) = crate::sys::signals::pending() {
        tracing::warn!("{sig}: stopping before assembly; run again to finish");
        return Ok(Next::Exit(Exit::Interrupted));
    }
    assemble(r, round)
}

/// "Complete" means verified (outdir/finish/check.rs): once in full, then against the record
/// of that verification. A damaged PNG gets its shard sampled again (and the npz assembled
/// again); a damaged npz is assembled again from the PNGs (`None`: go on to the assembly).
fn recheck_complete(r: &Run) -> Result<Option<Next>> {
    let (job, db) = (r.job, r.db);
    match finish::check_complete(job, db.done_records()?)? {
        Checked::Complete => {
            finish::final_snapshot(job, db, JobState::Complete);
            Ok(Some(Next::Exit(score(r, &db.done_records()?)?)))
        }
        Checked::BadPngs(indices) => {
            let bad = forget_samples(r, &indices)?;
            tracing::warn!(
                shards = ?bad,
                "PNGs of a complete job are missing or damaged; sampling their shards again"
            );
            Ok(Some(Next::Again))
        }
        Checked::BadNpz(why) => {
            tracing::warn!("{why}; assembling it again from the PNGs");
            Ok(None)
        }
    }
}

/// Assembles the npz: the end of a complete run, or another round when PNGs turned out bad
/// after they were recorded (until [`REPAIR_ROUNDS`]).
fn assemble(r: &Run, round: usize) -> Result<Next> {
    let (job, db) = (r.job, r.db);
    match finish::assemble_interruptible(job, db.done_records()?)? {
        Ok(()) => {
            finish::log_complete(job, Some(r.started.elapsed().as_secs_f64()));
            finish::final_snapshot(job, db, JobState::Complete);
            Ok(Next::Exit(score(r, &db.done_records()?)?))
        }
        Err(e) if round < REPAIR_ROUNDS && e.bad_indices().is_some() => {
            let bad = forget_samples(r, e.bad_indices().unwrap_or_default())?;
            tracing::warn!(shards = ?bad, "PNGs missing or corrupt after recording; redoing their shards");
            Ok(Next::Again)
        }
        Err(e) => Err(anyhow!(e)).context("assembling samples.npz"),
    }
}

/// `evaluate:` of a complete job (assembled from `records`): the metrics of `samples.npz` into
/// `OUT/metrics.json` from the features its workers wrote (evaluate/), unless that file already
/// scores this very npz with these settings; the last line says them.
fn score(r: &Run, records: &[crate::outdir::state::ShardRecord]) -> Result<Exit> {
    if let Some(report) = crate::evaluate::score_job(r.job, records, r.devices)? {
        let json = OutDir::new(&r.job.out_dir).metrics();
        tracing::info!(metrics = %json.display(), "evaluated");
        eprintln!("fidshard: {}", report.one_line());
    }
    Ok(Exit::Complete)
}

/// Removes the PNGs of `indices` (so that the worker samples them again instead of reusing
/// them) and forgets their shards' records; returns those shards.
fn forget_samples(r: &Run, indices: &[u64]) -> Result<BTreeSet<u64>> {
    let (job, n) = (r.job, r.job.settings.num_samples);
    let bad: BTreeSet<u64> = indices.iter().map(|&i| job.shard_of(i)).collect();
    for &i in indices {
        let _ = std::fs::remove_file(r.samples_dir.join(fidshard_core::output::png_name(i, n)));
    }
    for &id in &bad {
        r.db.remove_done(id)?;
    }
    Ok(bad)
}

/// A partition's end ([`finish::finish_partition`]): the exit code (after scoring the job when
/// this partition found its npz complete), or another round when shards with damaged PNGs
/// were forgotten, to be sampled again.
fn end_partition(r: &Run) -> Result<Next> {
    let (job, db) = (r.job, r.db);
    match finish::finish_partition(job, db)? {
        PartitionEnd::Done {
            complete: Some(records),
            ..
        } => Ok(Next::Exit(score(r, &records)?)),
        PartitionEnd::Done { exit, .. } => Ok(Next::Exit(exit)),
        PartitionEnd::Redo(bad) => {
            for id in bad {
                db.remove_done(id)?;
            }
            Ok(Next::Again)
        }
    }
}

/// Shards not recorded done, or recorded but with files missing (those records are dropped).
fn pending_shards(
    db: &StateDb,
    shards: &[Shard],
    samples_dir: &Path,
    n: u64,
) -> Result<Vec<Shard>> {
    for id in db.verify_done(samples_dir, n)? {
        tracing::warn!(
            shard = id,
            "recorded shard has missing files; it will be sampled again"
        );
        db.remove_done(id)?;
    }
    let done: BTreeSet<u64> = db.done_records()?.iter().map(|r| r.shard.id).collect();
    Ok(shards
        .iter()
        .filter(|s| !done.contains(&s.id))
        .copied()
        .collect())
}

/// Lets the coordinator sample `todo` on the workers; the run's end when sampling decided it
/// (a signal, a stop, shards out of retries), `None` when every shard is recorded.
fn sample(r: &Run, todo: Vec<Shard>) -> Result<Option<Exit>> {
    let (job, db) = (r.job, r.db);
    // The models were checked once in `run`, before anything was written.
    let done = db.done_records()?;
    let done_samples: u64 = done.iter().map(|r| r.shard.len()).sum();
    tracing::info!(
        shards = todo.len(),
        workers = r.devices.len(),
        devices = %r.devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","),
        "sampling"
    );
    let c = Coordinator {
        job,
        db,
        devices: r.devices.to_vec(),
        grace: r.args.grace,
        samples_dir: r.samples_dir.clone(),
        log_dir: OutDir::new(job.state_dir()).logs(),
        features: r.features.clone(),
    };
    let total = job.plan().len() as u64;
    match c.run(todo, (done.len() as u64, done_samples), total)? {
        Outcome::Stopped { reason } => Err(finish::stopped(job, db, reason)),
        Outcome::Interrupted => {
            tracing::warn!("interrupted; run the same command again to resume");
            Ok(Some(Exit::Interrupted))
        }
        Outcome::Finished { failed } if failed > 0 => {
            finish::shards_failed(job, db, failed).map(Some)
        }
        Outcome::Finished { .. } => Ok(None),
    }
}

/// Refuses to start when the disk cannot hold what the remaining shards will write (`--force`
/// overrides).
fn preflight(job: &Job, samples: u64, force: bool) -> Result<()> {
    let need = crate::job::disk::disk_needed(job, samples);
    let free = crate::job::disk::free_bytes(&job.out_dir)?;
    if free < need.total() && !force {
        return Err(Fatal::input(anyhow!(
            "{}: {} free but the job needs about {} (PNGs {} + npz {}); free space, choose another out_dir, or pass --force",
            job.out_dir.display(),
            crate::sys::size::human(free),
            crate::sys::size::human(need.total()),
            crate::sys::size::human(need.pngs),
            crate::sys::size::human(need.npz),
        ))
        .into());
    }
    Ok(())
}
