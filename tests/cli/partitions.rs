//! Many nodes on one machine: three coordinators as partitions 0/3, 1/3, 2/3 of one job in one
//! out dir, one of them SIGKILLed mid-shard with its workers and started again; `status` read
//! while they run; the npz assembled by the last to finish is byte-identical to a
//! one-coordinator run, and the killed shard's finished PNGs are not sampled again.
//! And the partitions of one out dir check each other: one shared fingerprint (another seed,
//! cfg scale or steps is refused before sampling), `--restart` of one partition clears all of
//! them (refused while another holds its lock), an npz copied from another job is not this
//! job's result, a partition heals its damaged PNG, and a job that shrinks or grows counts right.
use crate::support::*;
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

#[test]
fn three_partitions_one_killed_and_resumed_give_the_one_coordinator_npz() {
    let tmp = tempfile::tempdir().unwrap();
    // The reference: one coordinator, the whole job.
    let cfg = job_with(tmp.path(), JOBS[0], JOB);
    let want = reference_npz(&cfg);
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
        png_mtimes(&out.join("samples"), 32..64)
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
    let after = png_mtimes(&out.join("samples"), 32..64);
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

/// A small job for the checks between partitions: 16 samples in 4 shards, 2 partitions.
const SMALL: &str = "num_samples: 16\nsteps: 2\nshard_size: 4\nbatch_size: 4\ndevices: {cpu: 1}\n";

/// `fidshard run CFG --partition K/2 ARGS...`.
fn part(cfg: &Path, k: u32, args: &[&str]) -> std::process::Output {
    let part = format!("{k}/2");
    let mut all = vec!["run", cfg.to_str().unwrap(), "--partition", &part];
    all.extend_from_slice(args);
    fidshard(&all)
}

/// Both partitions of `cfg` run to the end; the npz.
fn both(cfg: &Path, args: &[&str]) -> Vec<u8> {
    for k in 0..2 {
        let o = part(cfg, k, args);
        assert_eq!(o.status.code(), Some(0), "partition {k}/2: {}", stderr(&o));
    }
    std::fs::read(cfg.parent().unwrap().join("out/samples.npz")).unwrap()
}

#[test]
fn partitions_share_one_fingerprint_and_restart_clears_every_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(tmp.path(), JOBS[0], SMALL);
    let out = tmp.path().join("out");
    let o = part(&cfg, 0, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Another seed, cfg scale, steps: refused before anything is sampled, naming the change.
    for (set, key) in [
        ("seed=7", "seed 0 -> 7"),
        ("cfg_scale=2", "cfg_scale"),
        ("steps=3", "steps 2 -> 3"),
    ] {
        let o = part(&cfg, 1, &["--set", set]);
        assert_eq!(o.status.code(), Some(2), "{set}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("made with a different job") && e.contains(key),
            "{set}: {e}"
        );
        assert!(!out.join("partitions/1-of-2/state.sled").exists(), "{set}");
        assert!(!out.join("samples/000008.png").exists(), "{set}: sampled");
    }
    // A whole-job run against the partitions' out dir is checked the same way.
    let o = fidshard(&["run", cfg.to_str().unwrap(), "--set", "seed=7"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("seed 0 -> 7"), "{}", stderr(&o));
    let first = both(&cfg, &[]);

    // --restart while another partition holds its lock: refused (exit 4), nothing deleted.
    let lock = std::fs::File::open(out.join("partitions/1-of-2/coordinator.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let o = part(&cfg, 0, &["--restart", "--set", "seed=7"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("partition 1/2"), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("samples.npz")).unwrap(), first);
    assert!(out.join("partitions/1-of-2/records.json").is_file());
    drop(held);

    // --restart of one partition with another seed clears every partition's state.
    let o = part(&cfg, 0, &["--restart", "--set", "seed=7"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !out.join("partitions/1-of-2").exists(),
        "partition 1's state is kept"
    );
    assert!(!out.join("samples.npz").exists());
    assert!(
        !out.join("samples/000012.png").exists(),
        "partition 1's PNGs are kept"
    );
    let fp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("fingerprint.json")).unwrap()).unwrap();
    assert_eq!(fp["seed"], "7", "{fp}");
    // The old seed is now the other job.
    let o = part(&cfg, 1, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = part(&cfg, 1, &["--set", "seed=7"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let second = std::fs::read(out.join("samples.npz")).unwrap();
    assert_eq!(second.len(), first.len());
    assert_ne!(second, first, "the restarted job has another seed");
}

#[test]
fn an_npz_of_another_job_is_not_complete_and_a_damaged_png_is_healed() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a = job_with(&a_dir, JOBS[0], SMALL);
    let b = job_with(&b_dir, JOBS[0], &format!("{SMALL}seed: 5\n"));
    let want = both(&a, &[]);
    let other = both(&b, &[]);
    assert_ne!(want, other);
    assert_eq!(status_json(&a)["state"], "complete");

    // B's npz copied into A: same shape and labels' count, not A's result.
    let npz = a_dir.join("out/samples.npz");
    std::fs::copy(b_dir.join("out/samples.npz"), &npz).unwrap();
    let s = status_json(&a);
    assert_ne!(s["state"], "complete", "{s}");
    let o = part(&a, 0, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read(&npz).unwrap(), want, "not reassembled");
    assert_eq!(status_json(&a)["state"], "complete");

    // A damaged PNG of partition 1 and no npz: rerunning that partition redoes its shard.
    let png = a_dir.join("out/samples/000013.png");
    let mut bytes = std::fs::read(&png).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&png, &bytes).unwrap();
    std::fs::remove_file(&npz).unwrap();
    let o = part(&a, 1, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&npz).unwrap(),
        want,
        "npz differs after healing"
    );
    assert_ne!(
        std::fs::read(&png).unwrap(),
        bytes,
        "the damaged PNG is kept"
    );
    // A complete job whose PNG is damaged later: the owning partition heals it too.
    std::fs::write(&png, &bytes).unwrap();
    let o = part(&a, 1, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read(&npz).unwrap(), want);
    assert_ne!(std::fs::read(&png).unwrap(), bytes);
}

/// `arr_0` of the npz in `cfg`'s out dir, as one image per entry.
fn images(cfg: &Path) -> Vec<Vec<u8>> {
    let (shape, bytes) = read_npz_u8(&cfg.parent().unwrap().join("out/samples.npz"));
    let per = (shape[1] * shape[2] * shape[3]) as usize;
    bytes.chunks(per).map(<[u8]>::to_vec).collect()
}

#[test]
fn shrinking_and_growing_a_partitioned_job_counts_right() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(tmp.path(), JOBS[0], SMALL);
    both(&cfg, &[]);
    let full = images(&cfg);
    assert_eq!(full.len(), 16);
    let check = |n: u64| {
        let set = format!("num_samples={n}");
        let o = fidshard(&["status", cfg.to_str().unwrap(), "--json", "--set", &set]);
        assert!(o.status.success(), "{}", stderr(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(s["state"], "complete", "{n}: {s}");
        assert_eq!(s["samples_total"], n, "{s}");
        assert_eq!(s["samples_done"], n, "{s}");
        assert_eq!(s["shards_total"], n.div_ceil(4), "{s}");
        assert_eq!(s["shards_done"], n.div_ceil(4), "{s}");
        for p in s["partitions"].as_array().unwrap() {
            assert_eq!(p["state"], "complete", "{p}");
            assert_eq!(p["samples_done"], p["samples_total"], "{p}");
        }
        let got = images(&cfg);
        assert_eq!(got.len() as u64, n);
        got
    };
    // Shrink to 6 (the last shard cut short), then grow to 22: only new indices are sampled,
    // image i stays image i.
    for n in [6u64, 22] {
        let set = format!("num_samples={n}");
        // Between the two partitions' runs, status counts what the current plan holds.
        let o = part(&cfg, 0, &["--set", &set]);
        assert_eq!(o.status.code(), Some(0), "{n}: {}", stderr(&o));
        let o = fidshard(&["status", cfg.to_str().unwrap(), "--json", "--set", &set]);
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(s["samples_total"], n, "{s}");
        assert_ne!(s["state"], "complete", "{n}: {s}");
        assert!(s["samples_done"].as_u64().unwrap() <= n, "{s}");
        let o = part(&cfg, 1, &["--set", &set]);
        assert_eq!(o.status.code(), Some(0), "{n}: {}", stderr(&o));
        let got = check(n);
        let k = (n as usize).min(16);
        assert_eq!(got[..k], full[..k], "{n}: an image changed");
    }
}

#[test]
fn a_whole_job_does_not_take_another_jobs_npz_either() {
    let tmp = tempfile::tempdir().unwrap();
    let job = "num_samples: 8\nsteps: 2\nshard_size: 4\nbatch_size: 4\ndevices: {cpu: 1}\n";
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a = job_with(&a_dir, JOBS[0], job);
    let b = job_with(&b_dir, JOBS[0], &format!("{job}seed: 5\n"));
    for cfg in [&a, &b] {
        let o = fidshard(&["run", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let npz = a_dir.join("out/samples.npz");
    let want = std::fs::read(&npz).unwrap();
    std::fs::copy(b_dir.join("out/samples.npz"), &npz).unwrap();
    assert_ne!(std::fs::read(&npz).unwrap(), want);
    let s = status_json(&a);
    assert_ne!(s["state"], "complete", "{s}");
    let o = fidshard(&["run", a.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read(&npz).unwrap(), want, "not reassembled");
    assert_eq!(status_json(&a)["state"], "complete");
}
