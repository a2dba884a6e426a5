//! End-to-end tests of `fidshard run`, `status`, resume and the job lock, with the real binary,
//! CPU workers and the small golden model.
use crate::support::*;

#[test]
fn two_workers_reproduce_a_golden_job() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = run_yaml(
        tmp.path(),
        JOBS[0],
        "devices: {cpu: 2}\nshard_size: 5\nbatch_size: 4\n",
    );
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = tmp.path().join("out");
    let (shape, got) = read_npz_u8(&out.join("samples.npz"));
    let (want_shape, want) =
        read_npz_u8(&fixture(&format!("golden/jobs/{}/expected.npz", JOBS[0])));
    assert_eq!(shape, want_shape);
    assert_images_close(JOBS[0], &got, &want);
    // arr_1 holds the labels, as guided-diffusion writes them.
    let mut zip =
        zip::ZipArchive::new(std::fs::File::open(out.join("samples.npz")).unwrap()).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name("arr_1.npy").unwrap(), &mut bytes).unwrap();
    let labels = npyz::NpyFile::new(&bytes[..])
        .unwrap()
        .into_vec::<i64>()
        .unwrap();
    assert_eq!(labels, vec![4, 5, 8, 6, 0, 1, 0, 5, 3, 0, 7, 1]);
    // Both workers took part.
    let logs: Vec<_> = std::fs::read_dir(out.join("logs")).unwrap().collect();
    assert_eq!(logs.len(), 2);
    let st = status_json(&cfg);
    assert_eq!(st["state"], "complete");
    assert_eq!(st["samples_done"], 12);
    assert_eq!(st["shards_done"], 3);
    assert_eq!(st["shards_total"], 3);
}

