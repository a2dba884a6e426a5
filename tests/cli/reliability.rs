//! The defects a hostile probe found (issue "reliability"), each through the real binary:
//! foreign out dirs, a corrupted npz, NaN results, every documented exit code.
use crate::support::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Every file under `dir` with its bytes (relative path -> content).
fn snapshot_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    tree_files(dir)
        .into_iter()
        .map(|rel| {
            let bytes = std::fs::read(dir.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

/// A small complete job: 8 samples of the golden model, 2 steps.
fn complete_job(dir: &Path) -> PathBuf {
    let cfg = job_with(
        dir,
        JOBS[0],
        "num_samples: 8\nsteps: 2\nshard_size: 4\ndevices: {cpu: 1}\n",
    );
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    cfg
}

// ---- Trust no worker; signals and time limits (issue 15, items 3 and 5) ----

/// Waits for `child` at most `secs` (killing it and failing the test after that): its exit
/// code and stderr.
fn finish_within(mut child: std::process::Child, secs: u64) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let (_, err) = finish(child);
            panic!("still running after {secs} s (a hang): {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    finish(child)
}

/// A worker "binary" in `dir`: the real worker for one-shot tasks (so that the model check
/// passes), `serve_body` (shell) as the long-lived worker of `run`.
fn fake_serve_worker(dir: &Path, serve_body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-worker.sh");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = task ]; then exec '{}' \"$@\"; fi\n{serve_body}\n",
        worker_bin().display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Processes still alive that a fidshard with pid `parent` started (their environment names
/// it in FIDSHARD_PARENT_PID).
fn children_of(parent: u32) -> Vec<u32> {
    let needle = format!("FIDSHARD_PARENT_PID={parent}");
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_worker_binary_that_does_not_answer_is_exit_2_for_validate_sample_and_run() {
    for fake in ["/bin/true", "/bin/cat"] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = job_with(
            tmp.path(),
            JOBS[0],
            "num_samples: 4\nsteps: 2\ndevices: {cpu: 1}\n",
        );
        let c = cfg.to_str().unwrap();
        let pngs = tmp.path().join("pngs");
        let env = [("FIDSHARD_WORKER", fake)];
        for args in [
            vec!["validate", c],
            vec![
                "sample",
                c,
                "--out",
                pngs.to_str().unwrap(),
                "--range",
                "0..2",
            ],
            vec!["run", c],
        ] {
            let o = fidshard_env(&args, &env);
            assert_eq!(o.status.code(), Some(2), "{fake} {args:?}: {}", stderr(&o));
            let line = one_error_line(&o);
            assert!(
                line.contains(fake) && line.contains("did not answer"),
                "{fake} {args:?}: {line}"
            );
            assert!(
                !String::from_utf8_lossy(&o.stdout).contains(": OK:"),
                "{fake}"
            );
        }
        assert!(!tmp.path().join("out/samples.npz").exists(), "{fake}");
    }
}

#[test]
fn a_serve_worker_that_echoes_its_input_fails_the_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = fake_serve_worker(tmp.path(), "exec cat");
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 4\nsteps: 2\ndevices: {cpu: 1}\n",
    );
    let child = run_with(&cfg, &[("FIDSHARD_WORKER", fake.to_str().unwrap())], &[]);
    let (code, err) = finish_within(child, 60);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("did not answer in the worker protocol") && err.contains("\\\"init\\\""),
        "{err}"
    );
    assert!(!tmp.path().join("out/samples.npz").exists());
}

#[test]
fn a_worker_line_over_the_size_bound_kills_the_worker_and_fails_its_shard() {
    let tmp = tempfile::tempdir().unwrap();
    // Says ready, takes a shard, then sends 200 kB without a newline.
    let fake = fake_serve_worker(
        tmp.path(),
        "read init\n\
         echo '{\"type\":\"ready\",\"pid\":1,\"device\":\"cpu\",\"load_seconds\":0.0}'\n\
         read assign\n\
         head -c 200000 /dev/zero | tr '\\0' x\n\
         sleep 30",
    );
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 8\nsteps: 2\nshard_size: 4\ndevices: {cpu: 1}\n\
         retry: {attempts: 2, backoff: 0.1, backoff_max: 0.2}\n",
    );
    let child = run_with(&cfg, &[("FIDSHARD_WORKER", fake.to_str().unwrap())], &[]);
    let (code, err) = finish_within(child, 60);
    assert_eq!(code, Some(3), "{err}");
    // 64 KiB + 32 bytes per sample of a 4-sample shard.
    assert!(err.contains("longer than 65664 bytes"), "{err}");
    assert!(
        err.contains("[0..4) lost: worker 0 (cpu) sent an output line"),
        "{err}"
    );
    assert!(!tmp.path().join("out/samples.npz").exists());
}

#[test]
fn labels_a_worker_reports_are_checked_against_the_jobs_own() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 8\nsteps: 2\nshard_size: 4\ndevices: {cpu: 1}\nlabels: random\n\
         retry: {attempts: 2, backoff: 0.1, backoff_max: 0.2}\n",
    );
    let child = run_with(&cfg, &[("FAILPOINTS", "worker-wrong-labels=return")], &[]);
    let (code, err) = finish_within(child, 120);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("worker 0 (cpu) reported label")
            && err.contains("for sample 0, but the job's label of that sample is"),
        "{err}"
    );
    assert!(err.contains("shard failed for good"), "{err}");
    let out = tmp.path().join("out");
    let status = status_json(&out);
    assert_eq!(status["samples_done"], 0, "{status}");
    assert!(!out.join("samples.npz").exists());
    // An honest worker then finishes the job (its PNGs are reused).
    let (code, err) = finish_within(run_with(&cfg, &[], &[]), 120);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn a_stop_signal_during_the_model_check_exits_75_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = complete_job(tmp.path());
    let out = tmp.path().join("out");
    let before = std::fs::read(out.join("samples.npz")).unwrap();
    for sig in [Signal::SIGTERM, Signal::SIGHUP] {
        let child = run_with(
            &cfg,
            &[("FAILPOINTS", "worker-slow-check=return(60000)")],
            &[],
        );
        let pid = child.id();
        // The check is running once its worker task exists.
        let deadline = Instant::now() + Duration::from_secs(20);
        while children_of(pid).is_empty() {
            assert!(Instant::now() < deadline, "no model check started");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        kill(Pid::from_raw(pid as i32), sig).unwrap();
        let (code, err) = finish_within(child, 20);
        assert_eq!(code, Some(75), "{sig}: {err}");
        assert!(
            err.contains(&format!("{} during the model check", sig.as_str())),
            "{sig}: {err}"
        );
        assert!(
            children_of(pid).is_empty(),
            "{sig}: the check's worker is left"
        );
        assert_eq!(std::fs::read(out.join("samples.npz")).unwrap(), before);
    }
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn the_model_check_has_a_time_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 4\nsteps: 2\ndevices: {cpu: 1}\n",
    );
    let c = cfg.to_str().unwrap();
    let started = Instant::now();
    let o = fidshard_env(
        &["run", c],
        &[
            ("FAILPOINTS", "worker-slow-check=return(60000)"),
            ("FIDSHARD_CHECK_TIMEOUT", "1"),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(30));
    let line = one_error_line(&o);
    assert!(
        line.contains("did not finish within 1 s") && line.contains("FIDSHARD_CHECK_TIMEOUT"),
        "{line}"
    );
    let o = fidshard_env(&["validate", c], &[("FIDSHARD_CHECK_TIMEOUT", "0")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(one_error_line(&o).contains("FIDSHARD_CHECK_TIMEOUT=0"));
}

#[test]
fn sighup_stops_a_run_like_sigterm_unless_it_is_ignored_by_nohup() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 64\nsteps: 2\nshard_size: 4\ndevices: {cpu: 1}\n",
    );
    let status = tmp.path().join("out/status.json");
    let child = run_with(
        &cfg,
        &[("FAILPOINTS", "worker-slow=return(200)")],
        &["--grace", "2"],
    );
    wait_for(&status, 60);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).unwrap();
    let (code, err) = finish_within(child, 30);
    assert_eq!(code, Some(75), "{err}");
    assert!(err.contains("SIGHUP: stopping"), "{err}");
    // Started with SIGHUP ignored (`nohup`, `trap '' HUP`): a hangup changes nothing.
    std::fs::remove_file(&status).unwrap();
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' HUP; exec '{}' run '{}' --grace 2",
            env!("CARGO_BIN_EXE_fidshard"),
            cfg.display()
        ))
        .env("FIDSHARD_LOG", "info")
        .env("FAILPOINTS", "worker-slow=return(500)")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&status, 60);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let (code, err) = finish_within(child, 30);
    assert_eq!(code, Some(75), "{err}");
    assert!(
        !err.contains("SIGHUP") && err.contains("SIGTERM: stopping"),
        "{err}"
    );
}

