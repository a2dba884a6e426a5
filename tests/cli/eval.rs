//! `fidshard eval` and `evaluate:` through the real binaries, against the ADM evaluator's numbers
//! computed in Python (tests/fixtures/eval/make_fixtures.py: torch-fidelity's Inception on the
//! random weights of tests/fixtures/inception, the evaluator's numpy code) for the digits
//! samples and a reference batch of real digits. Resuming, a damaged features file and a killed
//! coordinator change nothing; a run with `evaluate:` scores its own npz the same way.
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Random Inception weights (torch-fidelity's layout) drawn as the fixtures drew them.
fn random_weights(dir: &Path) -> PathBuf {
    let out = dir.join("inception.safetensors");
    let o = Command::new(worker_bin())
        .args(["random-inception", "--spec"])
        .arg(fixture("inception/weights.json"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn eval(out: &Path, weights: &Path, cache: &Path, npz: &Path) -> std::process::Output {
    eval_with(out, weights, cache, npz, &[])
}

/// `fidshard eval NPZ` against the reference of real digits on 2 CPU workers, with `extra`
/// arguments.
fn eval_with(
    out: &Path,
    weights: &Path,
    cache: &Path,
    npz: &Path,
    extra: &[&str],
) -> std::process::Output {
    let reference = fixture("eval/reference.npz");
    let mut args = vec![
        "eval",
        npz.to_str().unwrap(),
        "--reference",
        reference.to_str().unwrap(),
        "--inception",
        weights.to_str().unwrap(),
        "--devices",
        "cpu:2",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    fidshard_env(&args, &[("FIDSHARD_CACHE", cache.to_str().unwrap())])
}

/// A 16-sample job of the digits SiT on 2 CPU workers (shards of 8, batches of 2) with
/// `evaluate:` of `metrics` against the reference batch of real digits.
fn sit_job(dir: &Path, out: &str, weights: &Path, metrics: &str) -> PathBuf {
    let cfg = dir.join(format!("{out}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "model:\n  family: sit\n  config: {}\n  checkpoint: {}\nvae: {}\nnum_classes: 10\n\
             num_samples: 16\nlabels: balanced\ncfg_scale: 4\nsampler: ode\nsteps: \"6\"\n\
             devices: {{cpu: 2}}\nshard_size: 8\nbatch_size: 2\nout_dir: {out}\n\
             evaluate:\n  reference: {}\n  inception: {}\n  metrics: {metrics}\n",
            fixture("demo-digits-sit/sit/config.json").display(),
            fixture("demo-digits-sit/sit/model.safetensors").display(),
            fixture("demo-digits/vae").display(),
            fixture("eval/reference.npz").display(),
            weights.display(),
        ),
    )
    .unwrap();
    cfg
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn metrics(out: &Path) -> serde_json::Value {
    read_json(&out.join("metrics.json")).expect("metrics.json")
}

/// FID and sFID to 5e-5 relative, IS to 1e-6, precision and recall within one point of the
/// float16 reference (the features are the same bits; a distance on a float16 rounding boundary
/// may still fall the other way on another CPU). The FID tolerance is wider than the metric
/// unit tests' 1e-6 (core/src/metrics/tests.rs) because 64 samples give a covariance of rank 63
/// in 2048 dimensions: scipy's `sqrtm` of such a singular product, which the reference uses, is
/// itself accurate to about 1e-5 relative there (measured 5.7e-6 on FID); at 50,000 samples
/// the covariances are full rank.
fn assert_matches_adm(m: &serde_json::Value) {
    let want = read_json(&fixture("eval/expected.json")).unwrap();
    let rel = |k: &str, key: &str, tol: f64| {
        let (g, w) = (m[k].as_f64().unwrap(), want[key].as_f64().unwrap());
        eprintln!(
            "{k}: {g} vs ADM's {w} ({:.1e} relative)",
            ((g - w) / w).abs()
        );
        assert!(((g - w) / w).abs() <= tol, "{k}: {g} vs ADM's {w}");
    };
    rel("fid", "fid", 5e-5);
    rel("sfid", "sfid", 5e-5);
    rel("inception_score", "is", 1e-6);
    for (k, n) in [("precision", 64.0), ("recall", 200.0)] {
        let (g, w) = (m[k].as_f64().unwrap(), want[k].as_f64().unwrap());
        assert!((g - w).abs() <= 1.0 / n + 1e-12, "{k}: {g} vs ADM's {w}");
    }
    assert_eq!(m["num_samples"], 64);
}

#[test]
fn eval_gives_the_adm_evaluators_numbers_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (weights, cache) = (random_weights(tmp.path()), tmp.path().join("cache"));
    let samples = fixture("eval/samples.npz");
    let out = tmp.path().join("eval");
    let o = eval(&out, &weights, &cache, &samples);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = metrics(&out);
    assert_matches_adm(&first);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("FID "));

    // Again: nothing is computed, the same file.
    let o = eval(&out, &weights, &cache, &samples);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("computing Inception features"),
        "{}",
        stderr(&o)
    );
    assert_eq!(metrics(&out), first);

    // A damaged features file is computed again, alone; the numbers stay.
    let files: Vec<PathBuf> = std::fs::read_dir(out.join("features"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&files[0], bytes).unwrap();
    std::fs::remove_file(out.join("metrics.json")).unwrap();
    let o = eval(&out, &weights, &cache, &samples);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("ranges=1"), "{}", stderr(&o));
    assert_eq!(metrics(&out), first);

    // A coordinator killed while the samples' features are computed (the reference's are in
    // the cache): the next run finishes the same.
    let out2 = tmp.path().join("eval2");
    let cache2 = cache.clone();
    let mut child = fidshard_cmd(&[
        "eval",
        samples.to_str().unwrap(),
        "--reference",
        fixture("eval/reference.npz").to_str().unwrap(),
        "--inception",
        weights.to_str().unwrap(),
        "--devices",
        "cpu:2",
        "--out",
        out2.to_str().unwrap(),
    ])
    .env("FIDSHARD_CACHE", &cache2)
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while std::fs::read_dir(out2.join("features")).map_or(0, |d| d.count()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no features file after 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out2.join("metrics.json").exists());
    let o = eval(&out2, &weights, &cache2, &samples);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let again = metrics(&out2);
    for k in ["fid", "sfid", "inception_score", "precision", "recall"] {
        assert_eq!(again[k], first[k], "{k}");
    }

    // A run with `evaluate:` scores its own npz as `eval` does, from the features its workers
    // computed while they sampled (no pass over the npz); `status` shows the numbers.
    let cfg = sit_job(
        tmp.path(),
        "out",
        &weights,
        "[fid, sfid, is, precision, recall]",
    );
    let o = fidshard_env(
        &["run", cfg.to_str().unwrap()],
        &[("FIDSHARD_CACHE", cache.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let run_out = tmp.path().join("out");
    let scored = metrics(&run_out);
    assert!(
        stderr(&o).lines().last().unwrap().contains("FID "),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("computing Inception features"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        file_names(&run_out.join("features")),
        ["0000000000-8.features", "0000000008-8.features"]
    );
    let o = eval(
        &tmp.path().join("eval3"),
        &weights,
        &cache,
        &run_out.join("samples.npz"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let direct = metrics(&tmp.path().join("eval3"));
    for k in [
        "fid",
        "sfid",
        "inception_score",
        "precision",
        "recall",
        "num_samples",
    ] {
        assert_eq!(scored[k], direct[k], "{k}");
    }
    let o = fidshard(&["status", run_out.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("metrics  FID "),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// A worker killed in the middle of a shard: the shard is assigned again, its PNGs reused
/// (their features decoded from them) and the rest sampled; the metrics are those of `eval` of
/// the npz. The same job run as two partitions is scored by the partition that assembles it,
/// with the same numbers. (The Inception Score alone: it needs no reference features, which
/// the test above computes.)
#[test]
fn evaluate_survives_a_killed_worker_and_scores_partitioned_jobs() {
    use nix::sys::signal::{kill, Signal};
    let tmp = tempfile::tempdir().unwrap();
    let (weights, cache) = (random_weights(tmp.path()), tmp.path().join("cache"));
    let cache_env = ("FIDSHARD_CACHE", cache.to_str().unwrap());
    let cfg = sit_job(tmp.path(), "killed", &weights, "[is]");
    let out = tmp.path().join("killed");
    let child = run_with(
        &cfg,
        &[cache_env, ("FAILPOINTS", "worker-slow=return(700)")],
        &[],
    );
    // Once a shard has PNGs but is not finished, kill the worker sampling it.
    let pid = wait_until(300, "a worker halfway through a shard", || {
        let snap = read_json(&out.join("status.json")).unwrap_or_default();
        let workers = snap["workers"].as_array().cloned().unwrap_or_default();
        workers.iter().find_map(|w| {
            let (a, b) = (w["shard"]["start"].as_u64()?, w["shard"]["end"].as_u64()?);
            let written = (a..b)
                .filter(|i| out.join(format!("samples/{i:06}.png")).is_file())
                .count() as u64;
            let halfway = w["state"] == "busy" && (2..b - a).contains(&written);
            halfway.then(|| w["pid"].as_u64()).flatten()
        })
    });
    kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let (code, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    let logs = worker_logs(&out);
    assert!(logs.contains("reusing PNGs"), "{logs}");
    let scored = metrics(&out);

    let direct = tmp.path().join("direct");
    let o = eval_with(
        &direct,
        &weights,
        &cache,
        &out.join("samples.npz"),
        &["--metrics", "is"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        scored["inception_score"],
        metrics(&direct)["inception_score"]
    );

    let cfg = sit_job(tmp.path(), "parts", &weights, "[is]");
    for (k, last) in [("0/2", false), ("1/2", true)] {
        let o = fidshard_env(
            &["run", cfg.to_str().unwrap(), "--partition", k],
            &[cache_env],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let line = stderr(&o).lines().last().unwrap_or_default().to_string();
        assert_eq!(line.contains("IS "), last, "{}", stderr(&o));
    }
    let parts = tmp.path().join("parts");
    assert_eq!(npz(&parts), npz(&out));
    assert_eq!(
        metrics(&parts)["inception_score"],
        scored["inception_score"]
    );
}

#[test]
fn eval_refuses_what_is_not_an_npz_of_images() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.npz");
    std::fs::write(&bad, b"not a zip").unwrap();
    let o = fidshard(&[
        "eval",
        bad.to_str().unwrap(),
        "--reference",
        fixture("eval/reference.npz").to_str().unwrap(),
        "--inception",
        bad.to_str().unwrap(),
        "--devices",
        "cpu:1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(one_error_line(&o).contains("bad.npz"), "{}", stderr(&o));
    let o = fidshard(&[
        "eval",
        fixture("eval/samples.npz").to_str().unwrap(),
        "--reference",
        fixture("eval/reference.npz").to_str().unwrap(),
        "--inception",
        tmp.path().join("missing.pth").to_str().unwrap(),
        "--devices",
        "cpu:1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        one_error_line(&o).contains("torch-fidelity"),
        "{}",
        stderr(&o)
    );
}
