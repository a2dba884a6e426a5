//! The `probe` task: what this worker binary sees of libtorch and CUDA, as one JSON line on
//! stdout (`fidshard doctor` reads it).
use fidshard_core::task::Probe;
use std::path::Path;

/// The shared libraries mapped into this process (from /proc/self/maps).
fn mapped_libraries() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut libs: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains(".so"))
        .map(str::to_string)
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

/// `torch/version.py` beside the mapped `torch/lib/libtorch_cpu.so`: the version and the CUDA
/// version torch was built with.
fn torch_version(libtorch_cpu: &Path) -> (Option<String>, Option<String>) {
    let Some(version_py) = libtorch_cpu
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("version.py"))
    else {
        return (None, None);
    };
    let text = std::fs::read_to_string(version_py).unwrap_or_default();
    let value = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split('\'').nth(1))
            .map(str::to_string)
    };
    (value("__version__ ="), value("cuda:"))
}

/// The cuDNN version of the pip package beside torch (`nvidia_cudnn_cu13-9.19.0.56.dist-info`),
/// which is the cuDNN the CUDA build of torch loads.
fn cudnn_version(libtorch_cpu: &Path) -> Option<String> {
    let site = libtorch_cpu.parent()?.parent()?.parent()?;
    std::fs::read_dir(site)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find_map(|n| {
            let rest = n
                .strip_prefix("nvidia_cudnn_")?
                .strip_suffix(".dist-info")?;
            rest.split_once('-').map(|(_, v)| v.to_string())
        })
}

pub(crate) fn run() -> anyhow::Result<()> {
    // Touch CUDA through libtorch: this is what loads the driver if there is one.
    let cuda_available = tch::Cuda::is_available();
    let libs = mapped_libraries();
    let torch_libraries: Vec<String> = libs
        .iter()
        .filter(|p| {
            let name = Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("");
            name.starts_with("libtorch") || name.starts_with("libc10")
        })
        .cloned()
        .collect();
    let (torch_version, torch_cuda) = torch_libraries
        .iter()
        .find(|p| p.ends_with("libtorch_cpu.so"))
        .map(|p| torch_version(Path::new(p)))
        .unwrap_or((None, None));
    let cudnn_version = torch_libraries
        .iter()
        .find(|p| p.ends_with("libtorch_cpu.so"))
        .and_then(|p| cudnn_version(Path::new(p)));
    let probe = Probe {
        worker_version: env!("CARGO_PKG_VERSION").to_string(),
        cuda_library_loaded: torch_libraries
            .iter()
            .any(|p| p.ends_with("libtorch_cuda.so")),
        cuda_available,
        cuda_device_count: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        torch_libraries,
        torch_version,
        torch_cuda_version: torch_cuda,
        cudnn_version,
        executable: std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    };
    println!("{}", serde_json::to_string(&probe)?);
    Ok(())
}