#[test]
fn a_signal_during_assembly_exits_75_and_leaves_no_temporary_npz() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = complete_job(tmp.path());
    let out = tmp.path().join("out");
    for (cmd, sig) in [("assemble", Signal::SIGTERM), ("run", Signal::SIGHUP)] {
        std::fs::remove_file(out.join("samples.npz")).unwrap();
        let child = hup_default(&mut Command::new(env!("CARGO_BIN_EXE_fidshard")))
            .args([cmd, cfg.to_str().unwrap()])
            .env("FIDSHARD_LOG", "info")
            .env("FAILPOINTS", "assemble-slow=return(1000)")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let npz_temp = |out: &Path| {
            temp_files(out)
                .iter()
                .any(|n| n.starts_with(".samples.npz.tmp."))
        };
        while !npz_temp(&out) {
            assert!(Instant::now() < deadline, "{cmd}: no assembly started");
            std::thread::sleep(Duration::from_millis(20));
        }
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
        let (code, err) = finish_within(child, 20);
        assert_eq!(code, Some(75), "{cmd}: {err}");
        assert!(
            err.contains(&format!("{} during assembly", sig.as_str())),
            "{err}"
        );
        assert!(temp_files(&out).is_empty(), "{cmd}: {:?}", temp_files(&out));
        assert!(!out.join("samples.npz").exists());
        let o = fidshard(&[cmd, cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", stderr(&o));
    }
}

#[test]
fn a_fifo_under_a_png_name_is_never_read_but_sampled_again() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = complete_job(tmp.path());
    let samples = tmp.path().join("out/samples");
    let png = samples.join("000003.png");
    std::fs::remove_file(&png).unwrap();
    nix::unistd::mkfifo(&png, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (code, err) = finish_within(run_with(&cfg, &[], &[]), 120);
    assert_eq!(code, Some(0), "{err}");
    assert!(std::fs::metadata(&png).unwrap().is_file());
    // `assemble` with a FIFO in place of a PNG: an error, no hang, no temporary npz left.
    let npz = tmp.path().join("out/samples.npz");
    std::fs::remove_file(&npz).unwrap();
    std::fs::remove_file(&png).unwrap();
    nix::unistd::mkfifo(&png, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args(["assemble", cfg.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (code, err) = finish_within(child, 60);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("000003.png") && err.contains("FIFO"), "{err}");
    let temps: Vec<_> = std::fs::read_dir(tmp.path().join("out"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
    // The state lost too: rebuilding the records from the PNGs does not read the FIFO either.
    std::fs::remove_dir_all(tmp.path().join("out/state.sled")).unwrap();
    let (code, err) = finish_within(run_with(&cfg, &[], &[]), 120);
    assert_eq!(code, Some(0), "{err}");
    assert!(std::fs::metadata(&png).unwrap().is_file());
}

#[test]
fn a_fifo_or_a_link_to_one_as_the_npz_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = complete_job(tmp.path());
    let c = cfg.to_str().unwrap();
    let npz = tmp.path().join("out/samples.npz");
    let elsewhere = tmp.path().join("fifo");
    nix::unistd::mkfifo(&elsewhere, nix::sys::stat::Mode::S_IRWXU).unwrap();
    for link in [false, true] {
        let _ = std::fs::remove_file(&npz);
        if link {
            std::os::unix::fs::symlink(&elsewhere, &npz).unwrap();
        } else {
            nix::unistd::mkfifo(&npz, nix::sys::stat::Mode::S_IRWXU).unwrap();
        }
        for cmd in ["run", "assemble"] {
            let child = Command::new(env!("CARGO_BIN_EXE_fidshard"))
                .args([cmd, c])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let (code, err) = finish_within(child, 60);
            assert_eq!(code, Some(2), "{cmd} (link: {link}): {err}");
            assert!(
                err.contains("samples.npz") && err.contains("a FIFO, not a regular file"),
                "{cmd}: {err}"
            );
        }
        assert!(std::fs::symlink_metadata(&npz).is_ok());
    }
}

#[test]
fn a_folder_fidshard_did_not_make_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(out.join("samples")).unwrap();
    std::fs::write(out.join("samples/notes.txt"), b"my notes").unwrap();
    std::fs::write(out.join("samples.npz"), b"someone else's npz").unwrap();
    std::fs::write(out.join(".x.tmp.123"), b"someone's temp file").unwrap();
    let before = snapshot_tree(&out);
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 8\nsteps: 2\ndevices: {cpu: 1}\n",
    );
    for args in [
        vec!["run"],
        vec!["run", "--restart"],
        vec!["assemble"],
        vec!["repair"],
    ] {
        let mut a = args.clone();
        a.push(cfg.to_str().unwrap());
        let o = fidshard(&a);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let line = one_error_line(&o);
        assert!(
            line.contains("not made by fidshard") && line.contains("out"),
            "{line}"
        );
        assert_eq!(snapshot_tree(&out), before, "{args:?} changed the folder");
    }
}

#[test]
fn out_dir_root_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 8\nsteps: 2\nout_dir: /\n",
    );
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    one_error_line(&o);
    assert!(!Path::new("/.fidshard-out-dir").exists());
    assert!(!Path::new("/samples").exists());
}

