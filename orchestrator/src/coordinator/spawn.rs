//! Worker processes, the real [`Spawner`]. Each worker runs in its own process group (so a
//! signal reaches everything it started), pinned to its GPU with CUDA_VISIBLE_DEVICES, with its
//! stdout read line by line into the coordinator's event channel, its stdin fed by a writer
//! task (so that a worker that stops reading never blocks the loop), and its stderr appended to
//! `OUT/logs/worker-N.log`.
use super::spawner::{Event, SpawnSpec, Spawner, WorkerHandle};
use crate::job::devices::WorkerDevice;
use anyhow::{Context, Result};
use fidshard_core::protocol::{line, FailureKind, FromWorker, ToWorker};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::process::Stdio;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
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
    let mut cmd = Command::new(&exe);
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
    let (worker, gen, limit) = (spec.worker, spec.gen, spec.line_limit);
    let exe_name = exe.display().to_string();
    tokio::spawn(async move {
        let killed = read_messages(stdout, &events, (worker, gen), limit, &exe_name).await;
        if killed.is_some() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let status = match (child.wait().await, killed) {
            (_, Some(why)) => why,
            (Ok(s), None) => describe(s),
            (Err(e), None) => format!("unknown exit ({e})"),
        };
        let _ = events.send(Event::Exited {
            worker,
            gen,
            status,
        });
    });
    Ok(proc)
}

/// Forwards the worker's messages until its stdout ends. Trusts nothing: a line longer than
/// `limit` bytes stops the reading at once (memory stays bounded) and the worker is to be
/// killed (returns why, for its exit status); so is a first line that is not a protocol
/// message (the handshake: `/bin/cat` echoing `init`, a wrapper printing its own text),
/// reported as a protocol failure, which stops the run. Later non-protocol lines (a library
/// printing to stdout) are only logged.
async fn read_messages(
    stdout: tokio::process::ChildStdout,
    events: &UnboundedSender<Event>,
    (worker, gen): (usize, u64),
    limit: usize,
    exe: &str,
) -> Option<String> {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        match read_line_bounded(&mut reader, &mut buf, limit).await {
            Ok(Line::Eof) | Err(_) => return None,
            Ok(Line::TooLong) => {
                let why = format!(
                    "sent an output line longer than {limit} bytes (a misbehaving worker binary {exe}): killed"
                );
                tracing::error!(worker, "worker {why}");
                return Some(why);
            }
            Ok(Line::Full) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        match serde_json::from_str::<FromWorker>(&text) {
            Ok(msg) => {
                let _ = events.send(Event::Msg { worker, gen, msg });
            }
            Err(_) if first => {
                let shown: String = text.chars().take(80).collect();
                let message = format!(
                    "worker {worker}: the worker binary {exe} did not answer in the worker protocol (its first line: `{}`); set FIDSHARD_WORKER to the fidshard-worker of this fidshard, or unset it",
                    shown.escape_debug()
                );
                let msg = FromWorker::Fatal {
                    kind: FailureKind::Protocol,
                    message,
                };
                let _ = events.send(Event::Msg { worker, gen, msg });
                return Some("did not answer in the worker protocol: killed".into());
            }
            Err(_) => tracing::debug!(worker, "non-protocol output: {text}"),
        }
        first = false;
    }
}

/// What [`read_line_bounded`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (without its newline) is in the buffer.
    Full,
    Eof,
    /// More than the limit without a newline; the buffer holds at most the limit.
    TooLong,
}

/// Reads one line into `buf` (cleared first), never holding more than `limit` bytes of it.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Line> {
    buf.clear();
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                Line::Eof
            } else {
                Line::Full
            });
        }
        let (take, newline) = match avail.iter().position(|&b| b == b'\n') {
            Some(pos) => (pos, true),
            None => (avail.len(), false),
        };
        if buf.len() + take > limit {
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(&avail[..take]);
        r.consume(take + usize::from(newline));
        if newline {
            return Ok(Line::Full);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded() {
        let input: &[u8] = b"short\nexactly10!\nthis one is far too long\nnever read\n";
        let mut r = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            Line::Full
        );
        assert_eq!(buf, b"short");
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            Line::Full
        );
        assert_eq!(buf, b"exactly10!");
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            Line::TooLong
        );
        assert!(buf.len() <= 10);
        let mut r = BufReader::new(&b"last"[..]);
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            Line::Full
        );
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 10).await.unwrap(),
            Line::Eof
        );
    }
}
