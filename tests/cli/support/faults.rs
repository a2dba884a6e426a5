//! What only the fault-injection modules (compiled with the `failpoints` feature) use: runs
//! with failpoints set in their environment, waiting on them, what they leave behind; and
//! whether this is CI, where the Slurm test must not skip.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Whether this runs in CI (`CI=true`, as GitHub Actions sets it): there a test whose tools are
/// missing fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Lets `cmd`'s process take SIGHUP's default action even when the tests run under `nohup`
/// (which ignores it, and an ignored signal stays ignored across exec): the tests that send a
/// hangup expect it to stop the run; the one that tests `nohup` ignores it in its own shell.
pub fn hup_default(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc_sighup_default();
            Ok(())
        })
    }
}

fn libc_sighup_default() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: resetting a disposition to its default in the child before exec.
    let _ = unsafe { signal(Signal::SIGHUP, SigHandler::SigDfl) };
}

/// Starts `fidshard run CFG ARGS` in the background with extra environment (e.g. FAILPOINTS),
/// stderr captured for [`finish`]; SIGHUP at its default action ([`hup_default`]).
pub fn run_with(cfg: &Path, env: &[(&str, &str)], args: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fidshard"));
    hup_default(&mut cmd);
    cmd.arg("run")
        .arg(cfg)
        .args(args)
        .env("FIDSHARD_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child of [`run_with`]: its exit code and stderr.
pub fn finish(child: Child) -> (Option<i32>, String) {
    let o = child.wait_with_output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every worker log under `OUT/logs`, concatenated.
pub fn worker_logs(out: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(out.join("logs")).unwrap().flatten() {
        all += &std::fs::read_to_string(e.path()).unwrap_or_default();
    }
    all
}

/// Polls `f` every 200 ms until it gives a value (or panics after `secs`, naming `what`).
pub fn wait_until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The final-named PNGs of `indices` in `samples` that exist, with their modification times.
pub fn png_mtimes(samples: &Path, indices: std::ops::Range<u64>) -> BTreeMap<u64, SystemTime> {
    indices
        .filter_map(|i| {
            let meta = std::fs::metadata(samples.join(format!("{i:06}.png"))).ok()?;
            Some((i, meta.modified().ok()?))
        })
        .collect()
}

/// The temporary files (`.NAME.tmp.PID`) in `dir`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect()
}