#[test]
fn restart_removes_only_fidshard_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = complete_job(tmp.path());
    let out = tmp.path().join("out");
    std::fs::write(out.join("samples/notes.txt"), b"mine").unwrap();
    std::fs::write(out.join("README.txt"), b"mine too").unwrap();
    let o = fidshard(&["run", cfg.to_str().unwrap(), "--restart"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(out.join("samples/notes.txt")).unwrap(),
        b"mine"
    );
    assert_eq!(std::fs::read(out.join("README.txt")).unwrap(), b"mine too");
}

#[test]
fn a_corrupted_npz_is_not_complete_and_run_assembles_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = complete_job(tmp.path());
    let npz = tmp.path().join("out/samples.npz");
    let good = std::fs::read(&npz).unwrap();
    let o = fidshard(&["status", cfg.to_str().unwrap(), "--verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("verified"));

    // Same size, bytes flipped inside the images.
    let mut bad = good.clone();
    for k in 0..16 {
        bad[good.len() / 3 + k * 97] ^= 0xff;
    }
    std::fs::write(&npz, &bad).unwrap();
    let o = fidshard(&["status", cfg.to_str().unwrap(), "--verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("damaged"));

    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("already complete"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&npz).unwrap(),
        good,
        "re-assembled byte-identical"
    );
}

/// The golden weights with one tensor set to NaN, as safetensors.
fn nan_checkpoint(dir: &Path) -> PathBuf {
    let path = dir.join("nan.safetensors");
    rewrite_golden_safetensors(&path, |name, _, data| {
        if name == "final_layer.linear.weight" {
            for c in data.chunks_exact_mut(4) {
                c.copy_from_slice(&f32::NAN.to_le_bytes());
            }
        }
    });
    path
}

#[test]
fn nan_results_fail_their_shards_instead_of_writing_black_images() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = nan_checkpoint(tmp.path());
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 4\nsteps: 2\ndevices: {cpu: 1}\nretry: {attempts: 1}\n",
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &fixture("golden/dit/model.pt").display().to_string(),
        ckpt.to_str().unwrap(),
    );
    std::fs::write(&cfg, text).unwrap();
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = tmp.path().join("out");
    assert!(!out.join("samples.npz").exists());
    let s = status_json(&out);
    assert_eq!(s["samples_done"], 0, "{s}");
    let errors = s["last_errors"].to_string();
    assert!(errors.contains("NaN or infinite"), "{errors}");
    // The step where they first appear, and the causes that fit a non-finite DiT output.
    assert!(
        errors.contains(
            "first at sampling step 1 of 2 (respaced index 1, model timestep 999) in the DiT output"
        ) && errors.contains("NaN or infinite weights in the checkpoint"),
        "{errors}"
    );
    let pngs = std::fs::read_dir(out.join("samples"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(pngs, 0, "no image of a NaN batch is written");
}

#[test]
fn json_logs_are_one_object_per_line_with_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = complete_job(tmp.path());
    for args in [
        vec!["--log-format", "json", "run", cfg.to_str().unwrap()],
        vec!["--log-format", "json", "validate", "/nonexistent.yaml"],
        vec![
            "--log-format",
            "json",
            "run",
            cfg.to_str().unwrap(),
            "--grace",
            "inf",
        ],
        vec!["--log-format", "json", "frobnicate"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_fidshard"))
            .args(&args)
            .env("FIDSHARD_LOG", "info")
            .output()
            .unwrap();
        let err = stderr(&o);
        assert!(!err.trim().is_empty(), "{args:?}: nothing on stderr");
        for line in err.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line}"));
            if let Some(code) = v["fields"].get("exit_code") {
                assert!(code.is_i64(), "{line}");
                assert_eq!(code.as_i64().map(|c| c as i32), o.status.code(), "{line}");
            }
            if let Some(secs) = v["fields"].get("seconds") {
                assert!(secs.is_number(), "{line}");
            }
        }
    }
}

