//! Bad input through the real binary: configs, model files and command lines that must each be
//! refused with the documented exit code and exactly one `fidshard: error:` line naming the file
//! or key, without touching a completed job whose out dir they point at.
//!
//! One completed job (8 samples, 2 steps, the golden model) is made first; every case that
//! names its out dir is followed by a comparison of every file there with what it was before.
use crate::support::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What a case runs: a variant of the completed job's YAML (top-level keys replaced), or a
/// file written as given, or a bare command line.
enum Input {
    /// YAML lines replacing the same top-level keys of the completed job's YAML; the out dir
    /// stays the completed job's. `{F}` is the case's folder, `{G}` the golden fixtures.
    Over(&'static str),
    /// The job YAML file's exact bytes.
    Bytes(Vec<u8>),
    /// A command line; `{JOB}` is the completed job's YAML.
    Args(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    /// `validate`, `plan` or `run` (ignored for `Input::Args`).
    cmd: &'static str,
    input: Input,
    /// Files the case needs in its folder, made before it runs.
    setup: fn(&Path),
    code: i32,
    /// What the error line must contain (a key in backticks, a file name).
    names: &'static str,
    /// A command line clap refuses: its message, on one line, points to `--help`.
    usage: bool,
}

fn nothing(_: &Path) {}

fn case(name: &'static str, cmd: &'static str, over: &'static str, names: &'static str) -> Case {
    Case {
        name,
        cmd,
        input: Input::Over(over),
        setup: nothing,
        code: 2,
        names,
        usage: false,
    }
}

fn with(mut c: Case, setup: fn(&Path)) -> Case {
    c.setup = setup;
    c
}

fn args(name: &'static str, a: &'static [&'static str], names: &'static str) -> Case {
    Case {
        name,
        cmd: "",
        input: Input::Args(a),
        setup: nothing,
        code: 2,
        names,
        usage: false,
    }
}

fn usage(mut c: Case) -> Case {
    c.usage = true;
    c
}

fn bytes(name: &'static str, cmd: &'static str, b: Vec<u8>, names: &'static str) -> Case {
    Case {
        name,
        cmd,
        input: Input::Bytes(b),
        setup: nothing,
        code: 2,
        names,
        usage: false,
    }
}

/// `{F}/dit.json`: the golden DiT config with `fields` merged in.
fn dit_json(dir: &Path, fields: &str) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("golden/dit/config.json")).unwrap())
            .unwrap();
    let extra: serde_json::Value = serde_json::from_str(&format!("{{{fields}}}")).unwrap();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    std::fs::write(dir.join("dit.json"), v.to_string()).unwrap();
}

/// `{F}/vae/`: a copy of the golden VAE, its config.json with `fields` merged in.
fn vae_copy(dir: &Path, fields: &str) {
    let vae = dir.join("vae");
    std::fs::create_dir_all(&vae).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fixture("golden/vae").join(f), vae.join(f)).unwrap();
    }
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vae.join("config.json")).unwrap()).unwrap();
    if !fields.is_empty() {
        let extra: serde_json::Value = serde_json::from_str(&format!("{{{fields}}}")).unwrap();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
    }
    std::fs::write(vae.join("config.json"), v.to_string()).unwrap();
}

const DIT: &str = "model:\n  config: {F}/dit.json\n  checkpoint: {G}/dit/model.pt\n";
const VAE: &str = "vae: {F}/vae\n";

