//! What a researcher expects at the terminal (issue "terminal experience"): `--set` overrides
//! on every command, `config`, the resolved job beside the npz.
use crate::support::*;
use std::process::Command;

#[test]
fn set_overrides_work_on_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 8\nsteps: 2\nshard_size: 4\n",
    );
    let c = cfg.to_str().unwrap();

    // config: the resolved job shows the override.
    let o = fidshard(&[
        "config",
        c,
        "--set",
        "cfg_scale=1.5",
        "--set",
        "retry.attempts=7",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("cfg_scale: 1.5"), "{text}");
    assert!(text.contains("attempts: 7"), "{text}");

    // validate and plan see it (and its checks apply to it).
    let o = fidshard(&["validate", c, "--set", "cfg_scale=abc"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cfg_scale"), "{}", stderr(&o));
    let o = fidshard(&["plan", c, "--set", "num_samples=12"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("12 samples in 3 shards"));
    let o = fidshard(&["validate", "--set", "model.checkpoint=/nonexistent.pt", c]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent.pt"), "{}", stderr(&o));
    let o = fidshard(&["validate", c, "--set", "nokey"]);
    assert_eq!(o.status.code(), Some(2));

    // run with an override: the resolved job is saved beside the npz.
    let o = fidshard(&["run", c, "--set", "seed=3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let saved = std::fs::read_to_string(tmp.path().join("out/job.resolved.yaml")).unwrap();
    assert!(
        saved.contains("seed: 3") && saved.contains("seed=3"),
        "{saved}"
    );
    // status of the YAML with the same override: complete; without it: the seed differs.
    let o = fidshard(&["status", c, "--set", "seed=3", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "complete");

    // sample and bench.
    let png = tmp.path().join("png");
    let o = fidshard(&[
        "sample",
        c,
        "--out",
        png.to_str().unwrap(),
        "--range",
        "0..2",
        "--set",
        "seed=3",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(png.join("000001.png")).unwrap(),
        std::fs::read(tmp.path().join("out/samples/000001.png")).unwrap(),
        "sample with the same --set draws the same image as run"
    );
    let o = fidshard(&["bench", c, "--images", "2", "--set", "batch_size=2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("batch 2"));
}

fn mtimes(dir: &std::path::Path, n: u64) -> Vec<std::time::SystemTime> {
    (0..n)
        .map(|i| {
            std::fs::metadata(dir.join(format!("{i:06}.png")))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect()
}

/// Image i never depends on num_samples: growing samples only the new indices (the old last,
/// short shard is completed, not redone), shrinking keeps the PNGs and assembles the first N.
#[test]
fn growing_and_shrinking_a_job_keeps_its_work() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 64\nsteps: 2\nshard_size: 10\ndevices: {cpu: 1}\n",
    );
    let c = cfg.to_str().unwrap();
    let out = tmp.path().join("out");
    let o = fidshard(&["run", c]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (shape, first) = read_npz_u8(&out.join("samples.npz"));
    assert_eq!(shape[0], 64);
    let before = mtimes(&out.join("samples"), 64);
    std::thread::sleep(std::time::Duration::from_millis(20));

    let o = fidshard(&["run", c, "--set", "num_samples=96"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        mtimes(&out.join("samples"), 64),
        before,
        "the first 64 were sampled again"
    );
    let (shape, grown) = read_npz_u8(&out.join("samples.npz"));
    assert_eq!(shape[0], 96);
    assert_eq!(
        &grown[..first.len()],
        &first[..],
        "the first 64 images changed"
    );
    let log = std::fs::read_to_string(out.join("logs/worker-0.log")).unwrap();
    assert!(
        log.contains("reused=4"),
        "the short shard [60..64) was not completed by reuse: {log}"
    );

    // The same job sampled at 96 from the start gives the same npz.
    let fresh = tempfile::tempdir().unwrap();
    let fresh_cfg = job_with(
        fresh.path(),
        JOBS[0],
        "num_samples: 96\nsteps: 2\nshard_size: 10\ndevices: {cpu: 1}\n",
    );
    let o = fidshard(&["run", fresh_cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(read_npz_u8(&fresh.path().join("out/samples.npz")).1, grown);

    let o = fidshard(&["run", c, "--set", "num_samples=40"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (shape, shrunk) = read_npz_u8(&out.join("samples.npz"));
    assert_eq!(shape[0], 40);
    assert_eq!(&shrunk[..], &grown[..shrunk.len()]);
    assert!(
        out.join("samples/000095.png").is_file(),
        "PNGs past the new end are kept"
    );
    // Anything that changes pixels is still refused.
    let o = fidshard(&["run", c, "--set", "num_samples=40", "--set", "seed=9"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// In a terminal (a pseudo-terminal made by `script`) the bar counts images per batch, so it
/// moves within a shard, shows the rate only once measured, and draws one line per worker.
#[test]
fn the_bar_moves_within_a_shard_in_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: `script` (util-linux) is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 20\nsteps: 2\nshard_size: 10\nbatch_size: 2\ndevices: {cpu: 1}\n",
    );
    let cmd = format!("{} run {}", env!("CARGO_BIN_EXE_fidshard"), cfg.display());
    let o = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env("FAILPOINTS", "worker-slow=return(150)")
        .env("FIDSHARD_LOG", "info")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let screen = String::from_utf8_lossy(&o.stdout).replace('\r', "\n");
    // 2, 4, 6, 8 of the first shard of 10: per batch, not per shard.
    for n in [2, 4, 6] {
        assert!(
            screen.contains(&format!("{n}/20 images")),
            "no {n}/20 in: {screen}"
        );
    }
    assert!(screen.contains("(starting workers)") || screen.contains("(measuring the rate)"));
    assert!(screen.contains("images/s, ETA"), "{screen}");
    assert!(
        screen.contains("worker 0 cpu busy shard #0 [0..10) 4/10 batch 2"),
        "{screen}"
    );
}

/// Without a terminal: heartbeat lines every progress_interval; in JSON with numbers.
#[test]
fn heartbeat_lines_without_a_terminal_carry_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 24\nsteps: 2\nshard_size: 8\nbatch_size: 2\ndevices: {cpu: 1}\nprogress_interval: 0.2\n",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args(["--log-format", "json", "run", cfg.to_str().unwrap()])
        .env("FAILPOINTS", "worker-slow=return(100)")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let beats: Vec<serde_json::Value> = stderr(&o)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .filter(|v| v["fields"]["message"] == "progress")
        .collect();
    assert!(beats.len() >= 2, "{}", stderr(&o));
    let last = &beats[beats.len() - 1]["fields"];
    assert!(last["done"].is_u64() && last["total"] == 24, "{last}");
    assert!(
        last["images_per_sec"].is_number() && last["eta_seconds"].is_number(),
        "{last}"
    );
    assert!(
        last["workers"].as_str().unwrap().contains("worker 0 cpu"),
        "{last}"
    );
}

/// `status` of a complete job answers what a user asks: where the npz is, how big, how fast;
/// of an interrupted one, what to run next; it warns when the YAML changed; several targets
/// make a table; `--watch` redraws.
#[test]
fn status_answers_questions() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 8\nsteps: 2\nshard_size: 4\ndevices: {cpu: 1}\n",
    );
    let c = cfg.to_str().unwrap();
    let o = fidshard(&["run", c]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = fidshard(&["status", c, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "complete");
    assert!(
        v["npz"]["path"].as_str().unwrap().ends_with("samples.npz"),
        "{v}"
    );
    assert!(v["npz"]["bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["images_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["wall_seconds"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["devices"][0]["samples"], 8, "{v}");
    assert!(
        v["devices"][0]["images_per_sec"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    let o = fidshard(&["status", c, "--set", "seed=5"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("warning  the YAML no longer matches") && text.contains("seed 0 -> 5"),
        "{text}"
    );

    // Interrupted: what to run next.
    let other = tempfile::tempdir().unwrap();
    let cfg2 = job_with(
        other.path(),
        JOBS[0],
        "num_samples: 400\nsteps: 2\nshard_size: 4\ndevices: {cpu: 1}\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args(["run", cfg2.to_str().unwrap()])
        .env("FAILPOINTS", "worker-slow=return(100)")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_snapshot(&other.path().join("out"), 60, |v| {
        v["shards_done"].as_u64() >= Some(1)
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(75));
    let o = fidshard(&["status", cfg2.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "interrupted");
    assert!(
        v["next"].as_str().unwrap().starts_with("fidshard run "),
        "{v}"
    );

    // Several targets: one row each.
    let o = fidshard(&["status", c, cfg2.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        table.contains("complete") && table.contains("interrupted"),
        "{table}"
    );

    // --watch: a complete job ends the watch at once; an interrupted one is watched until
    // stopped. Off a terminal (a pipe) no screen-clearing escapes are written.
    let o = fidshard(&["status", c, "--watch", "0.2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(screen.contains("state    complete"), "{screen}");
    assert!(!screen.contains('\x1b'), "escapes in a pipe: {screen:?}");
    let mut w = Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args(["status", cfg2.to_str().unwrap(), "--watch", "0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        w.try_wait().unwrap().is_none(),
        "the watch of an interrupted job ended"
    );
    w.kill().unwrap();
    let out = w.wait_with_output().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.matches("state    interrupted").count() >= 2,
        "{screen}"
    );
    assert!(!screen.contains('\x1b'), "escapes in a pipe: {screen:?}");
    // --json: one object per line, no escapes; a bad target: exit 2 at once.
    let o = fidshard(&["status", c, "--watch", "0.2", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<&[u8]> = o
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{}", String::from_utf8_lossy(&o.stdout));
    let v: serde_json::Value = serde_json::from_slice(lines[0]).unwrap();
    assert_eq!(v["state"], "complete");
    let started = std::time::Instant::now();
    let missing = other.path().join("no-such.yaml");
    let o = fidshard(&["status", missing.to_str().unwrap(), "--watch", "0.2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such.yaml"), "{}", stderr(&o));
    assert!(o.stdout.is_empty() && started.elapsed().as_secs() < 10);
    // In a terminal (a pseudo-terminal made by `script`) it redraws in place.
    if Command::new("script").arg("--version").output().is_ok() {
        let cmd = format!("{} status {c} --watch 0.2", env!("CARGO_BIN_EXE_fidshard"));
        let o = Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let screen = String::from_utf8_lossy(&o.stdout);
        assert!(screen.contains("\x1b[2J"), "{screen:?}");
    }
}

/// `config` prints a job file: run from another folder it is the same job (same out dir,
/// same fingerprint), as is `OUT/job.resolved.yaml`; `status`'s "next" keeps the overrides.
#[test]
fn config_output_is_a_job_file_and_next_keeps_the_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 8\nsteps: 2\nshard_size: 4\n",
    );
    let c = cfg.to_str().unwrap();
    let o = fidshard(&["config", c, "--set", "seed=3", "--set", "retry.attempts=7"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let x = elsewhere.join("x.yaml");
    std::fs::write(&x, &o.stdout).unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("\nseed: 3\n") && text.contains("attempts: 7"),
        "{text}"
    );
    let o = fidshard(&["plan", x.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("8 samples in 2 shards"));
    // Run from another working directory: the out dir is the one of the original YAML.
    let o = Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args(["run", "x.yaml"])
        .current_dir(&elsewhere)
        .env("FIDSHARD_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = tmp.path().join("out");
    assert!(out.join("samples.npz").is_file());
    assert!(!elsewhere.join("out").exists() && !elsewhere.join("runs").exists());
    // The original YAML with the same override is the same job (its fingerprint matches:
    // complete, nothing sampled again); without the override it is another job (exit 2).
    let npz = std::fs::read(out.join("samples.npz")).unwrap();
    let resolved = out.join("job.resolved.yaml");
    for args in [
        vec!["run", c, "--set", "seed=3"],
        vec!["run", resolved.to_str().unwrap()],
    ] {
        let o = fidshard(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(std::fs::read(out.join("samples.npz")).unwrap(), npz);
    let o = fidshard(&["run", c]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("seed"), "{}", stderr(&o));

    // "next" repeats this command's overrides, quoted for the shell.
    std::fs::remove_file(out.join("samples.npz")).unwrap();
    let o = fidshard(&[
        "status",
        c,
        "--set",
        "seed=3",
        "--set",
        "devices={cpu: 1}",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "interrupted", "{v}");
    let next = v["next"].as_str().unwrap();
    assert!(
        next.starts_with(&format!(
            "fidshard run {c} --set seed=3 --set 'devices={{cpu: 1}}'"
        )),
        "{next}"
    );
}

/// Text from status.json and paths is printed with its control characters escaped: an ESC or
/// a carriage return planted there cannot clear the screen or forge a line of the report.
#[test]
fn status_escapes_control_characters() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 4\nsteps: 2\nshard_size: 4\n",
    );
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = tmp.path().join("out");
    let snap = out.join("status.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&snap).unwrap()).unwrap();
    v["last_errors"] = serde_json::json!(["boom\u{1b}[2J\rstate    complete\nforged"]);
    std::fs::write(&snap, v.to_string()).unwrap();
    // And a target path with an ESC in its name.
    let link = tmp.path().join("odd\x1b]0;title\x07name");
    std::os::unix::fs::symlink(&out, &link).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .arg("status")
        .arg(&link)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !text.contains(['\x1b', '\r', '\x07']),
        "control characters printed: {text:?}"
    );
    assert!(
        text.contains("boom\\e[2J\\rstate    complete\\nforged"),
        "{text}"
    );
    assert!(text.contains("odd\\e]0;title\\x07name"), "{text}");
    // Several targets: the table escapes too.
    let o = Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .arg("status")
        .arg(&link)
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains('\x1b'));
}

/// `plan`, `status` and `config` need no weights: a checkpoint or VAE not downloaded yet is no
/// error for them (only for the commands that sample or check the models).
#[test]
fn plan_status_and_config_need_no_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(tmp.path(), JOBS[0], "num_samples: 8\nsteps: 2\n");
    let c = cfg.to_str().unwrap();
    let missing = ["--set", "model.checkpoint=/not/yet/DiT-XL-2-256x256.pt"];
    for cmd in ["plan", "status", "config"] {
        let o = fidshard(&[cmd, c, missing[0], missing[1]]);
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", stderr(&o));
    }
    let o = fidshard(&[
        "plan",
        c,
        "--set",
        "vae=/not/yet/sd-vae",
        missing[0],
        missing[1],
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("not local yet"));
    let o = fidshard(&["validate", c, missing[0], missing[1]]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
