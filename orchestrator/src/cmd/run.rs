//! `fidshard run CONFIG`: the whole job. Lock the out dir, check the fingerprint, skip recorded
//! shards (after checking their files), check models and disk before spawning anything, let the
//! coordinator sample the rest, then assemble `samples.npz`.
use crate::cmd::finish::{assemble_interruptible, Checked, PartitionEnd};
use crate::coordinator::{Coordinator, Outcome};
use crate::job::config::Job;
use crate::job::devices::WorkerDevice;
use crate::job::plan::Shard;
use crate::outdir::lock::JobLock;
use crate::outdir::snapshot::{self, JobState, Snapshot};
use crate::outdir::state::StateDb;
use crate::sys::time::round1;
use anyhow::{anyhow, Context, Result};
use fidshard_core::{Exit, Fatal};
use std::collections::BTreeSet;
use std::path::PathBuf;
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

/// When this `run` started (the wall time of a complete job in `status`).
pub(crate) static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

pub(crate) fn run(args: RunArgs) -> Result<Exit> {
    STARTED.get_or_init(Instant::now);
    crate::sys::signals::install()?;
    // Weights from the hub or URLs, downloaded here, once, before any worker exists.
    crate::fetch::prepare(&args.config, crate::fetch::For::Run(args.partition))?;
    let mut job = Job::load(&args.config)?;
    let (partition, why) =
        crate::job::partition::Partition::resolve(args.partition, job.partitions_from_slurm)
            .and_then(|(p, why)| {
                p.check_plan(job.settings.num_samples, job.run.shard_size)?;
                Ok((p, why))
            })
            .map_err(|e| fidshard_core::input_error!("{}: {e}", args.config.display()))?;
    job.partition = partition;
    let out = job.out_dir.clone();
    // A FIFO or a device where samples.npz goes would block its verification: refused now.
    crate::npz::check_target(&crate::outdir::OutDir::new(&out).npz())
        .map_err(|e| Fatal::input(anyhow!(e)))?;
    // Resolved before anything is written: a device that is not there is exit 2, no damage.
    let devices = job.workers()?;
    tracing::info!(
        config = %args.config.display(),
        samples = job.samples_owned(),
        partition = %partition,
        partition_from = %why,
        devices = %crate::job::devices::describe(&devices),
        out = %out.display(),
        "fidshard run"
    );
    // The out dir is the job's (shared by its partitions); the state is this coordinator's.
    crate::outdir::claim::claim(&out)?;
    let state = job.state_dir();
    let lock = JobLock::acquire(&state)?;
    let started = Instant::now();
    // Build the DiT and the VAE once on the CPU before anything in the out dir is deleted or
    // written: a bad checkpoint or VAE then fails in seconds with one message (exit 2), instead
    // of once per worker, and leaves the samples and the state as they were.
    crate::cmd::validate::check_models(&job)?;
    if args.restart {
        tracing::warn!(out = %out.display(), "--restart: deleting the recorded state and samples (of every partition)");
        crate::outdir::partitions::restart(&job, &lock)?;
    }
    let fp = crate::job::fingerprint::Fingerprint::compute(&job)?;
    // Every coordinator of the out dir (partitions, the whole job) runs one job: another one is
    // refused here, before any state is opened or anything sampled.
    crate::outdir::partitions::check_fingerprint(&out, &fp)?;
    let fresh = !StateDb::exists(&state) && !crate::outdir::OutDir::new(&out).samples().is_dir();
    if args.restart || fresh {
        // A new job: check the disk before the state is created, so that a refusal leaves
        // nothing behind (a resumed job checks what is left to sample, below).
        preflight(&job, job.samples_owned(), args.force)?;
    }
    // Opens the state, or rebuilds it from the PNGs when it is missing or unreadable.
    let db = if args.restart {
        crate::outdir::rebuild::open_for_restart(&lock, &job, &fp)?
    } else {
        crate::outdir::rebuild::open_for_run(&lock, &job, &fp)?
    };
    // The job's fingerprint at the root, shared by the partitions (and for `grid OUT`, `repair`).
    crate::outdir::partitions::bind_fingerprint(&out, &fp)?;
    crate::outdir::partitions::import_other_layouts(&job, &db)?;
    // What produces this npz, beside it: the job with every default and --set applied.
    let resolved = crate::cmd::config::resolved_yaml(&job)?;
    fidshard_core::output::write_atomic(
        &crate::outdir::OutDir::new(&out).resolved_job(),
        resolved.as_bytes(),
    )?;
    let result = run_with_state(&job, &db, &args, started, &devices);
    if let Err(e) = &result {
        warn_if_state_failed(e, &out);
    }
    result
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

fn run_with_state(
    job: &Job,
    db: &StateDb,
    args: &RunArgs,
    started: Instant,
    devices: &[WorkerDevice],
) -> Result<Exit> {
    let out = &job.out_dir;
    let samples_dir = crate::outdir::OutDir::new(out).samples();
    std::fs::create_dir_all(&samples_dir)
        .with_context(|| format!("cannot create {}", samples_dir.display()))?;
    let removed = if job.partition.is_whole() {
        crate::outdir::state::remove_stale_temps(&samples_dir)?
            + crate::outdir::state::remove_stale_temps(out)?
    } else {
        // Other partitions write into samples/ and the root at the same time: only the
        // temporary files of this partition's own samples are stale for sure.
        let (a, b) = job.sample_range();
        let own = |name: &str| {
            name.trim_start_matches('.')
                .split('.')
                .next()
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|i| (a..b).contains(&i))
        };
        crate::outdir::state::remove_stale_temps_where(&samples_dir, own)?
            + crate::outdir::state::remove_stale_temps(&job.state_dir())?
    };
    if removed > 0 {
        tracing::info!(
            removed,
            "removed temporary files of an earlier, interrupted run"
        );
    }
    let shards = job.plan();

    for round in 0..=REPAIR_ROUNDS {
        let todo = pending_shards(db, &shards, &samples_dir, job.settings.num_samples)?;
        let npz_path = crate::outdir::OutDir::new(&job.out_dir).npz();
        if todo.is_empty() && !job.partition.is_whole() {
            match end_partition(job, db)? {
                Some(exit) => return Ok(exit),
                None => continue,
            }
        }
        if round == 0 && todo.is_empty() && npz_path.is_file() {
            // "Complete" means verified (cmd/finish.rs): once in full, then against the
            // record of that verification. A damaged npz is assembled again from the PNGs; a
            // damaged PNG gets its shard sampled again, and the npz re-assembled.
            match crate::cmd::finish::check_complete(job, db.done_records()?)? {
                Checked::Complete => {
                    final_snapshot(job, db, JobState::Complete);
                    return Ok(Exit::Complete);
                }
                Checked::BadPngs(indices) => {
                    let n = job.settings.num_samples;
                    let bad: BTreeSet<u64> = indices.iter().map(|&i| job.shard_of(i)).collect();
                    tracing::warn!(
                        shards = ?bad,
                        "PNGs of a complete job are missing or damaged; sampling their shards again"
                    );
                    // Removed, so that the worker samples them again instead of reusing them.
                    for &i in &indices {
                        let _ = std::fs::remove_file(
                            samples_dir.join(fidshard_core::output::png_name(i, n)),
                        );
                    }
                    for id in bad {
                        db.remove_done(id)?;
                    }
                    continue;
                }
                Checked::BadNpz(why) => tracing::warn!("{why}; assembling it again from the PNGs"),
            }
        }
        if !todo.is_empty() {
            if round == 0 {
                preflight(job, todo.iter().map(Shard::len).sum(), args.force)?;
            }
            let outcome = sample(job, db, devices, args, todo, shards.len() as u64)?;
            match outcome {
                Outcome::Stopped { reason } => {
                    final_snapshot(job, db, JobState::Interrupted);
                    return Err(fidshard_core::Fatal::input(anyhow!(reason)).into());
                }
                Outcome::Interrupted => {
                    tracing::warn!("interrupted; run the same command again to resume");
                    return Ok(Exit::Interrupted);
                }
                Outcome::Finished { failed } if failed > 0 => {
                    let ranges = missing_ranges(db)?;
                    final_snapshot(job, db, JobState::Failed);
                    tracing::error!(
                        failed,
                        missing = %ranges,
                        "some shards failed every attempt; run again to retry them"
                    );
                    return Ok(Exit::ShardsFailed);
                }
                Outcome::Finished { .. } => {}
            }
            if !job.partition.is_whole() {
                match end_partition(job, db)? {
                    Some(exit) => return Ok(exit),
                    None => continue,
                }
            }
        }
        if let Some(sig) = crate::sys::signals::pending() {
            tracing::warn!("{sig}: stopping before assembly; run again to finish");
            return Ok(Exit::Interrupted);
        }
        match assemble_interruptible(job, db.done_records()?)? {
            Ok(()) => {
                tracing::info!(
                    seconds = round1(started.elapsed().as_secs_f64()),
                    npz = %crate::outdir::OutDir::new(out).npz().display(),
                    "complete: {} samples in {}; to score them see docs/evaluation.md (the ADM evaluator)",
                    job.settings.num_samples,
                    crate::outdir::OutDir::new(out).npz().display()
                );
                final_snapshot(job, db, JobState::Complete);
                return Ok(Exit::Complete);
            }
            Err(e) if round < REPAIR_ROUNDS && e.bad_indices().is_some() => {
                let bad: BTreeSet<u64> = e
                    .bad_indices()
                    .unwrap_or_default()
                    .iter()
                    .map(|&i| job.shard_of(i))
                    .collect();
                tracing::warn!(shards = ?bad, "PNGs missing or corrupt after recording; redoing their shards");
                // The bad files go, so that the worker samples them instead of reusing them.
                for &i in e.bad_indices().unwrap_or_default() {
                    let _ = std::fs::remove_file(
                        samples_dir
                            .join(fidshard_core::output::png_name(i, job.settings.num_samples)),
                    );
                }
                for id in bad {
                    db.remove_done(id)?;
                }
            }
            Err(e) => return Err(anyhow!(e)).context("assembling samples.npz"),
        }
    }
    Err(anyhow!(
        "samples.npz: files kept going bad after {REPAIR_ROUNDS} repair rounds"
    ))
}

