//! Chaos: a few hundred samples on three CPU workers while a driver injects random faults
//! (worker SIGKILLs and SIGSTOPs, coordinator SIGKILLs and restarts) on top of failpoints that
//! inject CUDA-style out-of-memory errors and disk-write errors at random. The final npz must be
//! byte-identical to a fault-free run's. Prints the numbers for the issue notes
//! (`cargo test ... --test cli chaos -- --nocapture`).
use crate::support::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JOB: &str = "num_samples: 360\nsteps: \"50\"\nshard_size: 6\nbatch_size: 3\ndevices: {cpu: 3}\nstall_timeout: 3\nretry: {attempts: 12, backoff: 0.1, backoff_max: 0.4}\n";
const FAILPOINTS: &str = "worker-oom=4%return(1);worker-io=1%return;worker-slow=return(100)";
/// The fault-free run is slowed the same way, so the wall times compare.
const SLOW_ONLY: &str = "worker-slow=return(100)";
const MIN_FAULTS: usize = 15;

fn job(dir: &Path) -> PathBuf {
    job_with(dir, JOBS[0], JOB)
}

fn start(cfg: &Path, failpoints: bool, log: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fidshard"));
    cmd.arg("run")
        .arg(cfg)
        .args(["--grace", "1"])
        .env("FIDSHARD_LOG", "info");
    cmd.env(
        "FAILPOINTS",
        if failpoints { FAILPOINTS } else { SLOW_ONLY },
    );
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    cmd.stdout(Stdio::null())
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap()
}

/// A tiny deterministic generator (xorshift), so a failing run can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn busy_pids(out: &Path) -> Vec<i32> {
    let Ok(text) = std::fs::read_to_string(out.join("status.json")) else {
        return vec![];
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return vec![];
    };
    v["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter(|w| w["state"] == "busy")
                .filter_map(|w| w["pid"].as_u64().map(|p| p as i32))
                .collect()
        })
        .unwrap_or_default()
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn chaos_run_gives_the_fault_free_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let clean_dir = tmp.path().join("clean");
    let chaos_dir = tmp.path().join("chaos");
    std::fs::create_dir_all(&clean_dir).unwrap();
    std::fs::create_dir_all(&chaos_dir).unwrap();

    let t = Instant::now();
    let clean_cfg = job(&clean_dir);
    let mut c = start(&clean_cfg, false, &clean_dir.join("coordinator.log"));
    assert_eq!(c.wait().unwrap().code(), Some(0));
    let clean_secs = t.elapsed().as_secs_f64();

    let cfg = job(&chaos_dir);
    let out = chaos_dir.join("out");
    let log = chaos_dir.join("coordinator.log");
    let mut rng = Rng(0x5eed_f1d5_4a4d);
    let (mut kills, mut stops, mut coordinator_kills) = (0usize, 0usize, 0usize);
    let t = Instant::now();
    let mut coord = start(&cfg, true, &log);
    let code = loop {
        std::thread::sleep(Duration::from_millis(250 + rng.below(400)));
        if let Some(status) = coord.try_wait().unwrap() {
            match status.code() {
                Some(0) => break 0,
                other => panic!("coordinator exited with {other:?}; see {}", log.display()),
            }
        }
        if kills + stops + coordinator_kills >= 24 {
            continue; // enough injected by hand: let it finish
        }
        match rng.below(10) {
            0..=4 => {
                let pids = busy_pids(&out);
                if let Some(&pid) = pids.get(rng.below(pids.len().max(1) as u64) as usize) {
                    if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                        kills += 1;
                    }
                }
            }
            5..=7 => {
                let pids = busy_pids(&out);
                if let Some(&pid) = pids.get(rng.below(pids.len().max(1) as u64) as usize) {
                    if kill(Pid::from_raw(pid), Signal::SIGSTOP).is_ok() {
                        stops += 1;
                    }
                }
            }
            _ => {
                let _ = coord.kill();
                coord.wait().unwrap();
                coordinator_kills += 1;
                // Its workers die with it; a restart resumes.
                coord = start(&cfg, true, &log);
            }
        }
    };
    let chaos_secs = t.elapsed().as_secs_f64();
    assert_eq!(code, 0);

    let coordinator_log = std::fs::read_to_string(&log).unwrap();
    let mut worker_logs = String::new();
    for e in std::fs::read_dir(out.join("logs")).unwrap().flatten() {
        worker_logs += &std::fs::read_to_string(e.path()).unwrap();
    }
    let ooms = count(&worker_logs, "out of memory; halving the micro-batch");
    let io = count(&coordinator_log, "No space left on device (injected");
    let total = kills + stops + coordinator_kills + ooms + io;
    let st = status_json(&out);
    println!(
        "chaos: {total} faults injected ({kills} worker SIGKILLs, {stops} worker SIGSTOPs, \
         {coordinator_kills} coordinator SIGKILLs + restarts, {ooms} injected OOMs, {io} injected \
         write errors); {} retries recorded in the last run; {:.1} s vs {:.1} s fault-free \
         (+{:.0}%)",
        st["retries"],
        chaos_secs,
        clean_secs,
        (chaos_secs / clean_secs - 1.0) * 100.0
    );
    assert!(total >= MIN_FAULTS, "only {total} faults were injected");
    assert!(kills + stops >= 1 && coordinator_kills >= 1);
    let a = std::fs::read(out.join("samples.npz")).unwrap();
    let b = std::fs::read(clean_dir.join("out/samples.npz")).unwrap();
    assert!(
        a == b,
        "the chaos run's npz differs from the fault-free run's"
    );
    assert_eq!(st["state"], "complete");
}
