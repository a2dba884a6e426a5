//! End-to-end tests of state recovery with the real binary: a lost or garbage `state.sled`
//! rebuilt from the PNGs (by `run` and by `fidshard repair`), damaged PNGs found by their CRC
//! and resampled, model files that fail once before any worker starts, and VAE / checkpoint
//! names resolved in a Hugging Face cache.
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// `fidshard run CFG`, which must succeed. Logs at info level: the workers inherit it, and
/// their "sampling shard" lines are what `sampled_shards` counts.
fn run_ok(cfg: &Path) -> Output {
    let o = fidshard_env(&["run", cfg.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    o
}

/// 12 samples, 3 shards of 5 (the last one 2), two CPU workers: seconds.
fn small_job(dir: &Path) -> PathBuf {
    run_yaml(
        dir,
        JOBS[0],
        "devices: {cpu: 2}\nshard_size: 5\nbatch_size: 4\n",
    )
}

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Deterministic pseudo-random bytes over every file under `dir` (at least 64 per file).
fn overwrite_with_garbage(dir: &Path) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let len = std::fs::metadata(&p).unwrap().len().max(64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            std::fs::write(&p, bytes).unwrap();
            files += 1;
        }
    }
    assert!(files > 0, "no files under {}", dir.display());
}

/// Shards sampled since `before` (a `sampled_shards` result).
fn newly_sampled(out: &Path, before: &[u64]) -> Vec<u64> {
    let mut now = sampled_shards(out);
    for id in before {
        let pos = now.iter().position(|x| x == id).expect("logs only grow");
        now.remove(pos);
    }
    now
}

#[test]
fn a_deleted_state_is_rebuilt_from_the_pngs_without_sampling() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_job(tmp.path());
    let out = tmp.path().join("out");
    run_ok(&cfg);
    let first = npz(&out);
    let before = sampled_shards(&out);
    assert_eq!(before, vec![0, 1, 2]);

    std::fs::remove_dir_all(out.join("state.sled")).unwrap();
    let o = run_ok(&cfg);
    let err = stderr(&o);
    assert!(
        err.contains("state.sled is missing") && err.contains("rebuilding"),
        "{err}"
    );
    assert!(err.contains("3 of 3 shards recovered"), "{err}");
    assert_eq!(newly_sampled(&out, &before), Vec::<u64>::new());
    assert!(npz(&out) == first, "the rebuilt state gave another npz");
    let st = status_json(&cfg);
    assert_eq!(st["state"], "complete");
    assert_eq!(st["shards_done"], 3);

    // The PNGs of seed 0 are never adopted by a job with seed 1: the fingerprint kept beside
    // the DB says which job made them.
    std::fs::remove_dir_all(out.join("state.sled")).unwrap();
    let o = fidshard(&["assemble", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("fidshard repair"), "{}", stderr(&o));
    replace_in(&cfg, "seed: 0", "seed: 1");
    for cmd in ["run", "repair"] {
        let o = fidshard(&[cmd, cfg.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("seed 0 -> 1") && err.contains("--restart"),
            "{err}"
        );
    }
    assert!(npz(&out) == first);
    assert_eq!(std::fs::read_dir(out.join("samples")).unwrap().count(), 12);
}

#[test]
fn a_garbage_state_db_is_moved_aside_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_job(tmp.path());
    let out = tmp.path().join("out");
    run_ok(&cfg);
    let first = npz(&out);
    let before = sampled_shards(&out);

    overwrite_with_garbage(&out.join("state.sled"));
    let o = run_ok(&cfg);
    let err = stderr(&o);
    assert!(
        err.contains("cannot be read") && err.contains("moved it aside"),
        "{err}"
    );
    let kept: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.sled.broken-"))
        .collect();
    assert_eq!(kept.len(), 1, "the broken DB is kept, not deleted");
    assert_eq!(newly_sampled(&out, &before), Vec::<u64>::new());
    assert!(npz(&out) == first, "the rebuilt state gave another npz");
    assert_eq!(status_json(&cfg)["state"], "complete");
}