/// A partition's end ([`finish_partition`](crate::cmd::finish::finish_partition)): the exit
/// code, or `None` when shards with damaged PNGs were forgotten, to be sampled again.
fn end_partition(job: &Job, db: &StateDb) -> Result<Option<Exit>> {
    match crate::cmd::finish::finish_partition(job, db)? {
        PartitionEnd::Done(exit) => Ok(Some(exit)),
        PartitionEnd::Redo(bad) => {
            for id in bad {
                db.remove_done(id)?;
            }
            Ok(None)
        }
    }
}

/// Shards not recorded done, or recorded but with files missing (those records are dropped).
fn pending_shards(
    db: &StateDb,
    shards: &[Shard],
    samples_dir: &std::path::Path,
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

fn sample(
    job: &Job,
    db: &StateDb,
    devices: &[WorkerDevice],
    args: &RunArgs,
    todo: Vec<Shard>,
    total: u64,
) -> Result<Outcome> {
    // The models were checked once in `run`, before anything was written.
    let done = db.done_records()?;
    let done_samples: u64 = done.iter().map(|r| r.shard.len()).sum();
    tracing::info!(
        shards = todo.len(),
        workers = devices.len(),
        devices = %devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","),
        "sampling"
    );
    let c = Coordinator {
        job,
        db,
        devices: devices.to_vec(),
        grace: args.grace,
        samples_dir: crate::outdir::OutDir::new(&job.out_dir).samples(),
        log_dir: crate::outdir::OutDir::new(job.state_dir()).logs(),
    };
    c.run(todo, (done.len() as u64, done_samples), total)
}

