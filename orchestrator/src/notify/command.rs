//! `notify.command`: a shell command line run with `/bin/sh -c`, in its own process group, its
//! output appended to a log file; killed (the whole group) when it outlives its bound.
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the command may run before its process group gets SIGTERM (SIGKILL 2 s later).
pub(super) const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `line` with `env` added to fidshard's environment, stdin empty, stdout and stderr
/// appended to `log`; `Err` says why it failed (could not start, non-zero exit, a signal, the
/// timeout).
pub(super) fn run(line: &str, env: &[(&'static str, String)], log: &Path) -> Result<(), String> {
    run_within(line, env, log, TIMEOUT)
}

fn run_within(
    line: &str,
    env: &[(&'static str, String)],
    log: &Path,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let _ = writeln!(
        &out,
        "--- {} notify.command, FIDSHARD_STATE={}",
        crate::sys::time::format_utc(crate::sys::time::unix_now() as u64),
        env.iter()
            .find(|(k, _)| *k == "FIDSHARD_STATE")
            .map_or("", |(_, v)| v.as_str())
    );
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(line)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
    let group = Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                // Whatever it left running in the background ends with it.
                let _ = killpg(group, Signal::SIGKILL);
                return match (status.code(), status.success()) {
                    (_, true) => Ok(()),
                    (Some(code), _) => Err(format!("exited with status {code}")),
                    (None, _) => Err(format!("was killed by a signal ({status})")),
                };
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = killpg(group, Signal::SIGTERM);
                let grace = Instant::now() + Duration::from_secs(2);
                while Instant::now() < grace && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = killpg(group, Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!(
                    "still running after {} s; its process group was killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_environment_reports_failures_and_bounds_the_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/notify.log");
        let env = vec![("FIDSHARD_STATE", "complete".to_string())];
        run_within("echo \"state=$FIDSHARD_STATE\"", &env, &log, TIMEOUT).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("state=complete"), "{text}");
        let e = run_within("exit 3", &env, &log, TIMEOUT).unwrap_err();
        assert_eq!(e, "exited with status 3");
        let started = Instant::now();
        let e = run_within(
            "sleep 30 & sleep 30",
            &env,
            &log,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(e.contains("still running after 0 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
