//! `fidshard plan CONFIG`: the shards, each worker's share, and the disk the job needs. Needs
//! no weights and allocates nothing per shard: a plan of millions of shards prints its first
//! and last few.
use crate::job::config::Job;
use crate::job::devices::{inventory, WorkerDevice};
use crate::job::disk::{disk_needed, free_bytes};
use crate::sys::size::human;
use anyhow::Result;
use fidshard_core::Shard;
use std::path::Path;

/// Plans with more shards than this print the first [`HEAD`] and the last [`TAIL`].
const LIST_ALL_UP_TO: u64 = 40;
const HEAD: u64 = 10;
const TAIL: u64 = 3;

fn shard(job: &Job, id: u64) -> Shard {
    crate::job::plan::shard(job.settings.num_samples, job.run.shard_size, id)
}

/// `plan`'s arguments (after the YAML).
pub(crate) struct PlanArgs {
    /// `--partitions N`: also list the shards of each of N partitions.
    pub partitions: Option<u32>,
    /// `--devices N`: plan for N GPUs per coordinator instead of this machine's devices.
    pub devices: Option<u32>,
}

/// The most GPUs `--devices` plans for (one coordinator).
const MAX_PLANNED_DEVICES: u32 = 4096;

pub(crate) fn run(config: &Path, args: PlanArgs) -> Result<()> {
    let job = Job::load_without_weights(config)?;
    if let Some(m) = &job.weights_missing {
        crate::sys::out::outln!("note: {m} (`fidshard fetch` gets them)");
    }
    for m in job.evaluate.iter().flat_map(|e| &e.not_local) {
        crate::sys::out::outln!("note: {m} (`fidshard fetch` gets it)");
    }
    if let Some(n) = args.partitions {
        print_partitions(&job, n)?;
    }
    let devices = match args.devices {
        Some(n) if n == 0 || n > MAX_PLANNED_DEVICES => {
            return Err(fidshard_core::input_error!(
                "--devices {n}: expected 1 to {MAX_PLANNED_DEVICES} (the GPUs of one node)"
            ));
        }
        Some(n) => (0..n).map(|i| WorkerDevice::Gpu(i.to_string())).collect(),
        // On a login node without GPUs, a GPU job's plan is still worth seeing.
        None => match job.workers() {
            Ok(d) => d,
            Err(e) if job.run.devices == crate::job::devices::Devices::Auto => {
                crate::sys::out::outln!(
                    "devices: auto: {e:#} (`--devices N` plans for N GPUs per node)"
                );
                Vec::new()
            }
            Err(e) => return Err(e),
        },
    };
    print_shards(&job);
    print_workers(&job, &devices, args.devices.is_some());
    print_tail(&job, devices.len() as u64, args.partitions.unwrap_or(1));
    print_disk(&job)?;
    print_weights(config)
}

/// Where each file the job names comes from and where it is (or will be, once `fetch` or `run`
/// downloads it): the same list `fidshard fetch` works through, read from the disk alone.
fn print_weights(config: &Path) -> Result<()> {
    use crate::fetch::State;
    use crate::job::hub::{CacheRoot, Remote};
    let plan = crate::fetch::Plan::of(config)?;
    crate::sys::out::outln!(
        "files (`fidshard fetch` downloads what is missing; `run` does first):"
    );
    for e in &plan.entries {
        let where_ = match (&e.state, &e.remote) {
            (State::Local(p), _) => format!("local {}", p.display()),
            (State::Cached(p) | State::Downloaded(p), _) => format!("cached {}", p.display()),
            (State::Missing(_), Some(Remote::Url(u))) => format!(
                "to download into {}",
                u.cached_path(&CacheRoot::fidshard()).display()
            ),
            (State::Missing(_), _) => "to download into the Hugging Face cache".to_string(),
        };
        crate::sys::out::outln!("  {:<20} {}  ({where_})", e.key, e.value);
    }
    Ok(())
}

/// `--partitions N`: which shards and samples each of N partitions owns.
fn print_partitions(job: &Job, n: u32) -> Result<()> {
    if n == 0 || n > 100_000 {
        return Err(fidshard_core::input_error!(
            "--partitions {n}: expected 1 to 100000"
        ));
    }
    let total = job.total_shard_count();
    crate::sys::out::outln!(
        "{n} partitions (one coordinator each, `fidshard run --partition K/{n}`):"
    );
    for k in 0..n {
        let p = crate::job::partition::Partition { k, n };
        let r = p.shards(total);
        let (a, b) = p.samples(job.settings.num_samples, job.run.shard_size);
        crate::sys::out::outln!(
            "  partition {p}: shards {}..{} ({} shards), samples [{a}..{b}) ({} samples)",
            r.start,
            r.end,
            r.end - r.start,
            b - a
        );
    }
    Ok(())
}

/// The shard count and the shards (the first and last few of a long plan).
fn print_shards(job: &Job) {
    let count = job.shard_count();
    let last = if count > 0 {
        shard(job, count - 1).len()
    } else {
        0
    };
    crate::sys::out::outln!(
        "{} samples in {count} shards of {} (last: {last})",
        job.settings.num_samples,
        job.run.shard_size,
    );
    let print = |id: u64| {
        let s = shard(job, id);
        crate::sys::out::outln!("  shard {:>6}  [{}..{})", s.id, s.start, s.end);
    };
    if count <= LIST_ALL_UP_TO {
        (0..count).for_each(print);
    } else {
        (0..HEAD).for_each(print);
        crate::sys::out::outln!("  ... {} more shards ...", count - HEAD - TAIL);
        (count - TAIL..count).for_each(print);
    }
}

