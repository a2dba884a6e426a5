//! The devices a job runs on, found without libtorch: GPUs through NVML (the driver's own
//! library, loaded at run time by the `nvml-wrapper` crate), so that the coordinator never
//! creates a CUDA context and runs on machines without torch.
use anyhow::Result;
use serde::Serialize;

/// Which devices get a worker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Devices {
    /// `auto`: every GPU visible through CUDA_VISIBLE_DEVICES / the driver; without a GPU the
    /// job refuses to start (exit 2): never a silent CPU fallback.
    #[default]
    Auto,
    /// `[0, 2, 3]`: these GPU ids (as CUDA numbers the visible devices).
    Gpus(Vec<u32>),
    /// `{cpu: N}`: N CPU workers.
    Cpu(u32),
}

/// One GPU as NVML reports it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GpuInfo {
    /// The index CUDA gives it in this process (after CUDA_VISIBLE_DEVICES).
    pub index: u32,
    /// How CUDA_VISIBLE_DEVICES names it for a worker.
    pub visible_id: String,
    pub name: String,
    pub memory_total: u64,
    pub memory_free: u64,
    pub compute_capability: String,
}

/// What this machine has, seen through NVML.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Inventory {
    pub driver_version: Option<String>,
    pub cuda_driver_version: Option<String>,
    pub gpus: Vec<GpuInfo>,
    /// Why there is no usable GPU, when there is none: no driver, no device, or an empty
    /// CUDA_VISIBLE_DEVICES.
    pub none_because: Option<String>,
}

/// The GPUs this process may use: NVML's devices, filtered and renumbered by
/// CUDA_VISIBLE_DEVICES (indices or `GPU-` UUIDs) as CUDA does.
pub(crate) fn inventory() -> Inventory {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let mut inv = Inventory {
        driver_version: None,
        cuda_driver_version: None,
        gpus: Vec::new(),
        none_because: None,
    };
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            inv.none_because = Some(format!(
                "no NVIDIA driver: libnvidia-ml.so could not be loaded ({e})"
            ));
            return inv;
        }
    };
    inv.driver_version = nvml.sys_driver_version().ok();
    inv.cuda_driver_version = nvml
        .sys_cuda_driver_version()
        .ok()
        .map(|v| format!("{}.{}", v / 1000, v % 1000 / 10));
    let count = nvml.device_count().unwrap_or(0);
    let mut all = Vec::new();
    for i in 0..count {
        let Ok(d) = nvml.device_by_index(i) else {
            continue;
        };
        let mem = d.memory_info().ok();
        let cc = d
            .cuda_compute_capability()
            .map(|c| format!("{}.{}", c.major, c.minor))
            .unwrap_or_default();
        all.push((
            i.to_string(),
            d.uuid().unwrap_or_default(),
            d.name().unwrap_or_default(),
            mem.as_ref().map(|m| m.total).unwrap_or(0),
            mem.as_ref().map(|m| m.free).unwrap_or(0),
            cc,
        ));
    }
    let chosen: Vec<_> = match visible.as_deref().map(str::trim) {
        None => all.into_iter().collect(),
        Some(v) => v
            .split(',')
            .map(str::trim)
            .take_while(|s| !s.is_empty())
            .filter_map(|id| {
                all.iter()
                    .find(|g| g.0 == id || (id.starts_with("GPU-") && g.1.starts_with(id)))
                    .cloned()
                    .map(|mut g| {
                        g.0 = id.to_string();
                        g
                    })
            })
            .collect(),
    };
    inv.gpus = chosen
        .into_iter()
        .enumerate()
        .map(|(i, (visible_id, _, name, total, free, cc))| GpuInfo {
            index: i as u32,
            visible_id,
            name,
            memory_total: total,
            memory_free: free,
            compute_capability: cc,
        })
        .collect();
    if inv.gpus.is_empty() {
        inv.none_because = Some(match visible.as_deref() {
            Some(v) if v.trim().is_empty() => "CUDA_VISIBLE_DEVICES is set but empty".to_string(),
            Some(v) if count > 0 => {
                format!("CUDA_VISIBLE_DEVICES={v} names none of the {count} GPU(s)")
            }
            _ => "the NVIDIA driver is loaded but reports no GPU".to_string(),
        });
    }
    inv
}

/// Where a worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkerDevice {
    Cpu,
    /// A GPU, named as CUDA_VISIBLE_DEVICES must name it for the worker.
    Gpu(String),
}

impl std::fmt::Display for WorkerDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerDevice::Cpu => write!(f, "cpu"),
            WorkerDevice::Gpu(id) => write!(f, "gpu{id}"),
        }
    }
}

/// `2 x cpu` / `gpu0 (NVIDIA H100 80GB HBM3, 79.2 GB), gpu1 (...)` for log lines.
pub(crate) fn describe(devices: &[WorkerDevice]) -> String {
    let cpus = devices.iter().filter(|d| **d == WorkerDevice::Cpu).count();
    let inv = if cpus < devices.len() {
        Some(inventory())
    } else {
        None
    };
    let mut parts: Vec<String> = Vec::new();
    if cpus > 0 {
        parts.push(format!("{cpus} x cpu"));
    }
    for d in devices {
        if let WorkerDevice::Gpu(id) = d {
            let info = inv
                .as_ref()
                .and_then(|i| i.gpus.iter().find(|g| &g.visible_id == id));
            parts.push(match info {
                Some(g) => format!(
                    "gpu{id} ({}, {})",
                    g.name,
                    crate::sys::size::human(g.memory_total)
                ),
                None => format!("gpu{id}"),
            });
        }
    }
    parts.join(", ")
}

/// The devices `devices` names, resolved against what this machine has.
pub(crate) fn resolve_devices(devices: &Devices) -> Result<Vec<WorkerDevice>> {
    let inv = inventory();
    let n = inv.gpus.len() as u32;
    let name_of = |i: u32| -> String { inv.gpus[i as usize].visible_id.clone() };
    Ok(match devices {
        Devices::Cpu(n) => {
            crate::job::config::checks::check_cpu_workers(*n)?;
            vec![WorkerDevice::Cpu; *n as usize]
        }
        Devices::Auto => {
            if n == 0 {
                // Never a silent CPU fallback: a 50,000-image job would run for weeks.
                let why = inv
                    .none_because
                    .clone()
                    .unwrap_or_else(|| "no GPU found".into());
                return Err(fidshard_core::input_error!(
                    "`devices: auto` found no usable GPU ({why}); to sample on the CPU set `devices: {{cpu: N}}` (N worker processes), or run `fidshard doctor` to see why no GPU is usable"
                ));
            }
            (0..n).map(|i| WorkerDevice::Gpu(name_of(i))).collect()
        }
        Devices::Gpus(ids) => {
            if let Some(bad) = ids.iter().find(|&&i| i >= n) {
                anyhow::bail!(fidshard_core::Fatal::input(anyhow::anyhow!(
                    "`devices` names GPU {bad} but {n} CUDA device(s) are visible; use `auto` or {{cpu: N}}"
                )));
            }
            ids.iter().map(|&i| WorkerDevice::Gpu(name_of(i))).collect()
        }
    })
}
