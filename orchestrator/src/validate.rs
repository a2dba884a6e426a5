//! `fidshard validate` and `fidshard plan`, and the checks `run` makes before spawning workers.
use crate::config::Job;
use crate::coordinator::spawn::resolve_devices;
use crate::plan::plan;
use anyhow::{Context, Result};
use fidshard_worker::Engine;
use std::path::Path;
use tch::Device;

/// Builds the DiT and the VAE from their files on the CPU (names, shapes, label table, VAE
/// config), then drops them. Any problem is an input error, reported once.
pub(crate) fn check_models(job: &Job) -> Result<()> {
    let _g = tch::no_grad_guard();
    Engine::load(job.settings.clone(), Device::Cpu).map_err(crate::exit::Fatal::input)?;
    Ok(())
}

/// Bytes a job needs on disk for `samples` more images.
pub(crate) struct DiskNeed {
    pub pngs: u64,
    pub npz: u64,
}

impl DiskNeed {
    pub fn total(&self) -> u64 {
        self.pngs + self.npz
    }
}

/// An upper bound: a PNG is at most about its raw size (diffusion samples compress little),
/// the npz is exactly the raw pixels plus headers.
pub(crate) fn disk_needed(job: &Job, samples: u64) -> DiskNeed {
    let raw = (job.image_size * job.image_size * 3) as u64;
    DiskNeed {
        pngs: samples * (raw + 1024),
        npz: job.settings.num_samples * raw + job.settings.num_samples * 8 + 4096,
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir` (or its nearest
/// existing ancestor).
pub(crate) fn free_bytes(dir: &Path) -> Result<u64> {
    let mut p = dir;
    while !p.exists() {
        p = p.parent().unwrap_or(Path::new("/"));
    }
    let st = nix::sys::statvfs::statvfs(p).with_context(|| format!("statvfs {}", p.display()))?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

pub(crate) fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

pub(crate) fn validate(config: &Path) -> Result<()> {
    let job = Job::load(config)?;
    check_models(&job)?;
    let s = &job.settings;
    println!(
        "{}: OK: {} samples of {}x{} from {} (depth {}, hidden {}, patch {}), {} {} steps, cfg {}, seed {}",
        config.display(),
        s.num_samples,
        job.image_size,
        job.image_size,
        s.checkpoint.display(),
        s.dit.depth,
        s.dit.hidden_size,
        s.dit.patch_size,
        s.sampler.as_str(),
        s.steps,
        s.cfg_scale,
        s.seed
    );
    Ok(())
}

pub(crate) fn print_plan(config: &Path) -> Result<()> {
    let job = Job::load(config)?;
    let shards = plan(job.settings.num_samples, job.raw.shard_size);
    let devices = resolve_devices(&job.raw.devices)?;
    println!(
        "{} samples in {} shards of {} (last: {})",
        job.settings.num_samples,
        shards.len(),
        job.raw.shard_size,
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
            n * job.raw.shard_size
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