fn cases() -> Vec<Case> {
    vec![
        // Floats out of range (these hung or panicked before).
        case("cfg_scale inf", "run", "cfg_scale: .inf", "`cfg_scale`"),
        case("cfg_scale nan", "run", "cfg_scale: .nan", "`cfg_scale`"),
        case(
            "cfg_scale huge",
            "validate",
            "cfg_scale: 1e30",
            "`cfg_scale`",
        ),
        case(
            "stall_timeout inf",
            "run",
            "stall_timeout: .inf",
            "`stall_timeout`",
        ),
        case(
            "stall_timeout 1e300",
            "run",
            "stall_timeout: 1e300",
            "`stall_timeout`",
        ),
        case(
            "stall_timeout 0",
            "plan",
            "stall_timeout: 0",
            "`stall_timeout`",
        ),
        case(
            "backoff inf",
            "run",
            "retry: {backoff: .inf}",
            "`retry.backoff`",
        ),
        case(
            "backoff_max negative",
            "run",
            "retry: {backoff_max: -1}",
            "`retry.backoff_max`",
        ),
        case("eta 2", "run", "sampler: ddim\neta: 2", "`eta`"),
        case("eta nan", "validate", "sampler: ddim\neta: .nan", "`eta`"),
        // Huge counts.
        case(
            "num_samples u64::MAX",
            "run",
            "num_samples: 18446744073709551615",
            "`num_samples`",
        ),
        case(
            "num_samples 2^64",
            "plan",
            "num_samples: 18446744073709551616",
            "`num_samples`",
        ),
        case(
            "10^9 shards",
            "plan",
            "num_samples: 1000000000\nshard_size: 1",
            "`shard_size`",
        ),
        case("cpu 10000", "run", "devices: {cpu: 10000}", "`devices`"),
        case(
            "cpu 1024 on this machine",
            "plan",
            "devices: {cpu: 1024}",
            "per core",
        ),
        case("cpu 1024 at run", "run", "devices: {cpu: 1024}", "per core"),
        case(
            "batch_size huge",
            "run",
            "batch_size: 100000000",
            "`batch_size`",
        ),
        // Misleading messages before.
        case("steps -3", "validate", "steps: -3", "`steps`"),
        case("steps ddim600", "run", "steps: ddim600", "`steps`"),
        // Valid, but not the job that made the out dir (a changed fingerprint).
        case(
            "another job, same out dir",
            "run",
            "steps: ddim7",
            "steps 2 -> ddim7",
        ),
        case(
            "another seed, same out dir",
            "run",
            "seed: 12345",
            "--restart",
        ),
        case("sampler euler", "run", "sampler: euler", "ddpm, ddim"),
        case(
            "precision fp8",
            "run",
            "precision: fp8",
            "fp32, tf32, bf16, fp16",
        ),
        case(
            "beta_schedule cosine",
            "run",
            "beta_schedule: cosine",
            "`beta_schedule`",
        ),
        case(
            "variance fixed_small",
            "run",
            "variance: fixed_small",
            "`variance`",
        ),
        case("labels", "run", "labels: some", "`labels`"),
        case("unknown key", "run", "num_sample: 8", "`num_sample`"),
        case("shard_size 0", "run", "shard_size: 0", "`shard_size`"),
        case("batch_size -4", "run", "batch_size: -4", "`batch_size`"),
        case("devices []", "run", "devices: []", "`devices`"),
        case("image_size", "run", "image_size: 100", "`image_size`"),
        case("num_classes", "run", "num_classes: 7", "`num_classes`"),
        case("cfg_channels 9", "run", "cfg_channels: 9", "`cfg_channels`"),
        case(
            "checkpoint missing",
            "run",
            "model:\n  config: {G}/dit/config.json\n  checkpoint: {F}/nope.pt\n",
            "`model.checkpoint`",
        ),
        case(
            "checkpoint is a folder",
            "run",
            "model:\n  config: {G}/dit/config.json\n  checkpoint: {F}\n",
            "`model.checkpoint`",
        ),
        case("vae missing", "run", "vae: {F}/nope", "`vae`"),
        with(
            case("out_dir a file", "run", "out_dir: {F}/a-file", "`out_dir`"),
            |d| std::fs::write(d.join("a-file"), "keep me").unwrap(),
        ),
        with(
            case(
                "out_dir under a file",
                "plan",
                "out_dir: {F}/a-file/out",
                "`out_dir`",
            ),
            |d| std::fs::write(d.join("a-file"), "keep me").unwrap(),
        ),
        // A custom DiT config JSON and a VAE config.json.
        with(case("hidden_size -64", "run", DIT, "`hidden_size`"), |d| {
            dit_json(d, "\"hidden_size\": -64")
        }),
        with(case("mlp_ratio 0", "validate", DIT, "`mlp_ratio`"), |d| {
            dit_json(d, "\"mlp_ratio\": 0")
        }),
        with(
            case(
                "class_dropout_prob 1.5",
                "plan",
                DIT,
                "`class_dropout_prob`",
            ),
            |d| dit_json(d, "\"class_dropout_prob\": 1.5"),
        ),
        with(case("depth string", "run", DIT, "`depth`"), |d| {
            dit_json(d, "\"depth\": \"2\"")
        }),
        with(
            case("scaling_factor 0", "run", VAE, "`scaling_factor`"),
            |d| vae_copy(d, "\"scaling_factor\": 0"),
        ),
        with(
            case("latent_channels -4", "validate", VAE, "`latent_channels`"),
            |d| vae_copy(d, "\"latent_channels\": -4"),
        ),
        // Model files that load as something else (checked by a worker before anything is
        // written).
        case(
            "dict of ints",
            "run",
            "model:\n  config: {G}/dit/config.json\n  checkpoint: {G}/../bad/dict-of-ints.pt\n",
            "dict-of-ints.pt",
        ),
        case(
            "not a state dict",
            "run",
            "model:\n  config: {G}/dit/config.json\n  checkpoint: {G}/../bad/not-a-state-dict.pt\n",
            "not-a-state-dict.pt",
        ),
        case(
            "whole module",
            "validate",
            "model:\n  config: {G}/dit/config.json\n  checkpoint: {G}/../bad/whole-module.pt\n",
            "whole-module.pt",
        ),
        case(
            "uint16",
            "validate",
            "model:\n  config: {G}/dit/config.json\n  checkpoint: {G}/../bad/uint16.pt\n",
            "uint16.pt",
        ),
        case(
            "legacy format",
            "run",
            "model:\n  config: {G}/dit/config.json\n  checkpoint: {G}/../bad/legacy.pt\n",
            "legacy.pt",
        ),
        case(
            "other keys",
            "run",
            "model:\n  config: {G}/dit/config.json\n  checkpoint: {G}/../bad/small.safetensors\n",
            "small.safetensors",
        ),
        with(
            case(
                "truncated checkpoint",
                "run",
                "model:\n  config: {G}/dit/config.json\n  checkpoint: {F}/cut.pt\n",
                "cut.pt",
            ),
            |d| {
                let b = std::fs::read(fixture("golden/dit/model.pt")).unwrap();
                std::fs::write(d.join("cut.pt"), &b[..b.len() / 2]).unwrap();
            },
        ),
        with(
            case(
                "empty checkpoint",
                "run",
                "model:\n  config: {G}/dit/config.json\n  checkpoint: {F}/empty.pt\n",
                "empty.pt",
            ),
            |d| {
                std::fs::write(d.join("empty.pt"), b"").unwrap();
            },
        ),
        with(
            case(
                "truncated VAE weights",
                "run",
                VAE,
                "diffusion_pytorch_model.safetensors",
            ),
            |d| {
                vae_copy(d, "");
                let w = d.join("vae/diffusion_pytorch_model.safetensors");
                let b = std::fs::read(&w).unwrap();
                std::fs::write(&w, &b[..b.len() / 3]).unwrap();
            },
        ),
        // TorchScript models and VAE decoders (docs/models.md).
        case(
            "checkpoint and torchscript",
            "plan",
            "model:\n  config: {G}/dit/config.json\n  checkpoint: {G}/dit/model.pt\n  torchscript: {G}/../torchscript/dit.ts\n",
            "`model.torchscript`: is given with `model.checkpoint`; keep one",
        ),
        case(
            "neither checkpoint nor torchscript",
            "validate",
            "model:\n  config: {G}/dit/config.json\n",
            "`model.checkpoint`: is required: give `checkpoint: FILE`",
        ),
        case(
            "torchscript not TorchScript",
            "run",
            "model:\n  config: {G}/dit/config.json\n  torchscript: {G}/../torchscript/not-torchscript.pt\n",
            "not-torchscript.pt: `model.torchscript`: not a TorchScript archive",
        ),
        case(
            "torchscript of the wrong shape",
            "validate",
            "model:\n  config: {G}/../demo-digits/dit/config.json\n  torchscript: {G}/../torchscript/sit.ts\n",
            "sit.ts: `model.torchscript`: returned [1, 4, 8, 8]",
        ),
        case(
            "torchscript VAE without latent_scale",
            "run",
            "vae: {torchscript: {G}/../torchscript/vae-decoder.ts, downsample: 2, latent_channels: 4}",
            "`latent_scale`: is required with `vae: {torchscript: ...}`",
        ),
        case(
            "torchscript VAE downsample 3",
            "plan",
            "vae: {torchscript: {G}/../torchscript/vae-decoder.ts, downsample: 3, latent_channels: 4}\nlatent_scale: 1",
            "`vae.downsample`",
        ),
        case(
            "torchscript VAE without latent_channels",
            "plan",
            "vae: {torchscript: {G}/../torchscript/vae-decoder.ts, downsample: 2}",
            "`vae.latent_channels` is required",
        ),
        case(
            "torchscript VAE not TorchScript",
            "run",
            "vae: {torchscript: {G}/../torchscript/not-torchscript.pt, downsample: 2, latent_channels: 4}\nlatent_scale: 1",
            "`vae.torchscript`: not a TorchScript archive",
        ),
        // The file itself.
        bytes(
            "BOM and a bad key",
            "run",
            b"\xef\xbb\xbfnum_samples: 8\nvae: x\nmodel: {checkpoint: x}\nfoo: 1\n".to_vec(),
            "`foo`",
        ),
        bytes("empty file", "run", Vec::new(), "job.yaml"),
        bytes(
            "latin-1",
            "validate",
            b"num_samples: 8 # caf\xe9\n".to_vec(),
            "job.yaml",
        ),
        bytes(
            "200 KB nested",
            "run",
            {
                let mut b = b"a: ".to_vec();
                b.extend(std::iter::repeat_n(b'[', 100_000));
                b.extend(std::iter::repeat_n(b']', 100_000));
                b
            },
            "job.yaml",
        ),
        bytes("2 MiB", "plan", b"# padding\n".repeat(200_000), "job.yaml"),
        bytes("a list", "run", b"- model\n- vae\n".to_vec(), "job.yaml"),
        bytes("syntax", "run", b"model: {config: [\n".to_vec(), "job.yaml"),
        // Command lines.
        usage(args("no config", &["run"], "required arguments")),
        args(
            "missing file",
            &["validate", "/nonexistent/job.yaml"],
            "/nonexistent/job.yaml",
        ),
        args("a folder", &["plan", "{F}"], "is a folder"),
        usage(args(
            "grace inf",
            &["run", "{JOB}", "--grace", "inf"],
            "--grace",
        )),
        usage(args(
            "unknown flag",
            &["run", "{JOB}", "--bogus"],
            "--bogus",
        )),
        usage(args("extra argument", &["plan", "{JOB}", "extra"], "extra")),
        usage(args("unknown command", &["frobnicate"], "frobnicate")),
        usage(args(
            "bad range",
            &["sample", "{JOB}", "--out", "{F}/o", "--range", "5..2"],
            "--range",
        )),
    ]
}

