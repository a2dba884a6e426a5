//! The worker binary as the coordinator sees it: where it is, and how the commands that need
//! tensors (`sample`, `bench`, the model check, `doctor`'s probe) run one task through it.
//! `fidshard` itself never links libtorch (docs/architecture.md).
use crate::sys::exit::{Exit, Fatal};
use anyhow::{anyhow, Context, Result};
use fidshard_core::task::Task;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The name of the worker executable, installed next to `fidshard`.
pub(crate) const WORKER_EXE: &str = "fidshard-worker";

/// `$FIDSHARD_WORKER`, else `fidshard-worker` next to this executable. A missing one is an
/// input error (exit 2) that says where it looked and how to fix it.
pub(crate) fn locate() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("FIDSHARD_WORKER") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(fidshard_core::input_error!(
                "FIDSHARD_WORKER={}: no such file; point it at the fidshard-worker binary or unset it",
                p.display()
            ));
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot find the fidshard executable")?;
    let p = exe.with_file_name(WORKER_EXE);
    if !p.is_file() {
        return Err(fidshard_core::input_error!(
            "{}: the worker binary is missing; install it next to fidshard (`make install`), or set FIDSHARD_WORKER to its path",
            p.display()
        ));
    }
    Ok(p)
}

/// The worker process reported its own error on stderr (it prints `fidshard: error: ...`);
/// `main` exits with its code without printing a second line.
#[derive(Debug, thiserror::Error)]
#[error("the worker exited with {0:?}")]
pub(crate) struct Reported(pub Exit);

/// How a task's output is handled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// stdout and stderr go to the user's terminal (sample, bench).
    Inherit,
    /// stdout is returned; stderr is captured and its error line becomes this process's error.
    Capture,
}

fn command(worker: &PathBuf) -> Command {
    let mut cmd = Command::new(worker);
    cmd.arg("task")
        .env("FIDSHARD_PARENT_PID", std::process::id().to_string());
    cmd
}

/// Runs `task` in a fresh worker process and waits for it. Returns its stdout for
/// [`Output::Capture`].
pub(crate) fn run_task(task: &Task, output: Output) -> Result<String> {
    let worker = locate()?;
    let mut cmd = command(&worker);
    cmd.stdin(Stdio::piped());
    if output == Output::Capture {
        // Its error line is parsed here and reported in this process's format.
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("FIDSHARD_LOG_FORMAT", "text");
    }
    let mut child = cmd.spawn().map_err(|e| {
        Fatal::input(anyhow!(
            "{}: cannot start the worker binary: {e}; reinstall it or set FIDSHARD_WORKER",
            worker.display()
        ))
    })?;
    let json = serde_json::to_vec(task).expect("tasks serialize");
    if let Some(mut stdin) = child.stdin.take() {
        // A worker that dies at once (broken binary) closes the pipe; its status says why.
        let _ = stdin.write_all(&json);
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {}", worker.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let code = out.status.code().and_then(Exit::from_code);
    match (output, code) {
        (Output::Inherit, Some(code)) => Err(Reported(code).into()),
        (Output::Capture, Some(code)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let msg = stderr
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("fidshard: error: "))
                .unwrap_or("the worker failed without a message")
                .to_string();
            Err(Fatal::new(code, anyhow!(msg)).into())
        }
        (_, None) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or("").to_string();
            Err(Fatal::input(anyhow!(
                "{}: the worker binary failed ({}){}; is it built against the libtorch it finds (`fidshard doctor`)?",
                worker.display(),
                out.status,
                if last.is_empty() { String::new() } else { format!(": {last}") }
            ))
            .into())
        }
    }
}