#[test]
fn repair_after_a_sigkill_and_a_lost_state_then_run_matches_a_clean_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = long_job(tmp.path());
    let c = cfg.to_str().unwrap();
    let out = tmp.path().join("out");

    let mut child = spawn_run(&cfg, &[]);
    wait_for_snapshot(&out, 120, |v| v["shards_done"].as_u64() >= Some(3));
    // repair needs the job lock, like a second coordinator.
    let o = fidshard(&["repair", c]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let killed = status_json(&out);
    let recorded: Vec<(u64, u64)> = serde_json::from_value(killed["done_ranges"].clone()).unwrap();
    let recorded_shards = killed["shards_done"].as_u64().unwrap();
    assert!(recorded_shards >= 3);

    std::fs::remove_dir_all(out.join("state.sled")).unwrap();
    let o = fidshard(&["repair", c]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // `OUT: K of 24 shards recovered from their PNGs (4K samples), 24-K to redo`
    let k: u64 = text
        .split(": ")
        .nth(1)
        .and_then(|t| t.split(" of 24 shards recovered").next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("no report: {text}"));
    assert!(text.contains(&format!("{} to redo", 24 - k)), "{text}");
    // Every shard recorded before the kill is recovered (and perhaps some finished on disk but
    // not yet recorded).
    assert!(k >= recorded_shards && k < 24, "{k} recovered: {text}");
    let st = status_json(&out);
    assert_eq!(st["shards_done"], k);
    assert_eq!(st["state"], "interrupted", "{st}");
    let rebuilt: Vec<(u64, u64)> = serde_json::from_value(st["done_ranges"].clone()).unwrap();
    for (a, b) in recorded {
        assert!(
            rebuilt.iter().any(|&(x, y)| x <= a && b <= y),
            "[{a}..{b}) was recorded before the kill but not recovered: {rebuilt:?}"
        );
    }

    let before = sampled_shards(&out);
    run_ok(&cfg);
    assert_eq!(newly_sampled(&out, &before).len() as u64, 24 - k);
    assert_eq!(status_json(&cfg)["state"], "complete");

    assert!(
        npz(&out) == reference_npz(&cfg),
        "repaired and clean npz differ"
    );
}

#[test]
fn damaged_pngs_are_found_by_their_crc_and_resampled() {
    let tmp = tempfile::tempdir().unwrap();
    // 4 shards of 3.
    let cfg = run_yaml(
        tmp.path(),
        JOBS[0],
        "devices: {cpu: 2}\nshard_size: 3\nbatch_size: 4\n",
    );
    let c = cfg.to_str().unwrap();
    let out = tmp.path().join("out");
    let samples = out.join("samples");
    run_ok(&cfg);
    let first = npz(&out);
    let before = sampled_shards(&out);

    // Truncated (shard 1): `assemble` names it and leaves the existing npz alone.
    let p4 = samples.join("000004.png");
    let bytes = std::fs::read(&p4).unwrap();
    std::fs::write(&p4, &bytes[..bytes.len() / 2]).unwrap();
    let o = fidshard(&["assemble", c]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("000004.png"), "{err}");
    assert!(npz(&out) == first, "a failed assemble touched samples.npz");

    // Corrupted in place, same length (shard 3), and deleted (shard 0).
    let p10 = samples.join("000010.png");
    let mut bytes = std::fs::read(&p10).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xa5;
    }
    std::fs::write(&p10, &bytes).unwrap();
    std::fs::remove_file(samples.join("000001.png")).unwrap();
    std::fs::remove_file(out.join("samples.npz")).unwrap();

    let o = run_ok(&cfg);
    let mut redone = newly_sampled(&out, &before);
    redone.sort_unstable();
    assert_eq!(redone, vec![0, 1, 3], "{}", stderr(&o));
    assert!(npz(&out) == first, "the npz after resampling differs");
    assert_eq!(status_json(&cfg)["state"], "complete");
}

/// Exit 2 within seconds, one `fidshard: error:` line, and no worker (no OUT/logs).
fn assert_fails_once(o: &Output, elapsed: Duration, out: &Path, expect: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("fidshard: error: "), "{err}");
    assert_eq!(err.matches("fidshard: error:").count(), 1, "{err}");
    for e in expect {
        assert!(last.contains(e), "{e} not in: {last}");
    }
    assert!(!out.join("logs").exists(), "a worker was started");
    assert!(
        !out.join("state.sled").exists(),
        "state written for an invalid job"
    );
}

fn timed(f: impl FnOnce() -> Output) -> (Output, Duration) {
    let t = Instant::now();
    let o = f();
    (o, t.elapsed())
}

