//! Many nodes on one machine: three coordinators as partitions 0/3, 1/3, 2/3 of one job in one
//! out dir, one of them SIGKILLed mid-shard with its workers and started again; `status` read
//! while they run; the npz assembled by the last to finish is byte-identical to a
//! one-coordinator run, and the killed shard's finished PNGs are not sampled again.
mod cli_common;

use cli_common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const JOB: &str = "num_samples: 96\nsteps: 2\nshard_size: 8\nbatch_size: 2\ndevices: {cpu: 1}\n";

fn start(cfg: &Path, k: u32) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--partition",
            &format!("{k}/3"),
        ])
        .env("FIDSHARD_LOG", "info")
        .env("FAILPOINTS", "worker-slow=return(250)")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn mtimes(dir: &Path, range: std::ops::Range<u64>) -> BTreeMap<u64, SystemTime> {
    range
        .filter_map(|i| {
            let m = std::fs::metadata(dir.join(format!("{i:06}.png"))).ok()?;
            Some((i, m.modified().ok()?))
        })
        .collect()
}

#[test]
fn three_partitions_one_killed_and_resumed_give_the_one_coordinator_npz() {
    let tmp = tempfile::tempdir().unwrap();
    // The reference: one coordinator, the whole job.
    let clean_dir = tmp.path().join("clean");
    std::fs::create_dir_all(&clean_dir).unwrap();
    let clean = job_with(&clean_dir, JOBS[0], JOB);
    let o = fidshard(&["run", clean.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = std::fs::read(clean_dir.join("out/samples.npz")).unwrap();

    let cfg = job_with(tmp.path(), JOBS[0], JOB);
    let out = tmp.path().join("out");
    let plan = fidshard(&["plan", cfg.to_str().unwrap(), "--partitions", "3"]);
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan_text.contains("partition 1/3: shards 4..8"),
        "{plan_text}"
    );

    let mut children: Vec<Child> = (0..3).map(|k| start(&cfg, k)).collect();
    // Partition 1 (samples 32..64): wait until it has finished a shard and is mid-way through
    // the next, then kill its coordinator (its workers die with it: parent-death signal).
    let status1 = out.join("partitions/1-of-3/status.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    let unrecorded = |done: &serde_json::Value| -> BTreeMap<u64, SystemTime> {
        let recorded: Vec<(u64, u64)> = done
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        mtimes(&out.join("samples"), 32..64)
            .into_iter()
            .filter(|(i, _)| !recorded.iter().any(|(a, b)| (a..b).contains(&i)))
            .collect()
    };
    loop {
        assert!(Instant::now() < deadline, "partition 1 made no progress");
        if let Some(v) = read_json(&status1) {
            let done = v["shards_done"].as_u64().unwrap_or(0);
            if (1..4).contains(&done) && !unrecorded(&v["done_ranges"]).is_empty() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // While they run, status shows the whole job with one row per partition.
    let s = status_json(&cfg);
    assert_eq!(s["partitions"].as_array().map(Vec::len), Some(3), "{s}");
    assert_eq!(s["samples_total"], 96, "{s}");
    assert!(
        s["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["state"] == "running"),
        "{s}"
    );

    kill(Pid::from_raw(children[1].id() as i32), Signal::SIGKILL).unwrap();
    let _ = children[1].wait();
    std::thread::sleep(Duration::from_millis(300));
    // PNGs of partition 1 that exist but whose shards were not recorded: the interrupted
    // shard's finished batches.
    let before = unrecorded(&read_json(&status1).unwrap()["done_ranges"]);
    assert!(!before.is_empty(), "the killed shard had no finished PNG");
    let s = status_json(&cfg);
    let row1 = s["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["partition"] == "1/3")
        .unwrap()
        .clone();
    assert!(
        row1["state"] == "crashed" || row1["state"] == "interrupted",
        "{row1}"
    );

    children[1] = start(&cfg, 1);
    for (k, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "partition {k}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(
        std::fs::read(out.join("samples.npz")).unwrap(),
        want,
        "npz differs"
    );
    let after = mtimes(&out.join("samples"), 32..64);
    for (i, t) in &before {
        assert_eq!(after.get(i), Some(t), "sample {i} was sampled again");
    }
    let s = status_json(&cfg);
    assert_eq!(s["state"], "complete", "{s}");
    assert!(
        s["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "complete"),
        "{s}"
    );
    // A different N against this out dir keeps every recorded shard: nothing to sample.
    let o = fidshard(&["run", cfg.to_str().unwrap(), "--partition", "0/2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
