//! The worker binary as the coordinator sees it: where it is, and how the commands that need
//! tensors (`sample`, `bench`, the model check, `doctor`'s probe) run one task through it.
//! `fidshard` itself never links libtorch (docs/architecture.md).
use anyhow::{anyhow, Context, Result};
use fidshard_core::task::Task;
use fidshard_core::{Exit, Fatal};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
#[error("the worker exited with code {}", *.0 as u8)]
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

/// What a captured task may print on stdout (its answer is one short line) and how much of its
/// stderr is kept (the error line is the last one): a misbehaving binary costs bounded memory.
const STDOUT_LIMIT: usize = 1 << 20;
const STDERR_TAIL: usize = 64 << 10;

/// Runs `task` in a fresh worker process and waits for it. Returns its stdout for
/// [`Output::Capture`].
pub(crate) fn run_task(task: &Task, output: Output) -> Result<String> {
    run_task_limited(task, output, None)
}

/// [`run_task`] with a time limit. A captured task of a process that handles stop signals
/// (`run`) runs in its own process group: a SIGTERM, SIGINT, SIGHUP or SIGUSR1 then kills that
/// group and ends with exit 75, and so does nothing else (the task is started again on the
/// next run).
pub(crate) fn run_task_limited(
    task: &Task,
    output: Output,
    limit: Option<(Duration, &str)>,
) -> Result<String> {
    let worker = locate()?;
    let mut cmd = command(&worker);
    cmd.stdin(Stdio::piped());
    let own_group = output == Output::Capture && crate::sys::signals::installed();
    if output == Output::Capture {
        // Its error line is parsed here and reported in this process's format.
        cmd.stdout(Stdio::piped())
            .env("FIDSHARD_LOG_FORMAT", "text");
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        // Its stderr is passed on line by line (to see whether it printed fidshard's error
        // line), still coloured as on the terminal.
        cmd.env("FIDSHARD_WORKER_COLOR", "1");
    }
    cmd.stderr(Stdio::piped());
    if own_group {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().map_err(|e| {
        Fatal::input(anyhow!(
            "{}: cannot start the worker binary: {e}; reinstall it or set FIDSHARD_WORKER",
            worker.display()
        ))
    })?;
    // Read before writing: a binary that echoes its input never blocks on a full pipe.
    let stdout = child
        .stdout
        .take()
        .map(|r| std::thread::spawn(move || head(r)));
    let forward = output == Output::Inherit;
    let stderr = child
        .stderr
        .take()
        .map(|r| std::thread::spawn(move || tail(r, forward)));
    let json = serde_json::to_vec(task).expect("tasks serialize");
    if let Some(mut stdin) = child.stdin.take() {
        // A worker that dies at once (broken binary) closes the pipe; its status says why.
        let _ = stdin.write_all(&json);
    }
    let status = wait(&mut child, &worker, own_group, limit)?;
    let stdout = stdout
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    let stderr = stderr
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    if status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&stderr);
    // The worker's own failure ends with its error line (text, or JSON with the exit code);
    // anything else is a binary that is not (or not only) fidshard-worker.
    let error_line = stderr.lines().rev().find_map(|l| {
        fidshard_core::error_line::parse_error_line(l)
            .or_else(|| l.contains("\"exit_code\"").then_some(l))
    });
    let code = status.code().and_then(Exit::from_code);
    match (output, code, error_line) {
        (Output::Inherit, Some(code), Some(_)) => Err(Reported(code).into()),
        (Output::Capture, Some(code), Some(msg)) => Err(Fatal::new(code, anyhow!("{msg}")).into()),
        _ => {
            let last = stderr.lines().last().unwrap_or("").trim().to_string();
            Err(Fatal::input(anyhow!(
                "{}: the worker binary failed ({status}) and did not answer{}; is FIDSHARD_WORKER (if set) the fidshard-worker of this fidshard, and is it built against the libtorch it finds (`fidshard doctor`)?",
                worker.display(),
                if last.is_empty() { String::new() } else { format!(" (its last line: `{}`)", last.escape_debug()) }
            ))
            .into())
        }
    }
}

/// What a task printed, for [`no_answer`]: "no output", or its first line (shortened).
pub(crate) fn describe_output(stdout: &str) -> String {
    match stdout.lines().find(|l| !l.trim().is_empty()) {
        None => "no output".to_string(),
        Some(l) => {
            let l: String = l.chars().take(80).collect();
            format!("its output: `{}`", l.escape_debug())
        }
    }
}

/// The error of a worker binary that exited 0 without the answer a task requires (`/bin/true`,
/// `/bin/cat`, a wrapper that swallowed the call): exit 2. `got` says what it did instead.
pub(crate) fn no_answer(what: &str, got: &str) -> anyhow::Error {
    let worker = locate()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| WORKER_EXE.into());
    Fatal::input(anyhow!(
        "{worker}: the worker binary exited 0 but did not answer {what} ({got}); set \
         FIDSHARD_WORKER to the fidshard-worker of this fidshard (or unset it to use the one \
         installed next to fidshard)"
    ))
    .into()
}

/// Waits for the task, polling for stop signals and the time limit; on either, the task's
/// process group is killed (SIGTERM, SIGKILL 5 s later).
fn wait(
    child: &mut Child,
    worker: &std::path::Path,
    own_group: bool,
    limit: Option<(Duration, &str)>,
) -> Result<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {}", worker.display()))?
        {
            return Ok(status);
        }
        let stop = if own_group {
            crate::sys::signals::pending()
        } else {
            None
        };
        if let Some(sig) = stop {
            stop_task(child, own_group);
            return Err(Fatal::new(
                Exit::Interrupted,
                anyhow!("{sig} during the model check: stopped it; nothing was written, run the same command again"),
            )
            .into());
        }
        if let Some((limit, setting)) = limit {
            if started.elapsed() > limit {
                stop_task(child, own_group);
                return Err(Fatal::new(
                    Exit::Failure,
                    anyhow!(
                        "{}: the model check did not finish within {:.0} s (a hung worker, or a file system that slow); it was stopped. Find the cause (`fidshard validate`, the disk), or raise the limit: {setting}",
                        worker.display(),
                        limit.as_secs_f64()
                    ),
                )
                .into());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM to the task's process group (or the task), SIGKILL when it is still there 5 s later.
fn stop_task(child: &mut Child, own_group: bool) {
    use nix::sys::signal::{kill, killpg, Signal};
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let send = |sig| {
        let _ = if own_group {
            killpg(pid, sig)
        } else {
            kill(pid, sig)
        };
    };
    send(Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            // The group may hold more than the task itself.
            send(Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    send(Signal::SIGKILL);
    let _ = child.wait();
}

/// The first [`STDOUT_LIMIT`] bytes of `r`; the rest is read and dropped.
fn head(mut r: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        let room = STDOUT_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// The last [`STDERR_TAIL`] bytes (at least) of `r`; with `forward`, everything is also
/// written to this process's stderr as it comes.
fn tail(mut r: impl Read, forward: bool) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        if forward {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(&buf[..n]).and_then(|()| err.flush());
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
        }
    }
    kept
}