fn missing_ranges(db: &StateDb) -> Result<String> {
    let ranges = crate::job::plan::merge_ranges(
        db.failed_records()?
            .iter()
            .map(|f| (f.shard.start, f.shard.end))
            .collect(),
    );
    Ok(ranges
        .iter()
        .map(|(a, b)| format!("{a}..{b}"))
        .collect::<Vec<_>>()
        .join(", "))
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
            crate::job::disk::human(free),
            crate::job::disk::human(need.total()),
            crate::job::disk::human(need.pngs),
            crate::job::disk::human(need.npz),
        ))
        .into());
    }
    Ok(())
}

/// The snapshot `status` shows after the run: the coordinator's last one (or a fresh one when
/// nothing needed sampling), with the final state and counts from the state DB.
pub(crate) fn final_snapshot(job: &Job, db: &StateDb, state: JobState) {
    let out = &job.state_dir();
    let mut snap = snapshot::read(out).unwrap_or_else(|| Snapshot::empty(&job.out_dir, state));
    let done = db.done_records().unwrap_or_default();
    let failed = db.failed_records().unwrap_or_default();
    snap.state = state;
    snap.samples_total = job.samples_owned();
    let shards_total = job.shard_count();
    snap.set_records(shards_total, &done, &failed);
    snap.retries = snap.retries.max(db.retries().unwrap_or(0));
    snap.eta_seconds = None;
    snap.coordinator_pid = None;
    if state == JobState::Complete {
        // The run that wrote the npz (its verification record says): a rerun that changed
        // nothing keeps its wall time.
        let produced = job
            .partition
            .is_whole()
            .then(|| crate::outdir::verified::read(&job.out_dir))
            .flatten()
            .and_then(|v| v.wall_seconds);
        if let Some(wall) = produced.or_else(|| STARTED.get().map(|t| t.elapsed().as_secs_f64())) {
            snap.wall_seconds = Some(wall);
        }
    }
    for w in &mut snap.workers {
        w.pid = None;
        w.shard = None;
        w.progress = None;
        if w.state != crate::outdir::snapshot::WorkerState::Quarantined {
            w.state = crate::outdir::snapshot::WorkerState::Dead;
        }
    }
    snap.updated_unix = snapshot::unix_now();
    if let Err(e) = snapshot::write(out, &snap) {
        tracing::warn!("cannot write status.json: {e}");
    }
}
