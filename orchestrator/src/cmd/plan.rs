//! `fidshard plan CONFIG`: the shards, each worker's share, and the disk the job needs.
use crate::job::config::Job;
use crate::job::devices::resolve_devices;
use crate::job::disk::{disk_needed, free_bytes, human};
use anyhow::Result;
use std::path::Path;

pub(crate) fn run(config: &Path) -> Result<()> {
    let job = Job::load(config)?;
    let shards = job.plan();
    let devices = resolve_devices(&job.run.devices)?;
    println!(
        "{} samples in {} shards of {} (last: {})",
        job.settings.num_samples,
        shards.len(),
        job.run.shard_size,
        shards.last().map(|s| s.len()).unwrap_or(0)
    );
    for s in &shards {
        println!("  shard {:>6}  [{}..{})", s.id, s.start, s.end);
    }
    let w = devices.len() as u64;
    let per = shards.len() as u64 / w;
    let extra = shards.len() as u64 % w;
    for (i, d) in devices.iter().enumerate() {
        let n = per + u64::from((i as u64) < extra);
        println!(
            "  worker {i} on {d}: about {n} shard(s), {} samples",
            n * job.run.shard_size
        );
    }
    let need = disk_needed(&job, job.settings.num_samples);
    let free = free_bytes(&job.out_dir)?;
    println!(
        "disk: PNGs up to {} + samples.npz {} = {}; {} free at {}",
        human(need.pngs),
        human(need.npz),
        human(need.total()),
        human(free),
        job.out_dir.display()
    );
    Ok(())
}
