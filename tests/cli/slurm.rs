//! The Slurm scripts of scripts/slurm/ on a real, one-node Slurm cluster (Debian's slurm-wlm,
//! started by scripts/slurm/cluster.sh in a temporary folder): a job split into 3 partitions as
//! the 3-task CPU array of fidshard-cpu-array.sbatch. One task is preempted (SIGUSR1 to its
//! batch script: exit 75, requeued by the script), another one's coordinator is killed hard
//! (SIGKILL: requeued by the script); both resume, the last task to finish assembles
//! `samples.npz`, which must be byte-identical to a one-coordinator run of the same job outside
//! Slurm, and `fidshard status --json` must say complete.
//!
//! Needs root (the daemons run as root) and Slurm: cluster.sh installs slurm-wlm and munge with
//! apt-get when they are missing (about a minute). In CI (CI=true) a failure to install or start
//! Slurm fails the test; elsewhere the test is skipped, with a message, when Slurm cannot be
//! installed. Built with the `failpoints` feature (`worker-slow` makes the tasks last long
//! enough to be preempted).
use crate::support::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// 48 samples in 12 shards of 4 (4 per partition), micro-batches of 2, one CPU worker per task.
const JOB: &str = "num_samples: 48\nsteps: 3\nshard_size: 4\nbatch_size: 2\ndevices: {cpu: 1}\n\
                   retry: {attempts: 4, backoff: 0.5, backoff_max: 1.0}\n";

/// Each micro-batch of the Slurm tasks sleeps this long: a partition takes about 4 x 2 x 1.2 s,
/// long enough to preempt one task and kill another mid-partition.
const SLOW: &str = "worker-slow=return(1200)";