#[test]
fn bad_model_files_fail_once_before_any_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let empty_cache = d.join("empty-hub");
    std::fs::create_dir_all(&empty_cache).unwrap();

    // A truncated checkpoint.
    let ckpt = d.join("model.pt");
    let bytes = std::fs::read(fixture("golden/dit/model.pt")).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let cfg = small_job(d);
    replace_in(
        &cfg,
        &fixture("golden/dit/model.pt").display().to_string(),
        &ckpt.display().to_string(),
    );
    let (o, t) = timed(|| fidshard(&["run", cfg.to_str().unwrap()]));
    assert_fails_once(&o, t, &d.join("out"), &["model.pt"]);

    // A VAE folder without config.json.
    std::fs::write(&ckpt, &bytes).unwrap();
    let vae = d.join("vae-no-config");
    copy_dir(&fixture("golden/vae"), &vae);
    std::fs::remove_file(vae.join("config.json")).unwrap();
    let golden_vae = fixture("golden/vae").display().to_string();
    replace_in(&cfg, &golden_vae, &vae.display().to_string());
    let (o, t) = timed(|| fidshard(&["run", cfg.to_str().unwrap()]));
    assert_fails_once(&o, t, &d.join("out"), &["`vae`", "has no config.json"]);

    // A hub repo id that is not in the cache.
    replace_in(&cfg, &vae.display().to_string(), "acme/not-downloaded");
    let (o, t) = timed(|| {
        fidshard_env(
            &["run", cfg.to_str().unwrap()],
            &[
                ("HF_HUB_CACHE", empty_cache.to_str().unwrap()),
                ("HF_HUB_OFFLINE", "1"),
            ],
        )
    });
    assert_fails_once(
        &o,
        t,
        &d.join("out"),
        &["`vae`", "hf download acme/not-downloaded"],
    );

    // A finished job whose checkpoint went bad: `--restart` must not delete anything.
    replace_in(&cfg, "acme/not-downloaded", &golden_vae);
    run_ok(&cfg);
    let out = d.join("out");
    let first = npz(&out);
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let o = fidshard(&["run", cfg.to_str().unwrap(), "--restart"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(npz(&out) == first);
    assert_eq!(std::fs::read_dir(out.join("samples")).unwrap().count(), 12);
    assert_eq!(status_json(&out)["shards_done"], 3);
}

/// `models--{org}--{name}/snapshots/{rev}/` + `refs/main`, as huggingface_hub lays it out.
fn cache_repo(hub: &Path, org_name: &str, rev: &str) -> PathBuf {
    let repo = hub.join(format!("models--{}", org_name.replace('/', "--")));
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    snap
}

#[test]
fn hub_repo_ids_resolve_in_the_local_cache_only() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let hub = d.join("hub");
    copy_dir(
        &fixture("golden/vae"),
        &cache_repo(&hub, "acme/tiny-vae", "abc123"),
    );
    // A pipeline repo keeps its VAE in vae/.
    copy_dir(
        &fixture("golden/vae"),
        &cache_repo(&hub, "acme/tiny-pipeline", "def456").join("vae"),
    );
    let dit = cache_repo(&hub, "acme/tiny-dit", "0123abcd");
    std::fs::copy(fixture("golden/dit/model.pt"), dit.join("model.pt")).unwrap();

    let cfg = small_job(d);
    let local_vae = fixture("golden/vae").display().to_string();
    let local_ckpt = fixture("golden/dit/model.pt").display().to_string();
    replace_in(&cfg, &local_vae, "acme/tiny-vae");
    replace_in(&cfg, &local_ckpt, "acme/tiny-dit");
    let c = cfg.to_str().unwrap();
    let with_cache = [("HF_HUB_CACHE", hub.to_str().unwrap())];

    // Not in the cache: one line naming the file, the key, where it looked, and the fix.
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = fidshard_env(
        &["validate", c],
        &[
            ("HF_HUB_CACHE", empty.to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    for part in [
        c,
        "`vae`",
        &empty.join("models--acme--tiny-vae").display().to_string(),
        &d.join("acme/tiny-vae").display().to_string(),
        "hf download acme/tiny-vae",
        "give a local folder",
    ] {
        assert!(err.contains(part), "{part} not in {err}");
    }

    // $HF_HOME/hub when HF_HUB_CACHE is unset.
    let o = fidshard_cmd(&["validate", c])
        .env_remove("HF_HUB_CACHE")
        .env("HF_HOME", d)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // A whole run from the cache: the workers get the resolved paths.
    let o = fidshard_env(&["run", c], &with_cache);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = d.join("out");
    let first = npz(&out);
    let before = sampled_shards(&out);

    // The same files by their local paths, or the VAE of a pipeline repo: the same job (the
    // fingerprint identifies weights by content), so nothing is sampled again.
    replace_in(&cfg, "acme/tiny-vae", "acme/tiny-pipeline");
    let o = fidshard_env(&["run", c], &with_cache);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    replace_in(&cfg, "acme/tiny-pipeline", &local_vae);
    replace_in(&cfg, "acme/tiny-dit", &local_ckpt);
    let o = fidshard_env(&["run", c], &[("HF_HUB_CACHE", empty.to_str().unwrap())]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(newly_sampled(&out, &before), Vec::<u64>::new());
    assert!(npz(&out) == first);
}

/// `repair` keeps the CRCs a healthy state recorded: a valid PNG copied over another is not
/// the recorded one, so it is removed and its shard sampled again, never recorded anew.
#[test]
fn repair_never_trusts_a_png_that_contradicts_its_record() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_job(tmp.path());
    let c = cfg.to_str().unwrap();
    let out = tmp.path().join("out");
    run_ok(&cfg);
    let first = npz(&out);
    let good5 = std::fs::read(out.join("samples/000005.png")).unwrap();
    let before = sampled_shards(&out);
    std::fs::copy(
        out.join("samples/000003.png"),
        out.join("samples/000005.png"),
    )
    .unwrap();

    let o = fidshard(&["repair", c]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        said.contains("2 of 3 shards recovered") && said.contains("1 bad PNG"),
        "{said}"
    );
    assert!(
        !out.join("samples/000005.png").exists(),
        "the contradicting PNG stays"
    );

    run_ok(&cfg);
    assert_eq!(
        newly_sampled(&out, &before),
        vec![1],
        "shard [5..10) is redone"
    );
    assert_eq!(
        std::fs::read(out.join("samples/000005.png")).unwrap(),
        good5
    );
    assert!(npz(&out) == first, "the npz after the rerun differs");
}