#[test]
fn worker_count_and_batch_size_do_not_change_a_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let cfg_a = run_yaml(
        &a,
        JOBS[2],
        "devices: {cpu: 1}\nbatch_size: 4\nshard_size: 8\n",
    );
    let cfg_b = run_yaml(
        &b,
        JOBS[2],
        "devices: {cpu: 3}\nbatch_size: 3\nshard_size: 2\n",
    );
    for cfg in [&cfg_a, &cfg_b] {
        let o = fidshard(&["run", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    assert!(
        npz(&a.join("out")) == npz(&b.join("out")),
        "the npz files differ"
    );
}

#[test]
fn sigkill_of_the_coordinator_then_resume_redoes_nothing_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = long_job(tmp.path());
    let out = tmp.path().join("out");
    assert_eq!(status_json(&cfg)["state"], "not_started");

    let mut child = spawn_run(&cfg, &[]);
    let during = wait_for_snapshot(&out, 120, |v| v["shards_done"].as_u64() >= Some(3));
    assert_eq!(during["state"], "running");
    let live = status_json(&cfg);
    assert_eq!(live["state"], "running");
    assert_eq!(live["samples_total"], 96);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();

    // The workers die with their coordinator (parent-death signal / end of their stdin).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after_kill = status_json(&out);
    assert_eq!(after_kill["state"], "interrupted", "{after_kill}");
    let recorded: Vec<(u64, u64)> =
        serde_json::from_value(after_kill["done_ranges"].clone()).unwrap();
    assert!(!recorded.is_empty());
    let before = sampled_shards(&out);

    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let after = sampled_shards(&out);
    let mut second_run = after.clone();
    for id in &before {
        let pos = second_run.iter().position(|x| x == id).unwrap();
        second_run.remove(pos);
    }
    for id in second_run {
        let (start, end) = (id * 4, id * 4 + 4);
        assert!(
            !recorded.iter().any(|&(a, b)| start >= a && end <= b),
            "shard {id} was recorded before the kill but sampled again"
        );
    }
    assert_eq!(status_json(&cfg)["state"], "complete");

    // The same npz as an uninterrupted run.
    assert!(
        npz(&out) == reference_npz(&cfg),
        "resumed and clean npz differ"
    );
}

#[test]
fn a_second_coordinator_exits_4_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = long_job(tmp.path());
    let out = tmp.path().join("out");
    let mut child = spawn_run(&cfg, &[]);
    wait_for_snapshot(&out, 120, |v| v["state"] == "running");
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains(&format!("pid {}", child.id())), "{err}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_changed_seed_is_refused_and_restart_starts_over() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = run_yaml(tmp.path(), JOBS[0], "devices: {cpu: 1}\nshard_size: 6\n");
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = tmp.path().join("out");
    let first = npz(&out);

    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("seed: 0", "seed: 1");
    std::fs::write(&cfg, text).unwrap();
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("seed") && err.contains("--restart"), "{err}");
    assert!(
        npz(&out) == first,
        "a refused run must not touch the results"
    );

    let o = fidshard(&["run", cfg.to_str().unwrap(), "--restart"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(npz(&out) != first, "seed 1 gives other images");
    assert_eq!(status_json(&out)["state"], "complete");

    // Running a complete job again changes nothing and exits 0.
    let again = npz(&out);
    let o = fidshard(&["run", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        npz(&out) == again,
        "a rerun of a complete job changed the npz"
    );
}

#[test]
fn plan_validate_and_assemble() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = run_yaml(tmp.path(), JOBS[0], "devices: {cpu: 2}\nshard_size: 5\n");
    let c = cfg.to_str().unwrap();
    let o = fidshard(&["plan", c]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        text.contains("12 samples in 3 shards of 5 (last: 2)"),
        "{text}"
    );
    assert!(text.contains("[10..12)") && text.contains("free"), "{text}");
    let o = fidshard(&["validate", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    // assemble before any run: a clear input error.
    assert_eq!(fidshard(&["assemble", c]).status.code(), Some(2));
    assert_eq!(fidshard(&["run", c]).status.code(), Some(0));
    let out = tmp.path().join("out");
    let first = npz(&out);
    std::fs::remove_file(out.join("samples.npz")).unwrap();
    let o = fidshard(&["assemble", c]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(npz(&out) == first, "assemble wrote another npz");
}

/// `batch_size: auto` picks a size (logged by each worker) and changes no byte.
#[test]
fn batch_size_auto_picks_a_size_and_keeps_the_bytes() {
    let fixed = tempfile::tempdir().unwrap();
    let auto = tempfile::tempdir().unwrap();
    let base = "num_samples: 24\nsteps: \"5\"\ndevices: {cpu: 1}\nshard_size: 24\n";
    let a = job_with(fixed.path(), JOBS[0], &format!("{base}batch_size: 3\n"));
    let b = job_with(
        auto.path(),
        JOBS[0],
        &format!("{base}batch_size: auto\nvae_batch_size: auto\n"),
    );
    for cfg in [&a, &b] {
        let o = fidshard(&["run", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let log = std::fs::read_to_string(auto.path().join("out/logs/worker-0.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("batch size auto"))
        .unwrap_or_else(|| panic!("no auto batch line in the worker log: {log}"));
    assert!(line.contains("dit_batch=16"), "{line}");
    assert_eq!(
        std::fs::read(fixed.path().join("out/samples.npz")).unwrap(),
        std::fs::read(auto.path().join("out/samples.npz")).unwrap()
    );
}

/// The log of a plain 100-image run: its first line says nothing about partitions (none were
/// asked for), the assembly of a small npz logs no progress lines, and devices are named as on
/// the command line (`cpu`), not as Rust debug text.
#[test]
fn a_plain_small_run_logs_no_partition_no_assembly_progress_and_plain_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 100\nsteps: 2\nshard_size: 25\nbatch_size: 25\ndevices: {cpu: 2}\n",
    );
    let o = fidshard_env(&["run", cfg.to_str().unwrap()], &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let first = err
        .lines()
        .find(|l| l.contains("fidshard run"))
        .unwrap_or_else(|| panic!("no first line: {err}"));
    assert!(first.contains("samples=100"), "{first}");
    assert!(!first.contains("partition"), "{first}");
    assert!(!err.contains(" of 100 samples"), "{err}");
    let logs = std::fs::read_to_string(tmp.path().join("out/logs/worker-0.log")).unwrap();
    assert!(logs.contains("device=cpu"), "{logs}");
    assert!(
        !logs.contains("Cpu") && !err.contains("Cpu"),
        "{logs}\n{err}"
    );
}

/// `--set out_dir=runs/x` is where the user typed it, not beside the job file; a weights path
/// typed there is taken from there too.
#[test]
fn set_paths_are_relative_to_the_current_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.yaml");
    std::fs::create_dir_all(tmp.path().join("w")).unwrap();
    std::fs::copy(
        fixture("demo-digits/dit/model.pt"),
        tmp.path().join("w/model.pt"),
    )
    .unwrap();
    let o = fidshard_cmd(&[
        "config",
        demo.to_str().unwrap(),
        "--set",
        "out_dir=runs/x",
        "--set",
        "model.checkpoint=w/model.pt",
    ])
    .current_dir(tmp.path())
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let here = std::fs::canonicalize(tmp.path()).unwrap();
    let has = |key: &str, rel: &str| {
        text.lines().any(|l| {
            l.trim_start().starts_with(key)
                && (l.contains(&here.join(rel).display().to_string())
                    || l.contains(&tmp.path().join(rel).display().to_string()))
        })
    };
    assert!(has("out_dir:", "runs/x"), "{text}");
    assert!(has("checkpoint:", "w/model.pt"), "{text}");
}