#[test]
fn text_logs_have_no_colour_codes_off_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = complete_job(tmp.path());
    let o = fidshard_env(&["run", cfg.to_str().unwrap()], &[]);
    assert!(!stderr(&o).contains('\u{1b}'), "{}", stderr(&o));
}

fn wait_for(path: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every documented exit code, each reached through the real binary, and never 101.
#[test]
fn every_documented_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = complete_job(tmp.path());
    let c = cfg.to_str().unwrap();
    // 0: done.
    assert_eq!(fidshard(&["validate", c]).status.code(), Some(0));
    // 2: invalid input.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "model: {checkpoint: x.pt}\n").unwrap();
    assert_eq!(
        fidshard(&["validate", bad.to_str().unwrap()]).status.code(),
        Some(2)
    );
    // 1: a runtime failure (a damaged npz found by status --verify).
    let npz = tmp.path().join("out/samples.npz");
    let mut bytes = std::fs::read(&npz).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&npz, &bytes).unwrap();
    assert_eq!(fidshard(&["status", c, "--verify"]).status.code(), Some(1));
    // 3: shards failed every retry (NaN weights), see the test above; here through a
    // second job for independence.
    let sub = tmp.path().join("nan");
    std::fs::create_dir_all(&sub).unwrap();
    let ckpt = nan_checkpoint(&sub);
    let nan_cfg = job_with(
        &sub,
        JOBS[0],
        "num_samples: 2\nsteps: 1\ndevices: {cpu: 1}\nretry: {attempts: 1}\n",
    );
    let text = std::fs::read_to_string(&nan_cfg).unwrap().replace(
        &fixture("golden/dit/model.pt").display().to_string(),
        ckpt.to_str().unwrap(),
    );
    std::fs::write(&nan_cfg, text).unwrap();
    assert_eq!(
        fidshard(&["run", nan_cfg.to_str().unwrap()]).status.code(),
        Some(3)
    );
    // 4 and 75: a slow run holds the lock; a second run is refused; SIGTERM interrupts it.
    let slow = tmp.path().join("slow");
    std::fs::create_dir_all(&slow).unwrap();
    let slow_cfg = job_with(
        &slow,
        JOBS[0],
        "num_samples: 64\nsteps: 2\nshard_size: 4\ndevices: {cpu: 1}\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args(["run", slow_cfg.to_str().unwrap(), "--grace", "2"])
        .env("FIDSHARD_LOG", "warn")
        .env("FAILPOINTS", "worker-slow=return(200)")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&slow.join("out/status.json"), 60);
    let o = fidshard(&["run", slow_cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("pid {}", child.id())),
        "{}",
        stderr(&o)
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(75));
}