const TASKS: u32 = 3;

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A command without the Slurm variables of any job this test itself runs in (they would make
/// `fidshard run` a partition, or point the clients at another cluster).
fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SLURM_") || k == "FAILPOINTS" {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// The one-node cluster of a test; stopped in Drop (its jobs cancelled, the daemons it started
/// ended by pid), failed or not.
struct Cluster {
    dir: PathBuf,
    /// Where the array tasks write their logs (shown when the test fails).
    logs: PathBuf,
}

impl Cluster {
    fn conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }

    /// A Slurm client command (sbatch, scontrol, ...) for this cluster.
    fn client(&self, program: &str) -> Command {
        let mut cmd = clean_command(program);
        cmd.env("SLURM_CONF", self.conf());
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let o = self
            .client(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(o.status.success(), "{program} {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `scontrol show job -o ID` as Key=Value pairs.
    fn job(&self, id: &str) -> HashMap<String, String> {
        let o = self
            .client("scontrol")
            .args(["show", "job", "-o", id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    fn task_log(&self, k: u32) -> String {
        std::fs::read_to_string(self.logs.join(format!("task-{k}.log"))).unwrap_or_default()
    }

    fn diagnostics(&self) {
        for k in 0..TASKS {
            eprintln!("--- array task {k}'s log\n{}", self.task_log(k));
        }
        for name in ["ctld.log", "slurmd.log"] {
            let log = std::fs::read_to_string(self.dir.join("log").join(name)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- {name} (last lines)");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Ok(o) = self.client("squeue").output() {
            eprintln!("--- squeue\n{}", text(&o));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnostics();
        }
        let o = clean_command("bash")
            .arg(scripts().join("cluster.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
        match o {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("cluster.sh stop failed: {}", text(&o)),
            Err(e) => eprintln!("cluster.sh stop: {e}"),
        }
    }
}

fn partition_dir(out: &Path, k: u32) -> PathBuf {
    out.join("partitions").join(format!("{k}-of-{TASKS}"))
}

fn snapshot(out: &Path, k: u32) -> Option<serde_json::Value> {
    read_json(&partition_dir(out, k).join("status.json"))
}

/// Waits until partition `k`'s coordinator runs and has recorded a shard; its pid.
fn running_with_a_shard_done(out: &Path, k: u32) -> u32 {
    wait_until(
        120,
        &format!("partition {k}/{TASKS} to record a shard"),
        || {
            let s = snapshot(out, k)?;
            let done = s["shards_done"].as_u64()?;
            let total = s["shards_total"].as_u64()?;
            let pid = s["coordinator_pid"].as_u64()?;
            (s["state"] == "running" && done >= 1 && done < total).then_some(pid as u32)
        },
    )
}

/// The `shards` of each "sampling" line of a task's log (`--log-format json`): one per run.
fn sampling_counts(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "sampling")
        .filter_map(|v| v["fields"]["shards"].as_u64())
        .collect()
}

/// Waits until the array task `id` has been requeued (pending, restarted at least once) and
/// releases it at once (Slurm holds a requeued job about 120 s: Reason=BeginTime).
fn release_requeued(cluster: &Cluster, id: &str) {
    wait_until(60, &format!("{id} to be requeued"), || {
        let j = cluster.job(id);
        let restarts: u32 = j.get("Restarts")?.parse().ok()?;
        (restarts >= 1 && j.get("JobState").map(String::as_str) == Some("PENDING")).then_some(())
    });
    // slurmd refuses to launch a job whose credential is from the second its previous run was
    // killed in ("Job credential revoked": the task then fails), which is why Slurm holds it;
    // two seconds are enough.
    std::thread::sleep(Duration::from_secs(2));
    cluster.run(
        "scontrol",
        &["update", &format!("JobId={id}"), "StartTime=now"],
    );
}

/// The scripts parse, and the two array scripts share one body (the CPU form is the one the
/// Slurm test runs): needs no Slurm.
#[test]
fn scripts_parse_and_the_array_scripts_agree() {
    for name in [
        "cluster.sh",
        "fidshard-array.sbatch",
        "fidshard-cpu-array.sbatch",
        "fidshard-srun.sbatch",
    ] {
        let o = Command::new("bash")
            .arg("-n")
            .arg(scripts().join(name))
            .output()
            .unwrap();
        assert!(o.status.success(), "bash -n {name}: {}", text(&o));
    }
    let body = |name: &str| {
        let t = std::fs::read_to_string(scripts().join(name)).unwrap();
        let at = t
            .find("\nset -u\n")
            .unwrap_or_else(|| panic!("{name}: no `set -u`"));
        t[at..].replace(name, "SCRIPT")
    };
    assert_eq!(
        body("fidshard-array.sbatch"),
        body("fidshard-cpu-array.sbatch"),
        "fidshard-array.sbatch and fidshard-cpu-array.sbatch differ below their #SBATCH lines"
    );
    assert!(scripts().join("slurm.conf.template").is_file());
    // Partitioning from the Slurm environment is opt-in: the scripts ask for it.
    for name in [
        "fidshard-array.sbatch",
        "fidshard-cpu-array.sbatch",
        "fidshard-srun.sbatch",
    ] {
        let t = std::fs::read_to_string(scripts().join(name)).unwrap();
        assert!(
            t.contains(r#""$fidshard" run "$config" --partition slurm "#),
            "{name} does not pass --partition slurm"
        );
        // The site's settings as commented placeholders.
        for key in ["account", "partition", "mem"] {
            assert!(
                t.contains(&format!("##SBATCH --{key}=")),
                "{name} has no `##SBATCH --{key}=` placeholder"
            );
        }
    }
    // The torchrun habit is warned against in the GPU scripts.
    for name in ["fidshard-array.sbatch", "fidshard-srun.sbatch"] {
        let t = std::fs::read_to_string(scripts().join(name)).unwrap();
        assert!(
            t.contains("`--ntasks-per-node=8` without one GPU per task"),
            "{name} does not warn against --ntasks-per-node=8"
        );
    }
}

/// Inside a Slurm array task (the variables set by hand here: needs no Slurm), a plain `run`
/// is one whole job of a sweep; `--partition slurm` or `partitions: slurm` in the job file
/// take the partition from the array.
#[test]
fn partitioning_from_the_slurm_environment_is_opt_in() {
    let tmp = tempfile::tempdir().unwrap();
    let array = [
        ("SLURM_ARRAY_TASK_ID", "1"),
        ("SLURM_ARRAY_TASK_MIN", "0"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
        ("SLURM_JOB_ID", "77"),
    ];
    let sweep = tmp.path().join("sweep");
    std::fs::create_dir(&sweep).unwrap();
    let cfg = job_with(&sweep, JOBS[0], "num_samples: 8\nsteps: 2\nshard_size: 4\n");
    let (code, err) = finish(run_with(&cfg, &array, &[]));
    assert_eq!(code, Some(0), "{err}");
    // A whole job that asked for no partitioning says nothing about partitions.
    assert!(
        !err.contains("partition=") && !err.contains("partition_from"),
        "{err}"
    );
    let out = sweep.join("out");
    assert!(out.join("samples.npz").is_file() && !out.join("partitions").exists());

    // Opted in by the job file: this task is partition 1 of 2.
    let split = tmp.path().join("split");
    std::fs::create_dir(&split).unwrap();
    let cfg = job_with(
        &split,
        JOBS[0],
        "num_samples: 8\nsteps: 2\nshard_size: 4\npartitions: slurm\n",
    );
    let (code, err) = finish(run_with(&cfg, &array, &[]));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("partition=1/2"), "{err}");
    let out = split.join("out");
    assert!(out.join("partitions/1-of-2").is_dir(), "{err}");
    assert!(!out.join("samples.npz").exists());
    // Opted in on the command line (the file's key removed): task 0 is partition 0 of 2 and,
    // the last to finish, assembles the npz.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("partitions: slurm\n", "");
    std::fs::write(&cfg, text).unwrap();
    let first = [
        ("SLURM_ARRAY_TASK_ID", "0"),
        ("SLURM_ARRAY_TASK_COUNT", "2"),
    ];
    let (code, err) = finish(run_with(&cfg, &first, &["--partition", "slurm"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("partition=0/2"), "{err}");
    assert!(out.join("samples.npz").is_file(), "{err}");
    // The same file without the opt-in, in the same task: the whole job, already complete.
    let (code, err) = finish(run_with(&cfg, &first, &[]));
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("partition="), "{err}");
}

#[test]
fn array_job_survives_preemption_and_a_killed_coordinator() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let fidshard_bin = PathBuf::from(env!("CARGO_BIN_EXE_fidshard"));

    // The reference: one coordinator, outside Slurm, no failpoint; meanwhile Slurm installs.
    let ref_dir = tmp.path().join("ref");
    std::fs::create_dir_all(&ref_dir).unwrap();
    let ref_cfg = job_with(&ref_dir, JOBS[1], JOB);
    let reference = clean_command(&fidshard_bin)
        .arg("run")
        .arg(&ref_cfg)
        .env("FIDSHARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The daemons run as root (SlurmUser=root), and installing them needs root too.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let installed = if unsafe { libc::geteuid() } != 0 {
        Err("not root".to_string())
    } else {
        match clean_command("bash")
            .arg(scripts().join("cluster.sh"))
            .arg("install")
            .output()
        {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(text(&o)),
            Err(e) => Err(e.to_string()),
        }
    };
    if let Err(why) = installed {
        let _ = reference.wait_with_output();
        if in_ci() {
            panic!("CI: cannot install or run Slurm (scripts/slurm/cluster.sh install): {why}");
        }
        eprintln!(
            "SKIPPED cli::slurm: cannot install or run a Slurm cluster here ({}); run the test as \
             root on Debian/Ubuntu (scripts/slurm/cluster.sh installs slurm-wlm and munge)",
            why.trim()
        );
        return;
    }
    eprintln!(
        "slurm installed after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let cluster = Cluster {
        dir: tmp.path().join("cluster"),
        logs: logs.clone(),
    };
    let o = clean_command("bash")
        .arg(scripts().join("cluster.sh"))
        .arg("start")
        .arg(&cluster.dir)
        .arg("4")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "scripts/slurm/cluster.sh start {} failed (in CI this must work): {}",
        cluster.dir.display(),
        text(&o)
    );
    eprintln!(
        "slurm cluster up after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let job_dir = tmp.path().join("job");
    std::fs::create_dir_all(&job_dir).unwrap();
    let cfg = job_with(&job_dir, JOBS[1], JOB);
    let out = job_dir.join("out");
    let submitted = cluster
        .client("sbatch")
        .current_dir(&job_dir)
        .args(["--parsable", &format!("--array=0-{}", TASKS - 1)])
        .arg(format!("--output={}/task-%a.log", logs.display()))
        .arg(scripts().join("fidshard-cpu-array.sbatch"))
        .arg(&cfg)
        .env("FIDSHARD", &fidshard_bin)
        .env("FIDSHARD_GRACE", "10")
        .env("FIDSHARD_LOG", "info")
        .env("FAILPOINTS", SLOW)
        .output()
        .unwrap();
    assert!(submitted.status.success(), "sbatch: {}", text(&submitted));
    let array = String::from_utf8_lossy(&submitted.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let task = |k: u32| format!("{array}_{k}");
    eprintln!("submitted array job {array}");

    // Task 0: preempted, as Slurm does before the time limit (SIGUSR1 to the batch script).
    running_with_a_shard_done(&out, 0);
    cluster.run("scancel", &["--signal=USR1", "--batch", &task(0)]);

    // Task 1: its coordinator killed hard (what a crash or the OOM killer does).
    let pid = running_with_a_shard_done(&out, 1);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("fidshard") && cmdline.contains(" run "),
        "pid {pid} of partition 1's status.json is not a `fidshard run`: {cmdline:?}"
    );
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();

    // Both exit and requeue themselves: task 0 after exit 75, task 1 after its coordinator died.
    release_requeued(&cluster, &task(0));
    let log0 = cluster.task_log(0);
    assert!(
        log0.contains("SIGUSR1: forwarding") && log0.contains("interrupted (exit 75); requeueing"),
        "task 0 did not exit 75 and requeue after SIGUSR1:\n{log0}"
    );
    let worker_log = std::fs::read_to_string(partition_dir(&out, 0).join("logs/worker-0.log"))
        .unwrap_or_default();
    assert!(
        worker_log.contains("drained") && !log0.contains("killed by signal 10"),
        "task 0's worker did not drain on SIGUSR1 (finish and write the batch in flight):\n{worker_log}\n{log0}"
    );
    let s0 = snapshot(&out, 0).unwrap();
    assert!(
        s0["state"] == "interrupted" && s0["shards_done"].as_u64() < s0["shards_total"].as_u64(),
        "partition 0 after SIGUSR1: {s0:#}"
    );
    release_requeued(&cluster, &task(1));
    let log1 = cluster.task_log(1);
    assert!(
        log1.contains("killed by signal 9") && log1.contains("requeueing"),
        "task 1 was not requeued after its coordinator was killed:\n{log1}"
    );
    eprintln!(
        "tasks 0 and 1 requeued and released after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // All three finish; the last one assembles samples.npz.
    wait_until(180, "the array job to finish", || {
        let q = cluster.run("squeue", &["-h", "-j", &array]);
        q.trim().is_empty().then_some(())
    });
    for k in 0..TASKS {
        let j = cluster.job(&task(k));
        assert_eq!(
            (
                j.get("JobState").map(String::as_str),
                j.get("ExitCode").map(String::as_str)
            ),
            (Some("COMPLETED"), Some("0:0")),
            "array task {k} did not complete:\n{}",
            cluster.task_log(k)
        );
        assert!(
            cluster.task_log(k).contains("partition complete (exit 0)"),
            "task {k}'s log:\n{}",
            cluster.task_log(k)
        );
    }
    // The rerun of each requeued task sampled only what its first run had not recorded.
    for k in [0, 1] {
        let todo = sampling_counts(&cluster.task_log(k));
        assert!(
            todo.len() == 2 && todo[1] < todo[0],
            "task {k}: shards to sample per run {todo:?} (the rerun must resume):\n{}",
            cluster.task_log(k)
        );
    }
    eprintln!(
        "array job complete after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let reference = reference.wait_with_output().unwrap();
    assert_eq!(
        reference.status.code(),
        Some(0),
        "reference run: {}",
        text(&reference)
    );
    let want = std::fs::read(ref_dir.join("out/samples.npz")).unwrap();
    let got = std::fs::read(out.join("samples.npz")).expect("the array job wrote no samples.npz");
    assert!(
        got == want,
        "samples.npz of the 3 Slurm tasks differs from the one-coordinator run's ({} vs {} bytes)",
        got.len(),
        want.len()
    );

    // `status` of the whole job, from its YAML: complete, every count consistent, one complete
    // row per partition with its own share of the samples.
    let status = status_json(&cfg);
    let s = &status;
    assert_eq!(s["state"], "complete", "fidshard status --json: {s:#}");
    assert_eq!(
        (&s["samples_done"], &s["samples_total"]),
        (&48.into(), &48.into()),
        "{s:#}"
    );
    assert_eq!(
        (&s["shards_done"], &s["shards_total"]),
        (&12.into(), &12.into()),
        "{s:#}"
    );
    assert_eq!(
        (&s["shards_pending"], &s["shards_failed"]),
        (&0.into(), &0.into()),
        "{s:#}"
    );
    let rows = s["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no partition rows: {s:#}"));
    assert_eq!(rows.len(), TASKS as usize, "partition rows: {s:#}");
    for (k, r) in rows.iter().enumerate() {
        assert_eq!(r["partition"], format!("{k}/{TASKS}"), "{r:#}");
        assert_eq!(r["state"], "complete", "partition row: {r:#}");
        assert_eq!(
            (&r["samples_done"], &r["samples_total"]),
            (&16.into(), &16.into()),
            "{r:#}"
        );
    }
    eprintln!(
        "cli::slurm: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
