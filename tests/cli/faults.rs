//! Fault injection through the real binaries: each failure that hangs or kills a torchrun
//! `sample_ddp.py` job must cost at most the shard in flight here. The binary under test is
//! built with the `failpoints` feature (`make test` enables it), see orchestrator/src/faults.rs.
use crate::support::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// 64 samples x 100 steps in shards of 4: a few seconds on two CPU workers.
const JOB: &str = "num_samples: 64\nsteps: \"100\"\nshard_size: 4\nbatch_size: 4\nretry: {attempts: 4, backoff: 0.1, backoff_max: 0.5}\n";

fn job(dir: &Path, extra: &str) -> PathBuf {
    job_with(dir, JOBS[1], &format!("{JOB}{extra}"))
}

/// The npz of the fault-free run (two CPU workers), computed once per test binary.
fn clean_npz() -> &'static [u8] {
    let tmp = tempfile::tempdir().unwrap();
    reference_npz(&job(tmp.path(), "devices: {cpu: 2}\n"))
}

/// Failpoint that stretches each micro-batch by 250 ms: long enough to interrupt mid-run.
const SLOW: &str = "worker-slow=return(250)";

fn assert_same_as_clean(out: &Path) {
    let got = std::fs::read(out.join("samples.npz")).expect("samples.npz");
    assert!(
        got == clean_npz(),
        "the npz differs from the fault-free run's"
    );
}

/// The pid of a worker that is sampling, from the coordinator's status.json.
fn busy_worker(out: &Path) -> (u64, i32) {
    let snap = wait_for_snapshot(out, 120, |v| {
        v["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["state"] == "busy" && w["pid"].is_u64()))
            && v["shards_done"].as_u64() >= Some(1)
    });
    let w = snap["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["state"] == "busy" && w["pid"].is_u64())
        .unwrap();
    (w["id"].as_u64().unwrap(), w["pid"].as_u64().unwrap() as i32)
}

fn no_temp_files(out: &Path) {
    let left = temp_files(&out.join("samples"));
    assert!(
        left.is_empty(),
        "temporary files left under samples/: {left:?}"
    );
}

#[test]
fn a_worker_killed_mid_shard_costs_only_its_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job(tmp.path(), "devices: {cpu: 2}\n");
    let out = tmp.path().join("out");
    let child = run_with(&cfg, &[("FAILPOINTS", SLOW)], &[]);
    let (_, pid) = busy_worker(&out);
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let (code, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    assert_same_as_clean(&out);
    let st = status_json(&out);
    assert_eq!(st["state"], "complete");
    assert!(st["retries"].as_u64() >= Some(1), "{st}");
    assert!(err.contains("killed by signal 9"), "{err}");
}

#[test]
fn a_device_whose_worker_keeps_dying_is_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job(tmp.path(), "devices: {cpu: 2}\n");
    let cfg_text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("attempts: 4", "attempts: 6");
    std::fs::write(&cfg, cfg_text).unwrap();
    let out = tmp.path().join("out");
    let (code, err) = finish(run_with(
        &cfg,
        // Worker 0 is slowed down (0.5 s a micro-batch) so that the job outlasts the three
        // deaths of worker 1 however loaded the machine is: without it, worker 0 may finish
        // every shard first.
        &[(
            "FAILPOINTS",
            "worker-crash=return(1);worker-slow=return(500)",
        )],
        &[],
    ));
    assert_eq!(code, Some(0), "{err}");
    assert_same_as_clean(&out);
    assert!(err.contains("quarantined"), "{err}");
    let snap: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("status.json")).unwrap()).unwrap();
    assert_eq!(snap["workers"][1]["state"], "quarantined", "{snap}");
}

#[test]
fn cuda_oom_halves_the_micro_batch_and_keeps_the_images() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job(tmp.path(), "devices: {cpu: 2}\n");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("batch_size: 4", "batch_size: 8")
        .replace("shard_size: 4", "shard_size: 8");
    std::fs::write(&cfg, text).unwrap();
    let out = tmp.path().join("out");
    let (code, err) = finish(run_with(
        &cfg,
        &[("FAILPOINTS", "worker-oom=return(2)")],
        &[],
    ));
    assert_eq!(code, Some(0), "{err}");
    assert_same_as_clean(&out);
    let logs = worker_logs(&out);
    assert!(
        logs.contains("out of memory; halving the micro-batch") && logs.contains("batch=2"),
        "{logs}"
    );
}

#[test]
fn oom_at_micro_batch_one_fails_the_shard_with_its_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job(tmp.path(), "devices: {cpu: 1}\nnum_samples: 8\n");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("num_samples: 64\n", "");
    std::fs::write(&cfg, text).unwrap();
    let out = tmp.path().join("out");
    let (code, err) = finish(run_with(
        &cfg,
        &[("FAILPOINTS", "worker-oom=return(0)")],
        &[],
    ));
    assert_eq!(code, Some(3), "{err}");
    let st = status_json(&out);
    assert_eq!(st["state"], "failed");
    assert!(
        st["last_errors"]
            .to_string()
            .contains("out of memory at micro-batch 1"),
        "{st}"
    );
}