#[test]
fn a_damaged_png_of_a_complete_job_is_sampled_again() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = complete_job(tmp.path());
    let png = tmp.path().join("out/samples/000005.png");
    let good = std::fs::read(&png).unwrap();
    let npz = std::fs::read(tmp.path().join("out/samples.npz")).unwrap();
    std::fs::write(&png, &good[..good.len() / 2]).unwrap();
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&png).unwrap(),
        good,
        "the PNG is sampled again, identical"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("out/samples.npz")).unwrap(),
        npz
    );
    let o = fidshard(&["assemble", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// A checkpoint replaced (atomically, same path) while the job runs: the respawned worker
/// finds that the file is not what the job's fingerprint recorded, and the run stops with
/// exit 2 naming the file; no shard of the new file is ever recorded.
#[test]
fn a_checkpoint_replaced_mid_run_stops_the_run_instead_of_mixing_models() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("model.pt");
    std::fs::copy(fixture("golden/dit/model.pt"), &ckpt).unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 128\nsteps: 2\nshard_size: 4\ndevices: {cpu: 2}\nretry: {attempts: 3, backoff: 0.1, backoff_max: 0.2}\n",
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &fixture("golden/dit/model.pt").display().to_string(),
        ckpt.to_str().unwrap(),
    );
    std::fs::write(&cfg, text).unwrap();
    let out = tmp.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args(["run", cfg.to_str().unwrap(), "--grace", "2"])
        .env("FIDSHARD_LOG", "warn")
        .env("FAILPOINTS", "worker-slow=return(150)")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let snap = wait_for_snapshot(&out, 120, |v| {
        v["shards_done"].as_u64() >= Some(1)
            && v["workers"]
                .as_array()
                .is_some_and(|ws| ws.iter().any(|w| w["state"] == "busy" && w["pid"].is_u64()))
    });
    // Another file (the train.py checkpoint of the same model: other bytes) takes its place.
    let other = tmp.path().join("other.pt");
    std::fs::copy(fixture("golden/dit/train-checkpoint.pt"), &other).unwrap();
    std::fs::rename(&other, &ckpt).unwrap();
    let pid = snap["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["state"] == "busy" && w["pid"].is_u64())
        .unwrap()["pid"]
        .as_u64()
        .unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("fidshard: error:"))
        .unwrap_or("");
    assert!(
        line.contains("model.pt") && line.contains("changed during the run"),
        "{err}"
    );
    assert!(!out.join("samples.npz").exists());
    // Every recorded shard is from the original weights: byte-identical to a clean run.
    let recorded = status_json(&out)["done_ranges"].clone();
    std::fs::copy(fixture("golden/dit/model.pt"), &ckpt).unwrap();
    let clean = tmp.path().join("clean");
    std::fs::create_dir_all(&clean).unwrap();
    let clean_cfg = job_with(
        &clean,
        JOBS[0],
        "num_samples: 128\nsteps: 2\nshard_size: 4\ndevices: {cpu: 2}\n",
    );
    let o = fidshard(&["run", clean_cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for range in recorded.as_array().unwrap() {
        let (a, b) = (range[0].as_u64().unwrap(), range[1].as_u64().unwrap());
        for i in a..b {
            let name = format!("{i:06}.png");
            assert_eq!(
                std::fs::read(out.join("samples").join(&name)).unwrap(),
                std::fs::read(clean.join("out/samples").join(&name)).unwrap(),
                "{name}"
            );
        }
    }
}

// ---- Verification means it (issue 15, items 4 and 8): `status --verify` reads every PNG and
// every byte of the npz, creates nothing; a complete job's rerun trusts its verification
// record until a file's size or mtime changes.

/// Every path under `dir` with its size (a listing that shows any file created or removed).
fn listing(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), m.len());
        }
    }
    out
}

