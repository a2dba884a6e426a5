//! `fidshard doctor [OUT_DIR] [--json]`: what this machine offers a job, and why a GPU job would
//! not run here. The coordinator's own view (its version, NVML: driver and GPUs, free disk) and
//! the worker binary's (libtorch, the CUDA build, whether libtorch's CUDA library is loaded and
//! sees the devices). Exit 0 when it could look, 2 when the worker binary cannot start.
use crate::job::devices::{inventory, Inventory};
use crate::job::disk::free_bytes;
use crate::sys::size::human;
use crate::worker::{locate, run_task, Output};
use anyhow::Result;
use fidshard_core::task::{Probe, Task};
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct DoctorArgs {
    /// An out dir (or where one will be) whose free disk to report (default: the current folder).
    out_dir: Option<PathBuf>,
    /// One JSON object instead of the report.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    fidshard_version: String,
    fidshard: String,
    worker: Option<String>,
    worker_probe: Option<Probe>,
    /// The worker binary's failure, when it could not start.
    worker_error: Option<String>,
    #[serde(flatten)]
    gpus: Inventory,
    disk_dir: PathBuf,
    disk_free_bytes: Option<u64>,
    /// The problems found, each with its likely cause and the fix.
    problems: Vec<String>,
}

fn diagnose(r: &Report) -> Vec<String> {
    let mut p = Vec::new();
    if let Some(e) = &r.worker_error {
        p.push(format!(
            "the worker binary cannot start ({e}): build it with `make build` or install both binaries together (`make install`), or set FIDSHARD_WORKER"
        ));
    }
    if let Some(probe) = &r.worker_probe {
        if probe
            .torch_version
            .as_deref()
            .map(|v| !v.starts_with("2.11.0"))
            .unwrap_or(true)
        {
            p.push(format!(
                "the worker runs on torch {} but was built for 2.11.0: rebuild against torch 2.11.0 (`make build`) or point LIBTORCH at a 2.11.0 install",
                probe.torch_version.as_deref().unwrap_or("(unknown)")
            ));
        }
        let gpus = r.gpus.gpus.len();
        if probe.torch_cuda_version.is_none() && gpus > 0 {
            p.push(format!(
                "{gpus} GPU(s) are here but the worker's torch is a CPU build: install the CUDA build of torch 2.11.0 (the default pip wheel) and rebuild"
            ));
        }
        if probe.torch_cuda_version.is_some() && !probe.cuda_library_loaded {
            p.push(
                "torch is a CUDA build but libtorch_cuda.so is not loaded by the worker: it was linked with --as-needed; rebuild with this version's build script".into(),
            );
        }
        if probe.cuda_library_loaded && gpus > 0 && !probe.cuda_available {
            p.push(format!(
                "the driver sees {gpus} GPU(s) but libtorch does not: the driver ({}) may be older than CUDA {} needs; update the driver or use a torch build for an older CUDA",
                r.gpus.driver_version.as_deref().unwrap_or("unknown"),
                probe.torch_cuda_version.as_deref().unwrap_or("?")
            ));
        }
    }
    if r.gpus.gpus.is_empty() {
        p.push(format!(
            "no usable GPU: {}; `devices: auto` refuses to start, sample on the CPU with `devices: {{cpu: N}}`",
            r.gpus.none_because.as_deref().unwrap_or("none found")
        ));
    }
    p
}

fn probe_worker() -> (Option<String>, Option<Probe>, Option<String>) {
    let path = match locate() {
        Ok(p) => p,
        Err(e) => return (None, None, Some(format!("{e:#}"))),
    };
    let shown = Some(path.display().to_string());
    match run_task(&Task::Probe, Output::Capture) {
        Ok(stdout) => match serde_json::from_str::<Probe>(stdout.trim()) {
            Ok(p) => (shown, Some(p), None),
            Err(e) => (shown, None, Some(format!("its probe did not parse: {e}"))),
        },
        Err(e) => (shown, None, Some(format!("{e:#}"))),
    }
}

pub(crate) fn run(args: DoctorArgs) -> Result<()> {
    let (worker, worker_probe, worker_error) = probe_worker();
    let disk_dir = args.out_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let mut report = Report {
        fidshard_version: env!("CARGO_PKG_VERSION").to_string(),
        fidshard: std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        worker,
        worker_probe,
        worker_error,
        gpus: inventory(),
        disk_free_bytes: free_bytes(&disk_dir).ok(),
        disk_dir,
        problems: Vec::new(),
    };
    report.problems = diagnose(&report);
    if args.json {
        crate::sys::out::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        crate::sys::out::print(&render(&report));
    }
    if report.worker_probe.is_none() {
        return Err(fidshard_core::input_error!(
            "the worker binary cannot start: {}",
            report.worker_error.as_deref().unwrap_or("unknown")
        ));
    }
    Ok(())
}

fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "fidshard        {} ({})", r.fidshard_version, r.fidshard);
    let _ = writeln!(
        o,
        "worker          {}",
        r.worker.as_deref().unwrap_or("(not found)")
    );
    if let Some(p) = &r.worker_probe {
        let _ = writeln!(
            o,
            "libtorch        {} (CUDA build: {}, cuDNN {})",
            p.torch_version.as_deref().unwrap_or("unknown"),
            p.torch_cuda_version.as_deref().unwrap_or("none, CPU only"),
            p.cudnn_version.as_deref().unwrap_or("none")
        );
        let _ = writeln!(
            o,
            "CUDA library    {}; libtorch sees {} CUDA device(s)",
            if p.cuda_library_loaded {
                "libtorch_cuda.so loaded"
            } else {
                "not loaded"
            },
            p.cuda_device_count
        );
    }
    let _ = writeln!(
        o,
        "driver          {}",
        match (&r.gpus.driver_version, &r.gpus.cuda_driver_version) {
            (Some(d), Some(c)) => format!("{d} (CUDA {c})"),
            (Some(d), None) => d.clone(),
            _ => "none (no libnvidia-ml.so)".into(),
        }
    );
    if r.gpus.gpus.is_empty() {
        let _ = writeln!(o, "GPUs            none");
    }
    for g in &r.gpus.gpus {
        let _ = writeln!(
            o,
            "GPU {}           {} (CUDA_VISIBLE_DEVICES id {}), {} total, {} free, compute capability {}",
            g.index,
            g.name,
            g.visible_id,
            human(g.memory_total),
            human(g.memory_free),
            g.compute_capability
        );
    }
    let _ = writeln!(
        o,
        "disk            {} free at {}",
        r.disk_free_bytes
            .map(human)
            .unwrap_or_else(|| "unknown".into()),
        r.disk_dir.display()
    );
    if r.problems.is_empty() {
        let _ = writeln!(o, "no problems found");
    }
    for p in &r.problems {
        let _ = writeln!(o, "problem: {p}");
    }
    o
}
