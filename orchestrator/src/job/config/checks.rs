//! The bounds of a job (docs/configuration.md lists them) and the checks that enforce them.
//! Each check names the key; floats are refused when not finite (YAML has `.inf` and `.nan`).
use anyhow::{anyhow, Result};
use std::path::Path;
use std::time::Duration;

/// Every bound a job config is checked against.
pub(crate) mod limits {
    /// A job file is a few dozen lines; anything over this is refused before parsing.
    pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
    /// Nesting levels (indentation, `- ` items, brackets) allowed in a job file.
    pub const MAX_NESTING: usize = 32;
    /// `num_samples`: 10^9 (20 000 times FID-50K).
    pub const MAX_SAMPLES: u64 = 1_000_000_000;
    /// `ceil(num_samples / shard_size)`: the plan and the state hold one entry per shard.
    pub const MAX_SHARDS: u64 = 10_000_000;
    /// `shard_size`: a worker lists a shard's indices in memory.
    pub const MAX_SHARD_SIZE: u64 = 1_000_000;
    /// `batch_size` and `vae_batch_size`.
    pub const MAX_BATCH: u64 = 65_536;
    /// `cfg_scale`: beyond this, `uncond + s * (cond - uncond)` amplifies float32 rounding noise
    /// of the model output by more than 10^4 and overflows to inf/NaN on ordinary outputs.
    pub const MAX_CFG_SCALE: f64 = 1e4;
    /// `stall_timeout`: 7 days, in seconds.
    pub const MAX_STALL_SECONDS: f64 = 7.0 * 24.0 * 3600.0;
    /// `retry.backoff` and `retry.backoff_max`: 1 day, in seconds.
    pub const MAX_BACKOFF_SECONDS: f64 = 24.0 * 3600.0;
    /// `retry.attempts`.
    pub const MAX_ATTEMPTS: u32 = 1000;
    /// Workers of `{cpu: N}` per CPU core of the machine (each CPU worker samples on one thread).
    pub const CPU_WORKERS_PER_CORE: usize = 4;
    /// Entries of a `devices` list or `{cpu: N}`, whatever the machine.
    pub const MAX_WORKERS: u64 = 1024;
    /// Image side in pixels.
    pub const MAX_IMAGE_SIZE: i64 = 16_384;
}

/// A number of seconds as a `Duration`: finite and within `lo..=hi` (`lo` itself allowed only
/// when `lo_ok`).
pub(super) fn seconds(
    err: &dyn Fn(&str, String) -> anyhow::Error,
    key: &str,
    value: f64,
    lo_ok: bool,
    hi: f64,
) -> Result<Duration> {
    let range = if lo_ok { "0 <= s" } else { "0 < s" };
    let ok = value.is_finite() && (value > 0.0 || (lo_ok && value == 0.0)) && value <= hi;
    if !ok {
        return Err(err(
            key,
            format!(
                "{} is not a number of seconds in {range} <= {hi}",
                short(value)
            ),
        ));
    }
    Duration::try_from_secs_f64(value).map_err(|e| err(key, format!("{value}: {e}")))
}

/// `x` for a message: plain when moderate, in scientific notation when huge or tiny.
pub(super) fn short(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

/// `{cpu: N}` against this machine: at most [`limits::CPU_WORKERS_PER_CORE`] workers per core.
/// Checked where workers are started (`run`, `plan`), not at load, so that `status` of a job
/// meant for a bigger machine works on a login node.
pub(crate) fn check_cpu_workers(n: u32) -> Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let max = cores.saturating_mul(limits::CPU_WORKERS_PER_CORE);
    if n as usize > max {
        return Err(fidshard_core::Fatal::input(anyhow!(
            "`devices`: {{cpu: {n}}} is more than this machine can use: {cores} CPU core(s) \
             allow at most {max} CPU workers ({} per core); use {{cpu: {max}}} or fewer, or `auto`",
            limits::CPU_WORKERS_PER_CORE,
        ))
        .into());
    }
    Ok(())
}

/// `out_dir` must be a folder or creatable as one: no existing file at it or above it.
pub(super) fn out_dir_usable(out: &Path) -> std::result::Result<(), String> {
    let mut p = Some(out);
    while let Some(dir) = p {
        if dir.as_os_str().is_empty() {
            break;
        }
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) if dir == out => {
                return Err(format!(
                    "{} exists and is a file, not a folder; point out_dir at a folder (or a path that does not exist yet)",
                    out.display()
                ))
            }
            Ok(_) => {
                return Err(format!(
                    "{} cannot be created: {} is a file, not a folder",
                    out.display(),
                    dir.display()
                ))
            }
            Err(_) => p = dir.parent(),
        }
    }
    Ok(())
}
