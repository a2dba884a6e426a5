//! Preemption and node loss through the real binaries: an interrupted shard loses at most the
//! batch in flight, not the shard. SIGUSR1 (Slurm's warning before the time limit) drains: each
//! worker finishes and writes the batch it is sampling, then exits, and `run` exits 75; a
//! worker killed mid-shard loses only what it had not written. Either way the PNGs already
//! written are reused (not rewritten) when the shard runs again, and the npz is byte-identical
//! to an uninterrupted run's. Built with the `failpoints` feature (`worker-slow`).
use crate::support::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// 32 samples in two shards of 16, micro-batches of 2, one CPU worker; random labels, so that
/// the labels of reused PNGs (computed without libtorch) are checked too.
const JOB: &str = "num_samples: 32\nsteps: \"50\"\nlabels: random\nshard_size: 16\nbatch_size: 2\n\
                   devices: {cpu: 1}\nretry: {attempts: 4, backoff: 1.0, backoff_max: 1.0}\n";

/// Each micro-batch takes at least 300 ms: long enough to signal mid-shard.
const SLOW: &str = "worker-slow=return(300)";

fn job(dir: &Path) -> PathBuf {
    job_with(dir, JOBS[1], JOB)
}

/// The npz of an uninterrupted run of the same job, computed once per test binary.
fn clean_npz() -> &'static [u8] {
    let tmp = tempfile::tempdir().unwrap();
    reference_npz(&job(tmp.path()))
}

/// Waits until the worker is sampling a shard and has at least `min` of it sampled: the shard
/// (id, start, end), the samples reported then, and the worker's pid.
fn mid_shard(out: &Path, min: u64) -> ((u64, u64, u64), u64, i32) {
    let busy = |v: &serde_json::Value| {
        v["workers"].as_array().and_then(|ws| {
            ws.iter()
                .find(|w| {
                    w["state"] == "busy"
                        && w["pid"].is_u64()
                        && w["progress"][0].as_u64().is_some_and(|s| s >= min)
                        && w["progress"][0].as_u64() < w["progress"][1].as_u64()
                })
                .cloned()
        })
    };
    let snap = wait_for_snapshot(out, 120, |v| busy(v).is_some());
    let w = busy(&snap).unwrap();
    let s = &w["shard"];
    let shard = (
        s["id"].as_u64().unwrap(),
        s["start"].as_u64().unwrap(),
        s["end"].as_u64().unwrap(),
    );
    (
        shard,
        w["progress"][0].as_u64().unwrap(),
        w["pid"].as_u64().unwrap() as i32,
    )
}

/// The `reused=N` counts the workers logged for shard `id`, in log order.
fn reused_counts(out: &Path, id: u64) -> Vec<u64> {
    worker_logs(out)
        .lines()
        .filter(|l| l.contains("reusing PNGs") && l.contains(&format!("shard=#{id} ")))
        .filter_map(|l| {
            l.split("reused=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn assert_same_as_clean(out: &Path) {
    let got = std::fs::read(out.join("samples.npz")).expect("samples.npz");
    assert!(
        got == clean_npz(),
        "the npz differs from the uninterrupted run's"
    );
}

#[test]
fn sigusr1_writes_the_batch_in_flight_and_the_resume_reuses_the_pngs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job(tmp.path());
    let out = tmp.path().join("out");
    let child = run_with(&cfg, &[("FAILPOINTS", SLOW)], &["--grace", "20"]);
    let ((id, a, b), sampled, _) = mid_shard(&out, 2);
    let t = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGUSR1).unwrap();
    let (code, err) = finish(child);
    assert_eq!(code, Some(75), "{err}");
    // Within a batch or two, not the grace: the worker exited by itself.
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.contains("SIGUSR1: draining"), "{err}");
    assert!(!err.contains("killed by signal"), "{err}");
    assert!(worker_logs(&out).contains("drained: the batch in flight is written"));
    assert_eq!(status_json(&out)["state"], "interrupted");

    // The batch being sampled when the signal came was finished and written: more PNGs than
    // the worker had reported sampled, whole batches, and the shard not done.
    let kept = png_mtimes(&out.join("samples"), a..b);
    let n = kept.len() as u64;
    assert!(
        n > sampled && n < b - a,
        "{n} PNGs of shard {id} after {sampled} sampled"
    );
    assert_eq!(n % 2, 0, "whole micro-batches: {n}");
    assert_eq!(
        kept.keys().copied().collect::<Vec<_>>(),
        (a..a + n).collect::<Vec<_>>()
    );

    let (code, err) = finish(run_with(&cfg, &[], &[]));
    assert_eq!(code, Some(0), "{err}");
    assert_same_as_clean(&out);
    // Reused as they were, not sampled or written again.
    let after = png_mtimes(&out.join("samples"), a..b);
    for (i, mtime) in &kept {
        assert_eq!(after[i], *mtime, "sample {i} was written again");
    }
    assert_eq!(
        reused_counts(&out, id).last(),
        Some(&n),
        "{}",
        worker_logs(&out)
    );
}

#[test]
fn a_worker_killed_mid_shard_loses_only_what_it_had_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job(tmp.path());
    let out = tmp.path().join("out");
    let child = run_with(&cfg, &[("FAILPOINTS", SLOW)], &[]);
    // Two batches reported sampled: the first one is surely written (a PNG takes
    // milliseconds, a batch at least 300 ms).
    let ((id, a, b), _, pid) = mid_shard(&out, 4);
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    // The worker is gone at once; its shard is retried after the 1 s backoff.
    std::thread::sleep(Duration::from_millis(300));
    let kept = png_mtimes(&out.join("samples"), a..b);
    let n = kept.len() as u64;
    assert!(n >= 2 && n < b - a, "{n} PNGs of shard {id}");
    let (code, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("killed by signal 9"), "{err}");
    assert_same_as_clean(&out);
    let after = png_mtimes(&out.join("samples"), a..b);
    for (i, mtime) in &kept {
        assert_eq!(after[i], *mtime, "sample {i} was written again");
    }
    assert_eq!(reused_counts(&out, id), [n], "{}", worker_logs(&out));
    assert!(status_json(&out)["retries"].as_u64() >= Some(1));
}