#[test]
fn a_hung_worker_is_killed_and_its_shard_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job(tmp.path(), "devices: {cpu: 2}\nstall_timeout: 4\n");
    let out = tmp.path().join("out");
    let child = run_with(&cfg, &[("FAILPOINTS", SLOW)], &["--grace", "1"]);
    let (_, pid) = busy_worker(&out);
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let (code, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    assert_same_as_clean(&out);
    assert!(err.contains("no progress for"), "{err}");
    assert!(status_json(&out)["last_errors"]
        .to_string()
        .contains("hung"));
}

#[test]
fn io_errors_while_writing_pngs_are_retried_without_partial_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job(tmp.path(), "devices: {cpu: 2}\n");
    let out = tmp.path().join("out");
    let (code, err) = finish(run_with(&cfg, &[("FAILPOINTS", "worker-io=3*return")], &[]));
    assert_eq!(code, Some(0), "{err}");
    assert_same_as_clean(&out);
    no_temp_files(&out);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(status_json(&out)["retries"].as_u64() >= Some(1));
}

#[test]
fn the_disk_preflight_refuses_and_force_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    // 10^9 images of 64x64: far more than any disk here.
    let cfg = job(tmp.path(), "devices: {cpu: 1}\nnum_samples: 1000000000\n");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("num_samples: 64\n", "")
        .replace("shard_size: 4", "shard_size: 100000");
    std::fs::write(&cfg, text).unwrap();
    let out = tmp.path().join("out");
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--force") && err.contains("free"), "{err}");
    assert!(!out.join("logs").exists(), "no worker may start");
    // A refusal leaves no state behind.
    assert!(!out.join("state.sled").exists() && !out.join("fingerprint.json").exists());

    let child = run_with(&cfg, &[("FAILPOINTS", SLOW)], &["--force"]);
    wait_for_snapshot(&out, 60, |v| v["state"] == "running");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let (code, err) = finish(child);
    assert_eq!(code, Some(75), "{err}");
    // Interrupted before its first shard finished: "interrupted", not "not started".
    let s = status_json(&out);
    assert_eq!(s["state"], "interrupted", "{s}");
}

#[test]
fn a_poison_shard_fails_alone_and_a_rerun_retries_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job(tmp.path(), "devices: {cpu: 2}\n");
    let out = tmp.path().join("out");
    let (code, err) = finish(run_with(
        &cfg,
        &[("FAILPOINTS", "worker-poison=return(3)")],
        &[],
    ));
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("12..16"),
        "the log names the missing range: {err}"
    );
    let st = status_json(&out);
    assert_eq!(st["state"], "failed", "{st}");
    assert_eq!(st["shards_failed"], 1);
    assert_eq!(st["samples_done"], 60);
    assert_eq!(st["missing_ranges"], serde_json::json!([[12, 16]]));
    assert!(
        st["last_errors"].to_string().contains("worker-poison"),
        "{st}"
    );
    let human = fidshard(&["status", out.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("12..16"));

    let (code, err) = finish(run_with(&cfg, &[], &[]));
    assert_eq!(code, Some(0), "{err}");
    assert_same_as_clean(&out);
}

#[test]
fn a_worker_that_cannot_load_reports_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job(tmp.path(), "devices: {cpu: 2}\n");
    let out = tmp.path().join("out");
    let (code, err) = finish(run_with(&cfg, &[("FAILPOINTS", "worker-load=return")], &[]));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("worker-load failpoint"), "{err}");
    let st = status_json(&out);
    assert!(
        st["last_errors"]
            .to_string()
            .contains("cannot load the checkpoint"),
        "{st}"
    );
}

fn preempt(sig: Signal) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job(tmp.path(), "devices: {cpu: 2}\n");
    let out = tmp.path().join("out");
    let child = run_with(&cfg, &[("FAILPOINTS", SLOW)], &["--grace", "5"]);
    wait_for_snapshot(&out, 120, |v| v["shards_done"].as_u64() >= Some(2));
    let t = Instant::now();
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    let (code, err) = finish(child);
    assert_eq!(code, Some(75), "{sig}: {err}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "{sig}: took {:?}",
        t.elapsed()
    );
    let st = status_json(&out);
    assert_eq!(st["state"], "interrupted", "{st}");
    let done = st["shards_done"].as_u64().unwrap();
    assert!(done >= 2);
    let before = sampled_shards(&out).len();
    let (code, err) = finish(run_with(&cfg, &[], &[]));
    assert_eq!(code, Some(0), "{err}");
    assert_same_as_clean(&out);
    // Recorded shards were not sampled again: at most 16 - done shards in the second run.
    assert!(sampled_shards(&out).len() - before <= (16 - done) as usize);
}

#[test]
fn sigterm_preemption_exits_75_and_resumes() {
    preempt(Signal::SIGTERM);
}

#[test]
fn sigusr1_preemption_exits_75_and_resumes() {
    preempt(Signal::SIGUSR1);
}

#[test]
fn a_second_sigint_kills_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    // Workers that ignore nothing but are stopped cannot exit on SIGTERM: only SIGKILL ends them.
    let cfg = job(tmp.path(), "devices: {cpu: 2}\n");
    let out = tmp.path().join("out");
    let child = run_with(&cfg, &[("FAILPOINTS", SLOW)], &["--grace", "60"]);
    let (_, pid) = busy_worker(&out);
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let t = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let (code, err) = finish(child);
    assert_eq!(code, Some(75), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.contains("second SIGINT"), "{err}");
}
