//! Starting and stopping worker processes. Each worker runs in its own process group (so a
//! signal reaches everything it started), pinned to its GPU with CUDA_VISIBLE_DEVICES, with its
//! stdout read line by line into the coordinator's event channel and its stderr appended to
//! `OUT/logs/worker-N.log`.
use crate::protocol::{line, FromWorker, ToWorker};
use anyhow::{Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::mpsc::UnboundedSender;

/// Where a worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceSpec {
    Cpu,
    /// A GPU, named as CUDA_VISIBLE_DEVICES must name it for the worker.
    Gpu(String),
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Gpu(id) => write!(f, "gpu{id}"),
        }
    }
}

/// What the reader task of a worker reports.
#[derive(Debug)]
pub(crate) enum Event {
    Msg {
        worker: usize,
        gen: u64,
        msg: FromWorker,
    },
    Exited {
        worker: usize,
        gen: u64,
        status: String,
    },
}

pub(crate) struct Proc {
    pub pid: u32,
    stdin: Option<ChildStdin>,
}

impl Proc {
    /// Sends one message; a broken pipe is ignored (the exit event follows).
    pub async fn send(&mut self, msg: &ToWorker) {
        if let Some(stdin) = self.stdin.as_mut() {
            if stdin.write_all(line(msg).as_bytes()).await.is_err() || stdin.flush().await.is_err()
            {
                self.stdin = None;
            }
        }
    }
    /// Closes stdin: the worker exits at once.
    pub fn close(&mut self) {
        self.stdin = None;
    }
    /// Signals the worker's whole process group.
    pub fn signal(&self, sig: Signal) {
        let _ = killpg(Pid::from_raw(self.pid as i32), sig);
    }
}

pub(crate) struct SpawnSpec<'a> {
    pub worker: usize,
    pub gen: u64,
    pub device: &'a DeviceSpec,
    pub log_dir: &'a Path,
    pub init: &'a ToWorker,
}

pub(crate) async fn spawn(spec: SpawnSpec<'_>, events: UnboundedSender<Event>) -> Result<Proc> {
    std::fs::create_dir_all(spec.log_dir)
        .with_context(|| format!("cannot create {}", spec.log_dir.display()))?;
    let log_path = spec.log_dir.join(format!("worker-{}.log", spec.worker));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the fidshard executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--log-format")
        .arg("text")
        .arg("worker")
        .arg("--id")
        .arg(spec.worker.to_string())
        .env("FIDSHARD_PARENT_PID", std::process::id().to_string())
        .env("NO_COLOR", "1")
        // Worker logs are files for post-mortems: info level whatever the coordinator's
        // FIDSHARD_LOG says (FIDSHARD_WORKER_LOG overrides).
        .env(
            "FIDSHARD_LOG",
            std::env::var("FIDSHARD_WORKER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .process_group(0)
        .kill_on_drop(true);
    match spec.device {
        DeviceSpec::Cpu => {
            cmd.arg("--device").arg("cpu");
        }
        DeviceSpec::Gpu(id) => {
            cmd.arg("--device")
                .arg("cuda:0")
                .env("CUDA_VISIBLE_DEVICES", id);
        }
    }
    let mut child = cmd.spawn().context("cannot start a worker process")?;
    let pid = child.id().unwrap_or(0);
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut proc = Proc {
        pid,
        stdin: child.stdin.take(),
    };
    let (worker, gen) = (spec.worker, spec.gen);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            match serde_json::from_str::<FromWorker>(&l) {
                Ok(msg) => {
                    let _ = events.send(Event::Msg { worker, gen, msg });
                }
                Err(_) => tracing::debug!(worker, "non-protocol output: {l}"),
            }
        }
        let status = match child.wait().await {
            Ok(s) => describe(s),
            Err(e) => format!("unknown exit ({e})"),
        };
        let _ = events.send(Event::Exited {
            worker,
            gen,
            status,
        });
    });
    proc.send(spec.init).await;
    Ok(proc)
}

fn describe(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = s.signal() {
        let name = Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?");
        format!("killed by signal {sig} ({name})")
    } else {
        format!("exited with code {}", s.code().unwrap_or(-1))
    }
}

/// The devices `devices` names, resolved against what this machine has.
pub(crate) fn resolve_devices(devices: &crate::config::Devices) -> Result<Vec<DeviceSpec>> {
    use crate::config::Devices;
    // The ids CUDA numbers 0..n map to these names for CUDA_VISIBLE_DEVICES.
    let visible: Option<Vec<String>> = std::env::var("CUDA_VISIBLE_DEVICES").ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let name_of = |i: u32| -> String {
        match &visible {
            Some(v) => v.get(i as usize).cloned().unwrap_or_else(|| i.to_string()),
            None => i.to_string(),
        }
    };
    Ok(match devices {
        Devices::Cpu(n) => vec![DeviceSpec::Cpu; *n as usize],
        Devices::Auto => {
            let n = if tch::Cuda::is_available() {
                tch::Cuda::device_count() as u32
            } else {
                0
            };
            if n == 0 {
                // A CPU worker samples on one thread (see Engine::load): one per core, at most
                // 8 (each holds its own copy of the model).
                let cores = std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1);
                vec![DeviceSpec::Cpu; cores.min(8)]
            } else {
                (0..n).map(|i| DeviceSpec::Gpu(name_of(i))).collect()
            }
        }
        Devices::Gpus(ids) => {
            let n = if tch::Cuda::is_available() {
                tch::Cuda::device_count() as u32
            } else {
                0
            };
            if let Some(bad) = ids.iter().find(|&&i| i >= n) {
                anyhow::bail!(crate::exit::Fatal::input(anyhow::anyhow!(
                    "`devices` names GPU {bad} but {n} CUDA device(s) are visible; use `auto` or {{cpu: N}}"
                )));
            }
            ids.iter().map(|&i| DeviceSpec::Gpu(name_of(i))).collect()
        }
    })
}
