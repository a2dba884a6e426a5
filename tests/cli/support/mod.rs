//! The helpers of the CLI tests, one tree for the whole test binary: running the real
//! `fidshard` (here), the golden data (golden.rs), runs in the background (process.rs), the
//! cached fault-free reference runs (reference.rs), a mock Hugging Face Hub (hub_mock.rs), and
//! what only the fault-injection modules use (faults.rs, compiled with them).
#[cfg(feature = "failpoints")]
mod faults;
mod golden;
pub mod hub_mock;
mod process;
mod reference;

#[cfg(feature = "failpoints")]
pub use faults::*;
pub use golden::*;
pub use process::*;
pub use reference::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `tests/fixtures/<rel>` (the golden data is copied there so a fresh clone has it).
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel)
}

/// The real worker binary, next to fidshard.
pub fn worker_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_fidshard")).with_file_name("fidshard-worker")
}

/// `fidshard ARGS`, logging at warn level.
pub fn fidshard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args(args)
        .env("FIDSHARD_LOG", "warn")
        .output()
        .expect("run fidshard")
}

/// `fidshard ARGS` logging at info level (the workers inherit it, and their "sampling shard"
/// lines are what [`sampled_shards`] counts), not yet started: for environment changes.
pub fn fidshard_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fidshard"));
    cmd.args(args).env("FIDSHARD_LOG", "info");
    cmd
}

/// `fidshard ARGS` logging at info level, with extra environment variables.
pub fn fidshard_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    fidshard_cmd(args)
        .envs(env.iter().copied())
        .output()
        .expect("run fidshard")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one `fidshard: error:` line of a failed command (fails the test unless there is
/// exactly one).
pub fn one_error_line(o: &Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("fidshard: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one error line expected: {err}");
    lines[0].to_string()
}

/// `OUT/samples.npz`, which must exist.
pub fn npz(out: &Path) -> Vec<u8> {
    std::fs::read(out.join("samples.npz")).expect("samples.npz exists")
}

/// Every file under `dir`, relative to it, sorted.
pub fn tree_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// A JSON file (a snapshot, a record), or `None` while it is missing or half written.
pub fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}
