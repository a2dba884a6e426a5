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

pub(crate) fn run(config: &Path, partitions: Option<u32>) -> Result<()> {
    let job = Job::load_without_weights(config)?;
    if let Some(m) = &job.weights_missing {
        crate::sys::out::outln!("note: {m} (`fidshard fetch` gets them)");
    }
    for m in job.evaluate.iter().flat_map(|e| &e.not_local) {
        crate::sys::out::outln!("note: {m} (`fidshard fetch` gets it)");
    }
    if let Some(n) = partitions {
        print_partitions(&job, n)?;
    }
    // On a login node without GPUs, a GPU job's plan is still worth seeing.
    let devices = match job.workers() {
        Ok(d) => d,
        Err(e) if job.run.devices == crate::job::devices::Devices::Auto => {
            crate::sys::out::outln!("devices: auto: {e:#}");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    print_shards(&job);
    print_workers(&job, &devices);
    print_disk(&job)
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
fn print_workers(job: &Job, devices: &[WorkerDevice]) {
    let count = job.shard_count();
    let gpus = inventory().gpus;
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
