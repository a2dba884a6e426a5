//! Worker processes, the real [`Spawner`]. Each worker runs in its own process group (so a
//! signal reaches everything it started), pinned to its GPU with CUDA_VISIBLE_DEVICES, with its
//! stdout read line by line into the coordinator's event channel, its stdin fed by a writer
//! task (so that a worker that stops reading never blocks the loop), and its stderr appended to
//! `OUT/logs/worker-N.log`.
use super::spawner::{Event, SpawnSpec, Spawner, WorkerHandle};
use crate::job::devices::WorkerDevice;
use anyhow::{Context, Result};
use fidshard_core::protocol::{line, FromWorker, ToWorker};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::mpsc::{self, UnboundedSender};

/// Starts `fidshard-worker serve` processes.
pub(crate) struct ProcessSpawner;

impl Spawner for ProcessSpawner {
    fn spawn(
        &mut self,
        spec: SpawnSpec<'_>,
        events: UnboundedSender<Event>,
    ) -> Result<Box<dyn WorkerHandle>> {
        Ok(Box::new(spawn(spec, events)?))
    }
}

/// A running worker process: its pid and the queue of its stdin writer task.
pub(crate) struct Proc {
    pid: u32,
    stdin: Option<mpsc::UnboundedSender<String>>,
}

impl WorkerHandle for Proc {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn send(&mut self, msg: &ToWorker) {
        if let Some(tx) = &self.stdin {
            if tx.send(line(msg)).is_err() {
                self.stdin = None;
            }
        }
    }
    fn close(&mut self) {
        self.stdin = None;
    }
    fn signal(&self, sig: Signal) {
        let _ = killpg(Pid::from_raw(self.pid as i32), sig);
    }
}

/// Writes queued lines to the worker's stdin; when the queue closes (or a write fails), stdin
/// is dropped: end of input.
async fn write_stdin(mut stdin: ChildStdin, mut lines: mpsc::UnboundedReceiver<String>) {
    while let Some(l) = lines.recv().await {
        if stdin.write_all(l.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
}

fn spawn(spec: SpawnSpec<'_>, events: UnboundedSender<Event>) -> Result<Proc> {
    std::fs::create_dir_all(spec.log_dir)
        .with_context(|| format!("cannot create {}", spec.log_dir.display()))?;
    let log_path = spec.log_dir.join(format!("worker-{}.log", spec.worker));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = crate::worker::locate()?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .env("FIDSHARD_LOG_FORMAT", "text")
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
        WorkerDevice::Cpu => {
            cmd.arg("--device").arg("cpu");
        }
        WorkerDevice::Gpu(id) => {
            cmd.arg("--device")
                .arg("cuda:0")
                .env("CUDA_VISIBLE_DEVICES", id);
        }
    }
    let mut child = cmd.spawn().context("cannot start a worker process")?;
    let pid = child.id().unwrap_or(0);
    let stdout = child.stdout.take().expect("stdout is piped");
    let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_stdin(
        child.stdin.take().expect("stdin is piped"),
        stdin_rx,
    ));
    let proc = Proc {
        pid,
        stdin: Some(stdin_tx),
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