fn verify<P: AsRef<Path>>(targets: &[P]) -> std::process::Output {
    let mut args = vec!["status"];
    args.extend(targets.iter().map(|t| t.as_ref().to_str().unwrap()));
    args.push("--verify");
    fidshard(&args)
}

#[test]
fn verify_checks_every_png_and_the_npz_in_whole_and_partitioned_jobs_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    std::fs::create_dir_all(&whole).unwrap();
    let cfg = complete_job(&whole);
    let out = whole.join("out");
    let o = verify(&[&cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Partitioned: two partitions of the same job in another folder.
    let parted = tmp.path().join("parted");
    std::fs::create_dir_all(&parted).unwrap();
    let pcfg = job_with(
        &parted,
        JOBS[0],
        "num_samples: 8\nsteps: 2\nshard_size: 4\ndevices: {cpu: 1}\n",
    );
    for k in ["0/2", "1/2"] {
        let o = fidshard(&["run", pcfg.to_str().unwrap(), "--partition", k]);
        assert_eq!(o.status.code(), Some(0), "{k}: {}", stderr(&o));
    }
    let o = verify(&[&pcfg, &cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // A valid PNG of the right size, but not the recorded one: sample 3 copied over sample 5.
    for dir in [&out, &parted.join("out")] {
        std::fs::copy(
            dir.join("samples/000003.png"),
            dir.join("samples/000005.png"),
        )
        .unwrap();
    }
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let before = listing(tmp.path());
    for targets in [vec![&cfg], vec![&pcfg], vec![&pcfg, &cfg]] {
        let o = verify(&targets);
        assert_eq!(o.status.code(), Some(1), "{targets:?}: {}", stderr(&o));
        let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        assert!(all.contains("000005.png") && all.contains("CRC32"), "{all}");
    }
    for missing in [
        tmp.path().join("nope"),
        tmp.path().join("nope.yaml"),
        empty.clone(),
    ] {
        let o = verify(&[&missing]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    }
    assert_eq!(
        listing(tmp.path()),
        before,
        "status --verify created or removed files"
    );
    assert!(!tmp.path().join("nope").exists());

    // An npz cut short is not complete, and --verify says it is damaged.
    let bytes = std::fs::read(out.join("samples.npz")).unwrap();
    std::fs::write(out.join("samples.npz"), &bytes[..bytes.len() / 2]).unwrap();
    let o = verify(&[&cfg]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("samples.npz"), "{}", stderr(&o));
}

/// Sets `path`'s modification time to `secs.nanos`, like `touch -d`.
fn set_mtime(path: &Path, mtime: std::time::SystemTime) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(mtime).unwrap();
}

#[test]
fn a_rerun_of_a_complete_job_checks_its_record_not_every_byte_until_a_file_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = complete_job(tmp.path());
    let c = cfg.to_str().unwrap();
    let out = tmp.path().join("out");
    let npz = out.join("samples.npz");
    let good = std::fs::read(&npz).unwrap();
    let first = status_json(&cfg);
    let wall = first["wall_seconds"]
        .as_f64()
        .expect("wall time of the run");
    assert!(first["changed_unix"].as_f64().is_some(), "{first}");
    assert!(String::from_utf8_lossy(&fidshard(&["status", c]).stdout).contains("changed"));

    // Damage in the middle of the images, then the size and mtime as they were.
    let mtime = std::fs::metadata(&npz).unwrap().modified().unwrap();
    let mut bad = good.clone();
    for k in 0..16 {
        bad[good.len() / 2 + k * 31] ^= 0x5a;
    }
    std::fs::write(&npz, &bad).unwrap();
    set_mtime(&npz, mtime);
    let t = Instant::now();
    let (code, err) = finish(run_with(&cfg, &[], &[]));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("already complete"), "{err}");
    assert!(!err.contains("in full"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(
        std::fs::read(&npz).unwrap(),
        bad,
        "the rerun read the record only"
    );
    // A rerun that changed nothing keeps the wall time of the run that made the npz.
    assert_eq!(status_json(&cfg)["wall_seconds"].as_f64(), Some(wall));
    let o = verify(&[&cfg]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("samples.npz"));

    // A new mtime: the rerun verifies in full, finds the damage and assembles again.
    set_mtime(&npz, mtime + Duration::from_secs(60));
    let (code, err) = finish(run_with(&cfg, &[], &[]));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("changed (size or mtime)"), "{err}");
    assert_eq!(std::fs::read(&npz).unwrap(), good, "re-assembled");
    let o = verify(&[&cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
