//! Weights from a hub and from URLs (`fidshard fetch`, and `run` before any worker starts),
//! against the mock hub of support/hub_mock.rs on 127.0.0.1: faults on the way (500, 429 with
//! Retry-After, a reset and a short body mid-transfer, a corrupted body, a stall), two fetches
//! at once, offline mode, a gated repo, retries running out, and a whole run from the mock that
//! matches the same job on local files byte for byte. Downloads that end, and where the token
//! goes: fetch/limits.rs.
mod limits;

use crate::support::hub_mock::{self, sha256_hex, Fault, MockHub, COMMIT};
use crate::support::{fidshard_cmd, fixture, stderr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A temporary home for the caches, and the mock hub.
struct Env {
    tmp: tempfile::TempDir,
    hub: MockHub,
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap()
}

impl Env {
    fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
            hub: MockHub::start(),
        }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn hub_cache(&self) -> PathBuf {
        self.dir().join("hub")
    }

    /// The golden VAE as `acme/tiny-vae` and the golden DiT as `acme/tiny-dit`.
    fn with_golden_repos(&self) {
        self.hub.add_repo(
            "acme/tiny-vae",
            &[
                ("config.json", read("golden/vae/config.json")),
                (
                    "diffusion_pytorch_model.safetensors",
                    read("golden/vae/diffusion_pytorch_model.safetensors"),
                ),
                ("README.md", b"# a tiny VAE\n".to_vec()),
            ],
            None,
        );
        self.hub.add_repo(
            "acme/tiny-dit",
            &[
                ("model.pt", read("golden/dit/model.pt")),
                ("README.md", b"# DiT\n".to_vec()),
            ],
            None,
        );
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = hub_mock::fidshard_on(&self.hub, self.dir(), args);
        cmd.env("FIDSHARD_LOG", "info")
            .env("FIDSHARD_FETCH_ATTEMPTS", "4")
            .env("FIDSHARD_FETCH_BACKOFF", "0.05")
            .env("FIDSHARD_FETCH_BACKOFF_MAX", "0.2")
            .env("FIDSHARD_FETCH_STALL", "1")
            .env("FIDSHARD_FETCH_CONNECT_TIMEOUT", "2");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn fidshard(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("run fidshard")
    }

    /// A job of 8 samples, 2 steps, one CPU worker, with these weights.
    fn job(&self, name: &str, checkpoint: &str, vae: &str, extra: &str) -> PathBuf {
        let y = format!(
            "model:\n  config: {}\n  checkpoint: {checkpoint}\n{extra}vae: {vae}\nnum_classes: 10\n\
             num_samples: 8\nseed: 3\nsteps: 2\ncfg_scale: 1.5\ndevices: {{cpu: 1}}\nshard_size: 4\n\
             out_dir: {name}-out\n",
            fixture("golden/dit/config.json").display()
        );
        let path = self.dir().join(format!("{name}.yaml"));
        std::fs::write(&path, y).unwrap();
        path
    }
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        stderr(o)
    );
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(files_ending(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out
}

/// The `Range` headers of the GETs of `path`, in order.
fn ranges(hub: &MockHub, path: &str) -> Vec<Option<String>> {
    hub.log()
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .map(|r| r.range.clone())
        .collect()
}

#[test]
fn fetch_survives_faults_into_the_shared_cache_then_needs_no_network() {
    let env = Env::new();
    env.with_golden_repos();
    let vae_w = read("golden/vae/diffusion_pytorch_model.safetensors");
    let dit = read("golden/dit/model.pt");
    let (vae_cdn, dit_cdn) = (
        format!("/cdn/{}", sha256_hex(&vae_w)),
        format!("/cdn/{}", sha256_hex(&dit)),
    );
    let h = &env.hub;
    h.fault(
        "GET",
        "/api/models/acme/tiny-vae/revision/main",
        &[Fault::Status(500, None)],
    );
    h.fault(
        "HEAD",
        &format!("/acme/tiny-vae/resolve/{COMMIT}/config.json"),
        &[Fault::Status(429, Some(1))],
    );
    h.fault(
        "GET",
        &vae_cdn,
        &[
            Fault::ResetAfter(300_000),
            Fault::CloseAfter(200_000),
            Fault::ShortBody(100_000),
        ],
    );
    h.fault(
        "GET",
        &dit_cdn,
        &[
            Fault::Corrupt,
            Fault::StallAfter(200_000, Duration::from_secs(3)),
        ],
    );
    let cfg = env.job("hub", "acme/tiny-dit", "acme/tiny-vae", "");
    let c = cfg.to_str().unwrap();
    let t = Instant::now();
    let o = env.fidshard(&["fetch", c], &[]);
    ok(&o);
    let err = stderr(&o);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    for part in [
        "HTTP 500",
        "HTTP 429",
        "retrying in 1.0 s",
        "reset",
        "closed before the end of the body",
        "ended after 600000 of 789124 bytes",
        "expected",
        "stalled",
    ] {
        assert!(err.contains(part), "{part} not in {err}");
    }
    // Resumed where each broken transfer stopped; the corrupt one started over.
    assert_eq!(
        ranges(h, &vae_cdn),
        vec![
            None,
            Some("bytes=300000-".into()),
            Some("bytes=500000-".into()),
            Some("bytes=600000-".into())
        ]
    );
    assert_eq!(
        ranges(h, &dit_cdn),
        vec![None, None, Some("bytes=200000-".into())]
    );

    // huggingface_hub's layout: refs, snapshot symlinks into blobs named by their ETag.
    let repo = env.hub_cache().join("models--acme--tiny-vae");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    let snap = repo.join("snapshots").join(COMMIT);
    let link = std::fs::read_link(snap.join("config.json")).unwrap();
    assert_eq!(
        link,
        Path::new("../../blobs").join(hub_mock::git_blob_id(&read("golden/vae/config.json")))
    );
    assert_eq!(
        std::fs::read(snap.join("config.json")).unwrap(),
        read("golden/vae/config.json")
    );
    assert!(std::fs::read(snap.join("diffusion_pytorch_model.safetensors")).unwrap() == vae_w);
    assert!(!snap.join("README.md").exists(), "only what the job needs");
    let dit_snap = env
        .hub_cache()
        .join("models--acme--tiny-dit/snapshots")
        .join(COMMIT);
    assert!(std::fs::read(dit_snap.join("model.pt")).unwrap() == dit);
    assert_eq!(
        files_ending(&env.hub_cache(), ".incomplete"),
        Vec::<PathBuf>::new()
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("vae: acme/tiny-vae -> ") && out.contains("(downloaded)"),
        "{out}"
    );

    // Everything cached: no request at all, online or offline, and `validate` agrees.
    h.clear_log();
    let o = env.fidshard(&["fetch", c], &[]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("(cached)"));
    ok(&env.fidshard(&["fetch", c], &[("HF_HUB_OFFLINE", "1")]));
    ok(&env.fidshard(&["plan", c], &[("HF_HUB_OFFLINE", "1")]));
    assert_eq!(h.log().len(), 0, "{:?}", h.log());
}

#[test]
fn two_fetches_at_once_download_each_file_once() {
    let env = Env::new();
    env.with_golden_repos();
    let vae_w = read("golden/vae/diffusion_pytorch_model.safetensors");
    let dit = read("golden/dit/model.pt");
    let vae_cdn = format!("/cdn/{}", sha256_hex(&vae_w));
    let dit_cdn = format!("/cdn/{}", sha256_hex(&dit));
    env.hub.slow(&vae_cdn, Duration::from_millis(60));
    env.hub.slow(&dit_cdn, Duration::from_millis(60));
    let cfg = env.job("twice", "acme/tiny-dit", "acme/tiny-vae", "");
    let c = cfg.to_str().unwrap();
    let spawn = || {
        env.command(&["fetch", c], &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    ok(&a);
    ok(&b);
    assert_eq!(
        env.hub.complete_gets(&vae_cdn, vae_w.len()),
        1,
        "{:?}",
        env.hub.log()
    );
    assert_eq!(env.hub.complete_gets(&dit_cdn, dit.len()), 1);
    let config = format!("/acme/tiny-vae/resolve/{COMMIT}/config.json");
    assert_eq!(
        env.hub
            .complete_gets(&config, read("golden/vae/config.json").len()),
        1
    );
    let waited = [&a, &b]
        .iter()
        .any(|o| stderr(o).contains("another process is downloading this file"));
    assert!(waited, "{}\n{}", stderr(&a), stderr(&b));
}

#[test]
fn offline_mode_uses_the_cache_only() {
    let env = Env::new();
    env.with_golden_repos();
    let cfg = env.job("offline", "acme/tiny-dit", "acme/tiny-vae", "");
    let c = cfg.to_str().unwrap();
    for verb in ["fetch", "run", "validate"] {
        let o = env.fidshard(&[verb, c], &[("HF_HUB_OFFLINE", "1")]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{verb}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        for part in [
            c,
            "`vae`",
            "models--acme--tiny-vae",
            "$HF_HUB_CACHE",
            "HF_HUB_OFFLINE",
            "hf download acme/tiny-vae",
        ] {
            assert!(err.contains(part), "{part} not in {err}");
        }
    }
    assert_eq!(env.hub.log().len(), 0);
    assert!(
        !env.dir().join("offline-out").exists(),
        "run changed nothing"
    );
}

#[test]
fn a_gated_repo_says_how_to_log_in_and_the_token_stays_secret() {
    let env = Env::new();
    env.with_golden_repos();
    let secret = "hf_TestSecretToken123";
    env.hub.add_repo(
        "acme/gated-dit",
        &[("model.pt", read("golden/dit/model.pt"))],
        Some(secret),
    );
    let cfg = env.job(
        "gated",
        "acme/gated-dit",
        &fixture("golden/vae").display().to_string(),
        "",
    );
    let c = cfg.to_str().unwrap();
    let o = env.fidshard(&["fetch", c], &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for part in [
        "`model.checkpoint`",
        "gated repo",
        "no Hugging Face token was found",
        "hf auth login",
        "HF_TOKEN",
        &format!("{}/acme/gated-dit", env.hub.url),
    ] {
        assert!(err.contains(part), "{part} not in {err}");
    }

    // A wrong token: named by where it came from, never by its value.
    let o = env.fidshard(&["fetch", c], &[("HF_TOKEN", "hf_wrong_value_42")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("the token from $HF_TOKEN"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("hf_wrong_value_42"));

    // The token file of `hf auth login`, at $HF_HOME/token.
    std::fs::create_dir_all(env.dir().join("hf-home")).unwrap();
    std::fs::write(env.dir().join("hf-home/token"), format!("{secret}\n")).unwrap();
    let o = env.fidshard(&["fetch", c], &[("FIDSHARD_LOG", "debug")]);
    ok(&o);
    let all = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    assert!(!all.contains(secret), "the token leaked: {all}");
    let auth: Vec<_> = env
        .hub
        .log()
        .iter()
        .filter_map(|r| r.auth.clone())
        .collect();
    assert!(auth.contains(&format!("Bearer {secret}")), "{auth:?}");
}

#[test]
fn retries_running_out_exit_75_and_leave_the_job_alone() {
    let env = Env::new();
    let dit = read("golden/dit/model.pt");
    let url = env.hub.add_file("broken/model.pt", dit.clone());
    env.hub.fault(
        "GET",
        "/files/broken/model.pt",
        &vec![Fault::Status(500, None); 8],
    );
    let vae = fixture("golden/vae").display().to_string();
    let cfg = env.job("broken", &url, &vae, "");
    let t = Instant::now();
    let o = env.fidshard(
        &["run", cfg.to_str().unwrap()],
        &[("FIDSHARD_FETCH_ATTEMPTS", "3")],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(75), "{err}");
    assert!(t.elapsed() < Duration::from_secs(15));
    let last = err.trim_end().lines().last().unwrap();
    for part in [
        url.as_str(),
        "after 3 attempt(s)",
        "HTTP 500",
        "run the same command again",
    ] {
        assert!(last.contains(part), "{part} not in {last}");
    }
    // Nothing of the job changed: no state, no samples, no worker, no leftover status.
    let out = env.dir().join("broken-out");
    for name in [
        "state.sled",
        "samples",
        "logs",
        "status.json",
        "samples.npz",
    ] {
        assert!(!out.join(name).exists(), "{name} was written");
    }
    assert!(files_ending(&env.dir().join("fidshard-cache"), "model.pt").is_empty());

    // A sha256 in the job file that the served file does not have: exit 2, nothing kept.
    let good = env.hub.add_file("ok/model.pt", dit.clone());
    let wrong = format!("  sha256: {}\n", "0".repeat(64));
    let cfg = env.job("wrong-sha", &good, &vae, &wrong);
    let o = env.fidshard(&["fetch", cfg.to_str().unwrap()], &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("model.sha256") && err.contains(&sha256_hex(&dit)),
        "{err}"
    );
    assert!(files_ending(&env.dir().join("fidshard-cache"), "model.pt").is_empty());
}

/// `fidshard status CONFIG --json` while the job's weights are not all local yet.
fn status_json(env: &Env, cfg: &Path) -> Option<serde_json::Value> {
    let o = env.fidshard(&["status", cfg.to_str().unwrap(), "--json"], &[]);
    o.status
        .success()
        .then(|| serde_json::from_slice(&o.stdout).ok())
        .flatten()
}

#[test]
fn a_run_on_weights_from_the_mock_matches_the_run_on_local_files() {
    let env = Env::new();
    env.with_golden_repos();
    let dit = read("golden/dit/model.pt");
    let url = env.hub.add_file("DiT/models/model.pt", dit.clone());
    env.hub
        .slow("/files/DiT/models/model.pt", Duration::from_millis(150));
    let sha = format!("  sha256: sha256:{}\n", sha256_hex(&dit));
    let remote = env.job("remote", &url, "acme/tiny-vae", &sha);
    let local = env.job(
        "local",
        &fixture("golden/dit/model.pt").display().to_string(),
        &fixture("golden/vae").display().to_string(),
        "",
    );

    let child = env
        .command(&["run", remote.to_str().unwrap()], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `status` shows the download while it lasts.
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        if let Some(v) = status_json(&env, &remote) {
            if v.get("fetching").is_some() {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "status never showed the download"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(seen["state"], "running");
    assert!(
        seen["fetching"]["file"]
            .as_str()
            .unwrap()
            .contains("tiny-vae")
            || seen["fetching"]["file"] == url.as_str(),
        "{seen}"
    );
    let o = child.wait_with_output().unwrap();
    ok(&o);
    assert!(stderr(&o).contains("downloaded"), "{}", stderr(&o));
    ok(&env.fidshard(&["run", local.to_str().unwrap()], &[]));
    let npz = |name: &str| std::fs::read(env.dir().join(name).join("samples.npz")).unwrap();
    assert!(npz("remote-out") == npz("local-out"), "the samples differ");
    let status = std::fs::read_to_string(env.dir().join("remote-out/status.json")).unwrap();
    assert!(!status.contains("fetching"), "{status}");

    // The same job by its local files, on the first out dir: the same fingerprint, so it is
    // complete already and nothing is sampled again.
    let text = std::fs::read_to_string(&local)
        .unwrap()
        .replace("local-out", "remote-out");
    std::fs::write(&local, text).unwrap();
    let before = npz("remote-out");
    let o = env.fidshard(&["run", local.to_str().unwrap()], &[]);
    ok(&o);
    assert!(stderr(&o).contains("already complete"), "{}", stderr(&o));
    assert!(npz("remote-out") == before);
}

#[test]
fn a_stopped_download_resumes_where_it_stopped() {
    let env = Env::new();
    let dit = read("golden/dit/model.pt");
    let url = env.hub.add_file("slow/model.pt", dit.clone());
    env.hub
        .slow("/files/slow/model.pt", Duration::from_millis(100));
    let cfg = env.job(
        "stop",
        &url,
        &fixture("golden/vae").display().to_string(),
        "",
    );
    let c = cfg.to_str().unwrap();
    let child = env
        .command(&["fetch", c], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cache = env.dir().join("fidshard-cache");
    let deadline = Instant::now() + Duration::from_secs(10);
    let partial = loop {
        let big = files_ending(&cache, ".incomplete")
            .into_iter()
            .find(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) >= 128 << 10);
        if let Some(p) = big {
            break p;
        }
        assert!(Instant::now() < deadline, "the download never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(75), "{err}");
    assert!(err.contains("SIGTERM while downloading"), "{err}");
    // The partial file keeps its temporary name; nothing has the final one.
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept >= 128 << 10 && kept < dit.len() as u64);
    assert!(files_ending(&cache, "model.pt").is_empty());

    ok(&env.fidshard(&["fetch", c], &[]));
    let last = ranges(&env.hub, "/files/slow/model.pt").pop().unwrap();
    let from: u64 = last
        .unwrap()
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from >= kept, "resumed from {from}, {kept} bytes were kept");
    let done = files_ending(&cache, "model.pt");
    assert_eq!(done.len(), 1);
    assert!(std::fs::read(&done[0]).unwrap() == dit);
}

#[test]
fn two_partitions_starting_at_once_download_each_file_once() {
    let env = Env::new();
    env.with_golden_repos();
    let vae_w = read("golden/vae/diffusion_pytorch_model.safetensors");
    let dit = read("golden/dit/model.pt");
    let vae_cdn = format!("/cdn/{}", sha256_hex(&vae_w));
    let dit_cdn = format!("/cdn/{}", sha256_hex(&dit));
    env.hub.slow(&vae_cdn, Duration::from_millis(40));
    env.hub.slow(&dit_cdn, Duration::from_millis(40));
    let cfg = env.job("parts", "acme/tiny-dit", "acme/tiny-vae", "");
    let c = cfg.to_str().unwrap();
    let spawn = |k: &str| {
        env.command(&["run", c, "--partition", k], &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("0/2"), spawn("1/2"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    ok(&a);
    ok(&b);
    assert_eq!(env.hub.complete_gets(&vae_cdn, vae_w.len()), 1);
    assert_eq!(env.hub.complete_gets(&dit_cdn, dit.len()), 1);
    assert!(env.dir().join("parts-out/samples.npz").is_file());
}

#[test]
fn evaluate_files_from_urls_are_fetched_once_and_their_sha256_checked() {
    let env = Env::new();
    let reference = read("eval/reference.npz");
    // With a sha256 pinned, any content is kept (this is not real Inception weights).
    let inception = b"stand-in for torch-fidelity's Inception weights".to_vec();
    let ref_url = env.hub.add_file("refs/reference.npz", reference.clone());
    let inc_url = env
        .hub
        .add_file("w/weights-inception.pth", inception.clone());
    let (dit, vae) = (
        fixture("golden/dit/model.pt").display().to_string(),
        fixture("golden/vae").display().to_string(),
    );
    let eval = |ref_sha: &str| {
        format!(
            "evaluate:\n  reference: {ref_url}\n  reference_sha256: {ref_sha}\n  \
             inception: {inc_url}\n  inception_sha256: sha256:{}\n  metrics: [fid]\n",
            sha256_hex(&inception)
        )
    };
    let cfg = env.job("eval", &dit, &vae, &eval(&sha256_hex(&reference)));
    let c = cfg.to_str().unwrap();
    let gets = |env: &Env| {
        env.hub
            .log()
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/files/"))
            .count()
    };

    // `plan` needs neither file, and says they are not local yet.
    let o = env.fidshard(&["plan", c], &[]);
    ok(&o);
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    for key in ["`evaluate.reference`", "`evaluate.inception`"] {
        assert!(
            plan.lines().any(|l| l.starts_with("note: ")
                && l.contains(key)
                && l.contains("fidshard fetch")),
            "{plan}"
        );
    }
    assert_eq!(gets(&env), 0, "plan downloaded something");

    let o = env.fidshard(&["fetch", c], &[]);
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    for (key, url) in [
        ("evaluate.reference", &ref_url),
        ("evaluate.inception", &inc_url),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{key}: {url} -> ")) && l.ends_with("(downloaded)")),
            "{out}"
        );
    }
    let cached = files_ending(&env.dir().join("fidshard-cache"), "reference.npz");
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(std::fs::read(&cached[0]).unwrap() == reference);
    assert_eq!(gets(&env), 2);

    // A second fetch finds both in the cache; `plan` has nothing to say about them.
    env.hub.clear_log();
    let o = env.fidshard(&["fetch", c], &[]);
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(out.matches("(cached)").count(), 2, "{out}");
    assert_eq!(gets(&env), 0, "the second fetch downloaded");
    let o = env.fidshard(&["plan", c], &[("HF_HUB_OFFLINE", "1")]);
    ok(&o);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("not local yet"));

    // The resolved job names them as written, with their sha256.
    let o = env.fidshard(&["config", c], &[]);
    ok(&o);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains(&format!("reference: {ref_url}")), "{text}");
    assert!(text.contains("reference_sha256: "), "{text}");

    // A sha256 the served file does not have: exit 2 naming the key, nothing kept.
    let cfg = env.job("eval-wrong", &dit, &vae, &eval(&"0".repeat(64)));
    let o = env.fidshard(&["fetch", cfg.to_str().unwrap()], &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("evaluate.reference_sha256") && err.contains(&sha256_hex(&reference)),
        "{err}"
    );
    // One line, naming the key.
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.contains("`evaluate.reference_sha256`")),
        "{err}"
    );

    // The same for a local file: the file, the key and the fix.
    let local = fixture("eval/reference.npz").display().to_string();
    let yaml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&ref_url, &local);
    std::fs::write(&cfg, yaml).unwrap();
    let o = env.fidshard(&["fetch", cfg.to_str().unwrap()], &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`evaluate.reference_sha256`")
            && err.contains(&local)
            && err.contains("give `evaluate.reference_sha256` the file's sha256"),
        "{err}"
    );
}

/// `plan` lists each file and where it will be; `fetch` of a URL the job does not pin prints
/// its SHA-256 and the key to pin it with, and `plan` then shows it cached.
#[test]
fn plan_lists_the_files_and_fetch_shows_the_sha256_to_pin() {
    let env = Env::new();
    env.with_golden_repos();
    let dit = read("golden/dit/model.pt");
    let url = env.hub.add_file("DiT/models/unpinned.pt", dit.clone());
    let cfg = env.job("unpinned", &url, "acme/tiny-vae", "");
    let c = cfg.to_str().unwrap();
    let o = env.fidshard(&["plan", c], &[]);
    ok(&o);
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key} line: {text}"))
            .to_string()
    };
    assert!(
        line(&plan, "model.checkpoint").contains("(to download into "),
        "{plan}"
    );
    assert!(line(&plan, "vae").contains("Hugging Face cache"), "{plan}");
    let o = env.fidshard(&["fetch", c], &[]);
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let sha = sha256_hex(&dit);
    assert!(
        out.contains(&format!("sha256 {sha}: pin it with `model.sha256: {sha}`")),
        "{out}"
    );
    let o = env.fidshard(&["plan", c], &[("HF_HUB_OFFLINE", "1")]);
    ok(&o);
    let plan = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        line(&plan, "model.checkpoint").contains("(cached "),
        "{plan}"
    );
}

/// The shipped FID-50K configs name where their weights come from: `plan` says what `fetch`
/// will download, on a machine that has none of them (nothing is downloaded here).
#[test]
fn shipped_configs_say_what_they_download() {
    let tmp = tempfile::tempdir().unwrap();
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    for (name, checkpoint, vae) in [
        (
            "dit-xl-2-256.yaml",
            "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt",
            "stabilityai/sd-vae-ft-ema",
        ),
        (
            "dit-xl-2-512.yaml",
            "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-512x512.pt",
            "stabilityai/sd-vae-ft-ema",
        ),
        (
            "dit-xl-2-256-hub.yaml",
            "facebook/DiT-XL-2-256",
            "facebook/DiT-XL-2-256",
        ),
    ] {
        let o = fidshard_cmd(&[
            "plan",
            configs.join(name).to_str().unwrap(),
            "--devices",
            "8",
        ])
        .env("HF_HOME", tmp.path().join("hf"))
        .env("HF_HUB_CACHE", tmp.path().join("hf/hub"))
        .env("FIDSHARD_CACHE", tmp.path().join("fidshard"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.code(), Some(0), "{name}: {out}{}", stderr(&o));
        for (key, value) in [("model.checkpoint", checkpoint), ("vae", vae)] {
            assert!(
                out.lines().any(|l| l.trim_start().starts_with(key)
                    && l.contains(value)
                    && l.contains("(to download into")),
                "{name}: {key}: {out}"
            );
        }
    }
}