/// What must not change in the completed job's out dir: every file's bytes, except the lock
/// file (its content records the last process that took the lock) and sled's files (opening
/// the DB may rewrite its snapshot with the same records), whose records are compared through
/// `status --json` instead.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = file_bytes(dir);
    let st = status_json(dir);
    let mut records = String::new();
    for k in [
        "state",
        "samples_done",
        "samples_total",
        "shards_done",
        "shards_total",
        "done_ranges",
        "missing_ranges",
        "failed",
    ] {
        records += &format!("{k}={}\n", st[k]);
    }
    out.insert(PathBuf::from("(status --json)"), records.into_bytes());
    out
}

fn file_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.file_name().is_some_and(|n| n != "coordinator.lock")
                && !p.starts_with(root.join("state.sled"))
            {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `base` with the top-level keys set in `lines` replaced by them.
fn override_keys(base: &str, lines: &str) -> String {
    let top = |l: &str| -> Option<String> {
        if l.starts_with([' ', '-', '#']) {
            return None;
        }
        l.split_once(':').map(|(k, _)| k.to_string())
    };
    let replaced: Vec<String> = lines.lines().filter_map(top).collect();
    let mut out = String::new();
    let mut skipping = false;
    for l in base.lines() {
        if !l.starts_with(' ') {
            skipping = top(l).is_some_and(|k| replaced.contains(&k));
        }
        if !skipping {
            out += l;
            out.push('\n');
        }
    }
    out + lines + "\n"
}

fn run_fidshard(args: &[OsString]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fidshard"))
        .args(args)
        .env("FIDSHARD_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("run fidshard")
}

#[test]
fn bad_input_is_refused_on_one_line_and_damages_nothing() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let job_dir = tmp.path().join("job");
    std::fs::create_dir_all(&job_dir).unwrap();
    let job = job_with(
        &job_dir,
        JOBS[1],
        "num_samples: 8\nsteps: \"2\"\ndevices: {cpu: 1}\nshard_size: 4\nbatch_size: 4\n",
    );
    let o = fidshard(&["run", job.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = job_dir.join("out");
    let golden_text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("out_dir: out", &format!("out_dir: {}", out.display()));
    let mut before = contents(&out);
    assert!(before.keys().any(|p| p.ends_with("samples.npz")));

    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("case{i:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        (c.setup)(&dir);
        let fill = |s: &str| {
            s.replace("{F}", &dir.display().to_string())
                .replace("{G}", &fixture("golden").display().to_string())
                .replace("{JOB}", &job.display().to_string())
        };
        let cfg = dir.join("job.yaml");
        let argv: Vec<OsString> = match &c.input {
            Input::Over(lines) => {
                std::fs::write(&cfg, override_keys(&golden_text, &fill(lines))).unwrap();
                vec![c.cmd.into(), cfg.clone().into()]
            }
            Input::Bytes(b) => {
                std::fs::write(&cfg, b).unwrap();
                vec![c.cmd.into(), cfg.clone().into()]
            }
            Input::Args(a) => a.iter().map(|s| fill(s).into()).collect(),
        };
        let t = Instant::now();
        let o = run_fidshard(&argv);
        let secs = t.elapsed().as_secs_f64();
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let error_lines = lines
            .iter()
            .filter(|l| l.starts_with("fidshard: error:"))
            .count();
        let mut why = Vec::new();
        if o.status.code() != Some(c.code) {
            why.push(format!("exit {:?}, want {}", o.status.code(), c.code));
        }
        // Command-line errors too are one `fidshard: error:` line, pointing to --help.
        if c.usage && !err.contains("fidshard --help") {
            why.push("a usage error does not point to --help".into());
        }
        if lines.len() != 1 || error_lines != 1 {
            why.push(format!(
                "{} stderr lines, {error_lines} `fidshard: error:`",
                lines.len()
            ));
        }
        if !err.contains(c.names) {
            why.push(format!("does not name {}", c.names));
        }
        if secs > 15.0 {
            why.push(format!("took {secs:.1} s"));
        }
        let after = contents(&out);
        if after != before {
            let changed: Vec<String> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .map(|k| k.display().to_string())
                .collect();
            why.push(format!("changed the completed job's out dir: {changed:?}"));
            before = after;
        }
        if !why.is_empty() {
            failures.push(format!("#{i} {}: {}\n{err}", c.name, why.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Non-UTF-8 config path: refused (it used to panic in `run`).
    {
        use std::os::unix::ffi::OsStrExt;
        let p = tmp
            .path()
            .join(std::ffi::OsStr::from_bytes(b"job\xff.yaml"));
        std::fs::write(&p, &golden_text).unwrap();
        for cmd in ["validate", "plan", "run"] {
            let o = run_fidshard(&[cmd.into(), p.clone().into()]);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
            assert!(
                err.contains("not valid UTF-8") && err.lines().count() == 1,
                "{cmd}: {err}"
            );
        }
        assert_eq!(contents(&out), before);
    }
    // A BOM before valid YAML is skipped, and the completed job stays complete.
    let bom = tmp.path().join("bom.yaml");
    std::fs::write(&bom, format!("\u{feff}{golden_text}")).unwrap();
    let o = fidshard(&["run", bom.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        contents(&out).get(Path::new("samples.npz")),
        before.get(Path::new("samples.npz"))
    );
    let total = started.elapsed();
    assert!(total < Duration::from_secs(120), "took {total:?}");
    eprintln!("{} cases in {:.1} s", cases.len(), total.as_secs_f64());
}

// ---- Round 2 (issue 15, items 8 and 9): partitions, --set, out dirs that cannot be used. ----

/// Makes `dir` unwritable for this process: `chattr +i` as root (mode bits do not stop root),
/// `chmod 555` otherwise; undone on drop. `None` when neither works here.
struct ReadOnlyDir {
    dir: PathBuf,
    immutable: bool,
}

impl ReadOnlyDir {
    fn new(dir: &Path) -> Option<ReadOnlyDir> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
            return ok.then(|| ReadOnlyDir {
                dir: dir.to_path_buf(),
                immutable: true,
            });
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        Some(ReadOnlyDir {
            dir: dir.to_path_buf(),
            immutable: false,
        })
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.dir).status();
        } else {
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
        }
    }
}

fn code_and_line(o: &std::process::Output) -> (Option<i32>, String) {
    (o.status.code(), one_error_line(o))
}

#[test]
fn partitions_overrides_and_unusable_out_dirs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 8\nsteps: 2\nshard_size: 4\n",
    );
    let c = cfg.to_str().unwrap();
    let out = tmp.path().join("out");
    let fid = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fidshard"));
        cmd.args(args).env("FIDSHARD_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };

    // N far above the plan's 2 shards: refused with the plan's numbers, nothing created.
    let (code, line) = code_and_line(&fid(&["run", c, "--partition", "3/50"], &[]));
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.contains("2 shards (8 samples in shards of 4)") && line.contains("at most 2"),
        "{line}"
    );
    // The same from a Slurm array of 50 tasks, opted in.
    let array = [
        ("SLURM_ARRAY_TASK_ID", "7"),
        ("SLURM_ARRAY_TASK_COUNT", "50"),
    ];
    let (code, line) = code_and_line(&fid(&["run", c, "--partition", "slurm"], &array));
    assert_eq!(code, Some(2), "{line}");
    assert!(line.contains("partition 7/50"), "{line}");
    assert!(!out.exists(), "a refused run created its out dir");
    // A bad Slurm variable is named as such, not as a bad --partition flag.
    let (code, line) = code_and_line(&fid(
        &["run", c, "--partition", "slurm"],
        &[("SLURM_ARRAY_TASK_ID", "x")],
    ));
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.contains("SLURM_ARRAY_TASK_ID=x") && !line.contains("--partition:"),
        "{line}"
    );
    // `partitions:` takes `slurm` only.
    let (code, line) = code_and_line(&fid(&["plan", c, "--set", "partitions=nodes"], &[]));
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.contains("`partitions`") && line.contains("slurm"),
        "{line}"
    );

    // --set errors name the key.
    for (set, key) in [
        ("seed=abc", "`seed`"),
        ("retry.attempts=-1", "`retry.attempts`"),
        ("seed.x=1", "`seed`"),
        ("nokey=1", "`nokey`"),
    ] {
        let (code, line) = code_and_line(&fid(&["plan", c, "--set", set], &[]));
        assert_eq!(code, Some(2), "{set}: {line}");
        assert!(line.contains(key), "--set {set}: {line}");
    }

    // sample --out: an existing file, and a folder that cannot be written.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"mine").unwrap();
    let (code, line) = code_and_line(&fid(
        &[
            "sample",
            c,
            "--out",
            file.to_str().unwrap(),
            "--range",
            "0..1",
        ],
        &[],
    ));
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.contains("--out") && line.contains("not a folder"),
        "{line}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    let ro = tmp.path().join("read-only");
    match ReadOnlyDir::new(&ro) {
        None => eprintln!("SKIPPED (read-only out dir): neither chattr +i nor chmod works here"),
        Some(_guard) => {
            let (code, line) = code_and_line(&fid(
                &["sample", c, "--out", ro.join("png").to_str().unwrap()],
                &[],
            ));
            assert_eq!(code, Some(2), "{line}");
            assert!(line.contains("cannot write"), "{line}");
            let set = format!("out_dir={}", ro.display());
            let (code, line) = code_and_line(&fid(&["run", c, "--set", &set], &[]));
            assert_eq!(code, Some(2), "{line}");
            assert!(
                line.contains("cannot write") && line.contains("nothing was changed"),
                "{line}"
            );
            assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
        }
    }

    // An out dir whose samples/ is a symbolic link: refused, the link's target untouched.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("000000.png"), b"not fidshard's").unwrap();
    let linked = tmp.path().join("linked");
    std::fs::create_dir(&linked).unwrap();
    std::os::unix::fs::symlink(&elsewhere, linked.join("samples")).unwrap();
    std::fs::create_dir(linked.join("state.sled")).unwrap();
    let set = format!("out_dir={}", linked.display());
    for args in [
        vec!["run", c, "--set", &set],
        vec!["run", c, "--set", &set, "--restart"],
    ] {
        let (code, line) = code_and_line(&fid(&args, &[]));
        assert_eq!(code, Some(2), "{args:?}: {line}");
        assert!(line.contains("`samples` is a symbolic link"), "{line}");
    }
    assert_eq!(
        std::fs::read(elsewhere.join("000000.png")).unwrap(),
        b"not fidshard's"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 1);
}