/// Each worker's device and its share of the shards.
fn print_workers(job: &Job, devices: &[WorkerDevice], planned: bool) {
    let count = job.shard_count();
    let gpus = if planned {
        Vec::new()
    } else {
        inventory().gpus
    };
    let w = (devices.len() as u64).max(1);
    let per = count / w;
    let extra = count % w;
    for (i, d) in devices.iter().enumerate() {
        let n = per + u64::from((i as u64) < extra);
        let what = match d {
            WorkerDevice::Cpu => "cpu".to_string(),
            WorkerDevice::Gpu(id) => gpus
                .iter()
                .find(|g| &g.visible_id == id)
                .map(|g| {
                    format!(
                        "gpu {id} ({}, {} total, {} free)",
                        g.name,
                        human(g.memory_total),
                        human(g.memory_free)
                    )
                })
                .unwrap_or_else(|| format!("gpu {id}")),
        };
        crate::sys::out::outln!(
            "  worker {i} on {what}: about {n} shard(s), {} samples",
            (n * job.run.shard_size).min(job.settings.num_samples)
        );
    }
}

/// At least this share of the workers' time busy until the last shard ends, else a warning.
const BUSY_AT_LEAST: f64 = 0.9;
/// The suggestions aim at this many shards per worker at least (a short tail, cheap retries).
const WAVES_AT_LEAST: u64 = 8;

/// The share of worker time spent sampling when `shards` equal shards go to `workers` workers
/// that all start together: the last wave of a plan that is not whole leaves workers idle.
fn busy_share(shards: u64, workers: u64) -> f64 {
    if shards == 0 || workers == 0 {
        return 1.0;
    }
    shards as f64 / (shards.div_ceil(workers) * workers) as f64
}

/// The shards of the largest of `partitions` partitions when shards hold `shard_size` samples
/// (the job ends with that partition).
fn shards_per_partition(num_samples: u64, shard_size: u64, partitions: u64) -> u64 {
    num_samples.div_ceil(shard_size).div_ceil(partitions.max(1))
}

/// A warning when the last shards leave workers idle (few shards per worker, a last wave far
/// from whole), with a `shard_size` that keeps every worker busy to the end. Nothing when no
/// smaller `shard_size` does better (a job too small for its workers).
fn print_tail(job: &Job, workers: u64, partitions: u32) {
    let n = job.settings.num_samples;
    let parts = u64::from(partitions).max(1);
    let shards = shards_per_partition(n, job.run.shard_size, parts);
    let busy = busy_share(shards, workers);
    if workers < 2 || busy >= BUSY_AT_LEAST {
        return;
    }
    let Some(better) = suggest_shard_size(job, workers, parts) else {
        return;
    };
    let waves = shards as f64 / workers as f64;
    let idle = shards.div_ceil(workers) * workers - shards;
    let (up_to, per) = if parts > 1 {
        ("up to ", format!(" per partition ({parts} partitions)"))
    } else {
        ("", String::new())
    };
    crate::sys::out::outln!(
        "warning: {up_to}{shards} shards{per} over {workers} workers is {waves:.2} waves: in the last one \
         {idle} of {workers} workers sit idle ({:.0} % of the workers' time)",
        (1.0 - busy) * 100.0
    );
    let shards = shards_per_partition(n, better, parts);
    crate::sys::out::outln!(
        "  `shard_size: {better}` gives {up_to}{shards} shards{per}, {:.2} waves, {:.0} % busy (it \
         cannot change once the job started)",
        shards as f64 / workers as f64,
        busy_share(shards, workers) * 100.0
    );
}

/// The largest `shard_size` (a multiple of a fixed `batch_size`) that gives every worker at
/// least [`WAVES_AT_LEAST`] shards and keeps them busy at least 95 % of the time; else the one
/// that keeps them busiest. None when no size below the current one does better.
fn suggest_shard_size(job: &Job, workers: u64, parts: u64) -> Option<u64> {
    let n = job.settings.num_samples;
    let step = match job.settings.batch_size {
        fidshard_core::BatchSize::Fixed(b) => (b as u64).max(1),
        fidshard_core::BatchSize::Auto => 1,
    };
    let per_partition = n.div_ceil(parts);
    let largest = (per_partition / (workers * WAVES_AT_LEAST)).min(job.run.shard_size);
    let mut best: Option<(f64, u64)> = None;
    // Multiples of `step` from the largest down (at most 100,000 tried), then `step` itself.
    let mut s = largest / step * step;
    let mut tried = 0;
    while s >= step && tried < 100_000 {
        let busy = busy_share(shards_per_partition(n, s, parts), workers);
        if busy >= 0.95 {
            return Some(s);
        }
        match best {
            Some((b, _)) if b >= busy => {}
            _ => best = Some((busy, s)),
        }
        s -= step;
        tried += 1;
    }
    let current = busy_share(shards_per_partition(n, job.run.shard_size, parts), workers);
    best.filter(|(b, _)| *b > current).map(|(_, s)| s)
}

/// The disk the whole job needs against what is free at its out dir.
fn print_disk(job: &Job) -> Result<()> {
    let need = disk_needed(job, job.settings.num_samples);
    let free = free_bytes(&job.out_dir)?;
    crate::sys::out::outln!(
        "disk: PNGs up to {} + samples.npz {} = {}; {} free at {}",
        human(need.pngs),
        human(need.npz),
        human(need.total()),
        human(free),
        job.out_dir.display()
    );
    Ok(())
}
