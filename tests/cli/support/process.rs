//! Running the real binary in the background and watching it: its status, its snapshot
//! file, the shards its workers sampled.
use super::{fidshard, read_json, stderr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `fidshard run` in the background.
pub fn spawn_run(cfg: &Path, extra_args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .arg("run")
        .arg(cfg)
        .args(extra_args)
        .env("FIDSHARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fidshard run")
}

/// Polls `OUT/status.json` until `pred` holds (or panics after `secs`).
pub fn wait_for_snapshot(
    out: &Path,
    secs: u64,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = read_json(&out.join("status.json")).filter(|v| pred(v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for status.json"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `fidshard status TARGET --json` as a JSON value.
pub fn status_json(target: &Path) -> serde_json::Value {
    let o = fidshard(&["status", target.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// "sampling shard" lines of all worker logs under OUT/logs, as shard ids.
pub fn sampled_shards(out: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    let Ok(dir) = std::fs::read_dir(out.join("logs")) else {
        return ids;
    };
    for e in dir.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for l in text.lines().filter(|l| l.contains("sampling shard")) {
            // `shard=#3 [12..16)`
            if let Some(rest) = l.split("shard=#").nth(1) {
                if let Some(id) = rest.split_whitespace().next().and_then(|s| s.parse().ok()) {
                    ids.push(id);
                }
            }
        }
    }
    ids.sort_unstable();
    ids
}
