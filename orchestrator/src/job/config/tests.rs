//! Every error branch of the job config, as a table: a YAML snippet (over a base job on the
//! golden fixtures), the key the one-line message must name, and a fragment of its fix text.
use super::read::too_deep;
use super::*;
use crate::exit_code::code_of;
use fidshard_core::Exit;
use std::path::Path;

fn golden() -> PathBuf {
    normalize(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/golden"))
}

/// The base job: the golden model, 8 samples, 2 steps.
const BASE: &str = "model:\n  config: {G}/dit/config.json\n  checkpoint: {G}/dit/model.pt\n\
                    vae: {G}/vae\nnum_samples: 8\nsteps: 2\n";

/// `BASE` with the top-level keys of `lines` replaced by them; a line `!del KEY` only removes.
fn yaml_with(lines: &str) -> String {
    let top = |l: &str| -> Option<String> {
        let l = l.strip_prefix("!del ").unwrap_or(l);
        if l.starts_with([' ', '-', '#']) {
            return None;
        }
        l.split_once(':')
            .map(|(k, _)| k.to_string())
            .or(Some(l.trim().to_string()))
    };
    let replaced: Vec<String> = lines.lines().filter_map(top).collect();
    let mut out = String::new();
    let mut skipping = false;
    for l in BASE.lines() {
        if !l.starts_with(' ') {
            skipping = top(l).is_some_and(|k| replaced.contains(&k));
        }
        if !skipping {
            out += l;
            out.push('\n');
        }
    }
    for l in lines.lines().filter(|l| !l.starts_with("!del ")) {
        out += l;
        out.push('\n');
    }
    out
}

/// Writes `{dir}/dit.json` (the golden config with `fields` merged in) when `fields` is set,
/// and `{dir}/vae/config.json` likewise.
fn write_models(dir: &Path, dit: &str, vae: &str) {
    let merge = |src: PathBuf, fields: &str, dst: PathBuf| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
        let extra: serde_json::Value = serde_json::from_str(&format!("{{{fields}}}")).unwrap();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(dst, v.to_string()).unwrap();
    };
    if !dit.is_empty() {
        merge(golden().join("dit/config.json"), dit, dir.join("dit.json"));
    }
    if !vae.is_empty() {
        merge(
            golden().join("vae/config.json"),
            vae,
            dir.join("vae/config.json"),
        );
    }
}

fn load_in(dir: &Path, name: &str, yaml: &str) -> Result<Job> {
    let text = yaml
        .replace("{G}", &golden().display().to_string())
        .replace("{T}", &dir.display().to_string());
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    Job::load(&path)
}

struct Case {
    /// YAML lines over BASE (`{T}/dit.json`, `{T}/vae` are the rows' model files).
    yaml: &'static str,
    /// JSON fields merged into the golden DiT config at {T}/dit.json ("" for none).
    dit: &'static str,
    /// JSON fields merged into the golden VAE config at {T}/vae/config.json.
    vae: &'static str,
    /// The key the message names, in backticks.
    key: &'static str,
    /// A fragment of the message's explanation or fix.
    fix: &'static str,
}

const fn c(yaml: &'static str, key: &'static str, fix: &'static str) -> Case {
    Case {
        yaml,
        dit: "",
        vae: "",
        key,
        fix,
    }
}
const fn dit(fields: &'static str, key: &'static str, fix: &'static str) -> Case {
    Case {
        yaml: "model:\n  config: {T}/dit.json\n  checkpoint: {G}/dit/model.pt\n",
        dit: fields,
        vae: "",
        key,
        fix,
    }
}
const fn vae(fields: &'static str, key: &'static str, fix: &'static str) -> Case {
    Case {
        yaml: "vae: {T}/vae\n",
        dit: "",
        vae: fields,
        key,
        fix,
    }
}

const PRESET: &str = "model:\n  preset: DiT-S/2\n  checkpoint: {G}/dit/model.pt\n";

/// A SiT job (`model.family: sit`, the digits SiT's REPA config) with `$extra` lines.
macro_rules! sit {
    ($extra:literal) => {
        concat!(
            "model:\n  family: sit\n  config: {G}/../demo-digits-sit/sit/config.json\n  checkpoint: {G}/dit/model.pt\n",
            $extra
        )
    };
}

const CASES: &[Case] = &[
    // What serde refuses (read.rs rewrites its messages).
    c("foo: 1", "foo", "unknown key; the keys here are model, vae"),
    c("model:\n  config: {G}/dit/config.json\n  checkpoint: {G}/dit/model.pt\n  ckpt: x\n", "model.ckpt", "unknown key"),
    c("!del num_samples", "num_samples", "is required"),
    c("!del vae", "vae", "is required"),
    c("num_samples: -3", "num_samples", "whole number >= 0"),
    c("num_samples: 1e30", "num_samples", "whole number >= 0"),
    c("num_samples: 99999999999999999999999", "num_samples", "whole number >= 0"),
    c("num_samples: 8\nnum_samples: 9", "num_samples", "twice"),
    c("steps: -3", "steps", "not a step count"),
    c("steps: 2.5", "steps", "not a step count"),
    c("sampler: foo", "sampler", "not one of ddpm, ddim"),
    c("sampler: 3", "sampler", "one of ddpm, ddim"),
    c("beta_schedule: cosine", "beta_schedule", "not one of linear, squaredcos_cap_v2"),
    c("variance: big", "variance", "auto, learned_range, fixed_large, fixed_small"),
    c("precision: fp64", "precision", "not one of fp32, tf32, bf16, fp16"),
    c("labels: all", "labels", "random, balanced, unconditional"),
    c("cfg_scale: abc", "cfg_scale", "is not a number"),
    c("cfg_channels: two", "cfg_channels", "`all`"),
    c("cfg_channels: -1", "cfg_channels", "`all`"),
    c("devices: gpus", "devices", "{cpu: N}"),
    c("devices: {cpu: -1}", "devices", "{cpu: N}"),
    c("devices: {gpu: 1}", "devices", "{cpu: N}"),
    c("devices: [0, -1]", "devices", "list of GPU ids"),
    c("retry: {tries: 3}", "retry.tries", "unknown key; the keys here are attempts, backoff, backoff_max"),
    c("retry: 3", "retry", "mapping of keys"),
    c("model: DiT-XL/2", "model", "mapping of keys"),
    c("batch_size: -1", "batch_size", "positive number of images or `auto`"),
    // Numbers out of range.
    c("num_samples: 0", "num_samples", "1..=1000000000"),
    c("num_samples: 18446744073709551615", "num_samples", "1..=1000000000"),
    c("num_samples: 1000000000\nshard_size: 1", "shard_size", "use shard_size: 100 or more"),
    c("shard_size: 0", "shard_size", "1..=1000000"),
    c("shard_size: 2000000", "shard_size", "1..=1000000"),
    c("batch_size: 0", "batch_size", "1..=65536"),
    c("batch_size: 1000000", "batch_size", "1..=65536"),
    c("vae_batch_size: 0", "vae_batch_size", "1..=65536"),
    c("cfg_scale: .inf", "cfg_scale", "not a finite number"),
    c("cfg_scale: -.inf", "cfg_scale", "not a finite number"),
    c("cfg_scale: .nan", "cfg_scale", "not a finite number"),
    c("cfg_scale: 0.5", "cfg_scale", "use 1.0 for no guidance"),
    c("cfg_scale: 1e5", "cfg_scale", "float32"),
    c("eta: .nan\nsampler: ddim", "eta", "[0, 1]"),
    c("eta: 0.5", "eta", "set sampler: ddim"),
    c("eta: 1.5\nsampler: ddim", "eta", "outside [0, 1]"),
    c("eta: -0.1\nsampler: ddim", "eta", "outside [0, 1]"),
    c("steps: \"\"", "steps", "empty"),
    c("steps: ddim600", "steps", "nearest that work"),
    c("steps: \"10,x\"", "steps", "not a non-negative integer"),
    c("steps: 0", "steps", "at least 1"),
    c("cfg_channels: 5", "cfg_channels", "1..=4"),
    c("cfg_channels: 0", "cfg_channels", "1..=4"),
    c("stall_timeout: .inf", "stall_timeout", "seconds in 0 < s <= 604800"),
    c("stall_timeout: 1e300", "stall_timeout", "seconds in 0 < s <= 604800"),
    c("stall_timeout: .nan", "stall_timeout", "seconds in 0 < s <= 604800"),
    c("stall_timeout: 0", "stall_timeout", "seconds in 0 < s <= 604800"),
    c("stall_timeout: -5", "stall_timeout", "seconds in 0 < s <= 604800"),
    c("retry: {backoff: .nan}", "retry.backoff", "seconds in 0 <= s <= 86400"),
    c("retry: {backoff: -1}", "retry.backoff", "seconds in 0 <= s <= 86400"),
    c("retry: {backoff_max: 1e9}", "retry.backoff_max", "seconds in 0 <= s <= 86400"),
    c("retry: {backoff: 10, backoff_max: 5}", "retry.backoff_max", "backoff <= backoff_max"),
    c("retry: {attempts: 0}", "retry.attempts", "1..=1000"),
    c("retry: {attempts: 100000}", "retry.attempts", "1..=1000"),
    c("devices: {cpu: 0}", "devices", "names no device"),
    c("devices: []", "devices", "names no device"),
    c("devices: {cpu: 100000}", "devices", "more than 1024 workers"),
    c("devices: {cpu: 5000000000}", "devices", "more than 1024 workers"),
    // The model and its files.
    c("variance: fixed_small", "variance", "use auto or learned_range"),
    c("model:\n  preset: DiT-S/2\n  config: {G}/dit/config.json\n  checkpoint: {G}/dit/model.pt\n", "model", "not both"),
    c("model:\n  checkpoint: {G}/dit/model.pt\n", "model", "give `preset`"),
    c(PRESET, "image_size", "required with `model.preset`"),
    c("model:\n  preset: DiT-XXL/2\n  checkpoint: {G}/dit/model.pt\nimage_size: 64", "model.preset", "DiT-XL/2, DiT-XL/4"),
    c("model:\n  preset: DiT-S/2\n  checkpoint: {G}/dit/model.pt\nimage_size: 63", "image_size", "multiple of the VAE's factor 8"),
    c("model:\n  preset: DiT-S/2\n  checkpoint: {G}/dit/model.pt\nimage_size: 65536", "image_size", "more than 16384"),
    c("model:\n  preset: DiT-S/2\n  checkpoint: {G}/dit/model.pt\nimage_size: 64\nnum_classes: 0", "num_classes", "1..="),
    c("image_size: 128", "image_size", "disagrees with input_size 8"),
    c("num_classes: 11", "num_classes", "disagrees with num_classes 10"),
    c("model:\n  config: {G}/dit/config.json\n  checkpoint: {T}/missing.pt\n", "model.checkpoint", "does not exist"),
    c("model:\n  config: {T}/missing.json\n  checkpoint: {G}/dit/model.pt\n", "model.config", "does not exist"),
    c("vae: {T}/no-vae", "vae", "has no config.json"),
    c("out_dir: {T}/a-file", "out_dir", "is a file, not a folder"),
    c("out_dir: {T}/a-file/out", "out_dir", "is a file, not a folder"),
    // A custom DiT config JSON.
    dit("\"hidden_size\": -64", "hidden_size", "not in 1..=65536"),
    dit("\"hidden_size\": 0", "hidden_size", "not in 1..=65536"),
    dit("\"hidden_size\": 66, \"num_heads\": 3", "hidden_size", "multiple of 4"),
    dit("\"depth\": \"two\"", "depth", "not a whole number"),
    dit("\"depth\": 0", "depth", "not in 1..=1024"),
    dit("\"num_heads\": 3", "num_heads", "not divisible"),
    dit("\"patch_size\": 0", "patch_size", "not in 1..="),
    dit("\"input_size\": 7", "input_size", "multiple of patch_size 2"),
    dit("\"input_size\": 100000", "input_size", "not in 1..=1024"),
    dit("\"in_channels\": -4", "in_channels", "not in 1..=1024"),
    dit("\"num_classes\": -1", "num_classes", "not in 1..="),
    dit("\"mlp_ratio\": 0", "mlp_ratio", "(0, 64]"),
    dit("\"mlp_ratio\": 1000", "mlp_ratio", "(0, 64]"),
    dit("\"class_dropout_prob\": 1.0", "class_dropout_prob", "[0, 1)"),
    dit("\"class_dropout_prob\": -0.5", "class_dropout_prob", "[0, 1)"),
    dit("\"learn_sigma\": \"yes\"", "learn_sigma", "true or false"),
    dit("\"hidden\": 64", "hidden", "unknown key"),
    dit("\"hidden_size\": null", "hidden_size", "not a whole number"),
    // A VAE config.json.
    vae("\"scaling_factor\": 0", "scaling_factor", "0.18215"),
    vae("\"scaling_factor\": -1", "scaling_factor", "0.18215"),
    vae("\"scaling_factor\": 1e300", "scaling_factor", "0.18215"),
    vae("\"latent_channels\": -4", "latent_channels", "1..=65536"),
    vae("\"out_channels\": 0", "out_channels", "1..=65536"),
    vae("\"layers_per_block\": 1000", "layers_per_block", "0..=64"),
    vae("\"block_out_channels\": []", "block_out_channels", "non-empty list"),
    vae("\"block_out_channels\": [8, 16, 16, -32]", "block_out_channels", "non-empty list"),
    vae("\"norm_num_groups\": 3", "norm_num_groups", "does not divide"),
    // The SiT family and its flow samplers: keys of the other kind are refused.
    c("sampler: ode", "sampler", "set `model.family: sit`"),
    c("solver: heun", "solver", "flow samplers"),
    c("path_type: cosine", "path_type", "`sampler: sde` only"),
    c("guidance_interval: [0, 0.7]", "guidance_interval", "flow samplers"),
    c(sit!("sampler: ddpm"), "sampler", "`ode` or `sde`"),
    c(sit!("beta_schedule: linear"), "beta_schedule", "ddpm and ddim only"),
    c(sit!("variance: fixed_small"), "variance", "ddpm and ddim only"),
    c(sit!("cfg_channels: 3"), "cfg_channels", "all latent channels"),
    c(sit!("sampler: sde\nsolver: heun"), "solver", "`ode`, `sit-ode` and `sit-sde` only"),
    c(sit!("path_type: cosine"), "path_type", "`sampler: sde` only"),
    c(sit!("sampler: sde\nguidance_interval: [0.8, 0.2]"), "guidance_interval", "low <= high"),
    c(sit!("steps: ddim10"), "steps", "no respacing"),
    // SiT's own samplers and their keys.
    c("sampler: sit-ode", "sampler", "set `model.family: sit`"),
    c(sit!("sampler: sit-sde\ndiffusion_form: SBDM"), "diffusion_form", "infinite at t = 0"),
    c(sit!("sampler: sit-sde\ndiffusion_form: cosine"), "diffusion_form", "not a diffusion form"),
    c(sit!("sampler: sit-sde\nlast_step: none\nlast_step_size: 0.04"), "last_step_size", "no effect"),
    c(sit!("sampler: sit-sde\nlast_step_size: 1.5"), "last_step_size", "(0, 1)"),
    c(sit!("sampler: sit-sde\nlast_step: last"), "last_step", "tweedie"),
    c(sit!("sampler: sit-sde\ndiffusion_norm: -1"), "diffusion_norm", ">= 0"),
    c(sit!("sampler: sit-ode\nsteps: 1"), "steps", "at least"),
    c(sit!("sampler: sit-ode\nguidance_interval: [0.7, 0.2]"), "guidance_interval", "low <= high"),
    c(sit!("sampler: sit-sde\npath_type: cosine"), "path_type", "Linear path"),
    c(sit!("sampler: sit-ode\ndiffusion_form: sigma"), "diffusion_form", "`sampler: sit-sde` only"),
    c(sit!("sampler: sde\nlast_step: mean"), "last_step", "`sampler: sit-sde` only"),
    c(sit!("sampler: sit-ode\ncfg_channels: 9"), "cfg_channels", "1..=4"),
    c(sit!("eta: 0.5"), "eta", "sampler: ddim"),
    c("latent_scale: [1, 2]", "latent_scale", "one per latent channel (4)"),
    c("latent_scale: [1, 2, 0, 4]", "latent_scale", "non-zero"),
    c("latent_bias: .nan", "latent_bias", "finite"),
    c("latent_bias: abc", "latent_bias", "not a number"),
    c("latent_scale: []", "latent_scale", "one number per latent channel"),
    c("model:\n  family: sit\n  preset: DiT-S/2\n  checkpoint: {G}/dit/model.pt\nimage_size: 64\n", "model.preset", "SiT-XL/2"),
    // TorchScript models and VAE decoders (docs/models.md).
    c("model:\n  config: {G}/dit/config.json\n  checkpoint: {G}/dit/model.pt\n  torchscript: {G}/../torchscript/dit.ts\n", "model.torchscript", "keep one"),
    c("model:\n  config: {G}/dit/config.json\n", "model.checkpoint", "or `torchscript: FILE` (a torch.jit.save module)"),
    c("model:\n  config: {G}/dit/config.json\n  torchscript: {T}/nope.ts\n", "model.torchscript", "does not exist"),
    c("model:\n  config: {G}/dit/config.json\n  torchscript: {T}\n", "model.torchscript", "name the model file in it"),
    c("vae: {torchscript: {G}/../torchscript/vae-decoder.ts, downsample: 2, latent_channels: 4}", "latent_scale", "has no scaling_factor"),
    c("vae: {torchscript: {G}/../torchscript/vae-decoder.ts, downsample: 2, latent_channels: 4, scale: 1}", "vae", "unknown key \"scale\"; the keys are torchscript, downsample, latent_channels"),
    c("vae: {torchscript: {G}/../torchscript/vae-decoder.ts, downsample: 128, latent_channels: 4}\nlatent_scale: 1", "vae.downsample", "power of two in 1..=64"),
    c("vae: {torchscript: {G}/../torchscript/vae-decoder.ts, downsample: 2, latent_channels: 8}\nlatent_scale: 1", "vae.latent_channels", "differs from the model's in_channels 4"),
    c("vae: {torchscript: {G}/../torchscript/vae-decoder.ts, downsample: -2, latent_channels: 4}", "vae", "not a positive whole number"),
    c("vae: {torchscript: {T}/nope.ts, downsample: 2, latent_channels: 4}\nlatent_scale: 1", "vae.torchscript", "is not a file"),
    c("vae: [1]", "vae", "is not a VAE"),
    // evaluate: (docs/evaluation.md).
    c("evaluate:\n  reference: {T}/nope.npz", "evaluate.reference", "no such file; give the reference batch npz"),
    c("evaluate:\n  reference: {G}/../eval/reference.npz\n  inception: {T}/nope.pth", "evaluate.inception", "remove the key to have fidshard download them"),
    c("evaluate:\n  reference: {G}/../eval/reference.npz\n  reference_sha256: abc", "evaluate.reference_sha256", "expected 64 hexadecimal digits"),
    c("evaluate:\n  reference: {G}/../eval/reference.npz\n  inception_sha256: 12", "evaluate.inception_sha256", "expected 64 hexadecimal digits"),
    c("evaluate:\n  reference: https://127.0.0.1:9/never-fetched/ref.npz", "evaluate.reference", "download it with `fidshard fetch`"),
    c("evaluate:\n  reference: s3://bucket/ref.npz", "evaluate.reference", "`s3://` is not supported"),
    c("evaluate:\n  reference: acme/no-such-refs@v1/ref.npz", "evaluate.reference", "not in the local Hugging Face cache"),
    c("evaluate:\n  reference: {G}/../eval/reference.npz\n  inception: https://127.0.0.1:9/never-fetched/w.pth", "evaluate.inception", "download it with `fidshard fetch`"),
    // Partitions from a scheduler, and the hooks of `notify:`.
    c("partitions: k8s", "partitions", "write `partitions: k8s/N`"),
    c("partitions: 2/4", "partitions", "`partitions: k8s/N` (a Kubernetes Indexed Job"),
    c("partitions: k8s/0", "partitions", "from 1 to 100000"),
    c("notify: {on: [complete]}", "notify", "give `command`"),
    c("notify: {webhook: ftp://example.org/x}", "notify.webhook", "not an http:// or https:// URL"),
    c("notify: {command: \"true\", on: []}", "notify.on", "complete, failed, interrupted"),
];

#[test]
fn every_error_branch_names_its_key_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a-file"), "x").unwrap();
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a-file"), "x").unwrap();
        write_models(&dir, case.dit, case.vae);
        let yaml = yaml_with(case.yaml);
        let err = match load_in(&dir, "job.yaml", &yaml) {
            Ok(_) => {
                failures.push(format!("#{i} {:?}: loaded", case.yaml));
                continue;
            }
            Err(e) => e,
        };
        let msg = format!("{err:#}");
        let file = if !case.dit.is_empty() {
            "dit.json"
        } else if !case.vae.is_empty() {
            "config.json"
        } else {
            "job.yaml"
        };
        let ok = code_of(&err) == Exit::InvalidInput
            && !msg.contains('\n')
            && msg.contains(&format!("`{}`", case.key))
            && msg.contains(case.fix)
            && msg.contains(file);
        if !ok {
            failures.push(format!(
                "#{i} {:?} (key `{}`, fix {:?}):\n    {msg}",
                case.yaml, case.key, case.fix
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn the_base_job_loads_with_typed_run_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let job = load_in(tmp.path(), "j.yaml", &yaml_with("")).unwrap();
    assert_eq!(
        job.run,
        RunSettings {
            devices: Devices::Auto,
            shard_size: 1000,
            retry: RetryPolicy::default(),
            stall_timeout: Duration::from_secs(600),
            progress_interval: Duration::from_secs(60),
        }
    );
    assert_eq!(job.plan().len(), 1);
    assert_eq!(job.shard_count(), 1);
    // `runs/<name>` under the current directory, not beside the YAML.
    assert_eq!(job.out_dir, std::path::PathBuf::from("runs/j"));
    assert_eq!(job.settings.sampler, fidshard_core::SamplerKind::Ddpm);
    assert_eq!(job.settings.precision, fidshard_core::Precision::Fp32);
    assert_eq!(job.settings.steps, "2");

    let job = load_in(
        tmp.path(),
        "k.yaml",
        &yaml_with(
            "sampler: ddim\neta: 0.5\nbeta_schedule: squaredcos_cap_v2\nprecision: bf16\n\
             variance: learned_range\nsteps: ddim2\nshard_size: 3\nnum_samples: 1000000000\n\
             devices: [0, 1]\nstall_timeout: 0.25\nretry: {attempts: 5, backoff: 0, backoff_max: 1.5}\n\
             cfg_scale: 10000\ncfg_channels: all\nout_dir: {T}/a-file-not-yet/x",
        )
        .replace("shard_size: 3", "shard_size: 100"),
    )
    .unwrap();
    assert_eq!(job.run.stall_timeout, Duration::from_millis(250));
    assert_eq!(job.run.retry.backoff, Duration::ZERO);
    assert_eq!(job.run.retry.backoff_max, Duration::from_millis(1500));
    assert_eq!(job.run.devices, Devices::Gpus(vec![0, 1]));
    assert_eq!(job.shard_count(), limits::MAX_SHARDS);
    assert_eq!(job.shard_of(250), 2);
    assert_eq!(
        job.settings.beta_schedule,
        fidshard_core::diffusion::BetaSchedule::SquaredCosCapV2
    );
    assert_eq!(job.settings.precision, fidshard_core::Precision::Bf16);
}

#[test]
fn a_bom_is_skipped_and_an_empty_or_odd_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let text = yaml_with("").replace("{G}", &golden().display().to_string());
    let p = tmp.path().join("bom.yaml");
    std::fs::write(&p, format!("\u{feff}{text}")).unwrap();
    Job::load(&p).unwrap();

    let refused = |name: &str, bytes: &[u8], fragment: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = Job::load(&p)
            .err()
            .unwrap_or_else(|| panic!("{name} loaded"));
        let msg = format!("{e:#}");
        assert_eq!(code_of(&e), Exit::InvalidInput, "{msg}");
        assert!(
            msg.contains(name) && msg.contains(fragment),
            "{name}: {msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    };
    refused("empty.yaml", b"", "empty");
    refused("comments.yaml", b"# nothing\n\n", "empty");
    refused("list.yaml", b"- a\n- b\n", "mapping of keys");
    refused("latin1.yaml", b"num_samples: 8 # \xe9\n", "not UTF-8");
    refused("syntax.yaml", b"model: {\n", "line");
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    refused("deep.yaml", deep.as_bytes(), "nested deeper than 32");
    let mut indented = String::new();
    for i in 0..40 {
        indented += &format!("{}k{i}:\n", " ".repeat(i));
    }
    refused(
        "indented.yaml",
        indented.as_bytes(),
        "nested deeper than 32",
    );
    let big = "# padding\n".repeat(120_000);
    refused("big.yaml", big.as_bytes(), "larger than 1024 KiB");
    let dir = tmp.path().join("folder.yaml");
    std::fs::create_dir(&dir).unwrap();
    let e = Job::load(&dir).err().unwrap();
    assert!(format!("{e:#}").contains("is a folder"), "{e:#}");
    let e = Job::load(&tmp.path().join("missing.yaml")).err().unwrap();
    assert_eq!(code_of(&e), Exit::InvalidInput);
}

#[test]
fn a_non_utf8_path_is_an_input_error() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp
        .path()
        .join(std::ffi::OsStr::from_bytes(b"job\xff.yaml"));
    let text = yaml_with("").replace("{G}", &golden().display().to_string());
    std::fs::write(&p, text).unwrap();
    let e = Job::load(&p).err().unwrap();
    assert_eq!(code_of(&e), Exit::InvalidInput);
    assert!(format!("{e:#}").contains("not valid UTF-8"), "{e:#}");
}

#[test]
fn the_depth_scan_counts_blocks_items_and_brackets_but_not_quotes() {
    assert_eq!(too_deep("a:\n  b:\n    c: [1, {d: 2}]\n", 5), None);
    assert_eq!(too_deep("a:\n  b:\n    c: [1, {d: 2}]\n", 4), Some(3));
    assert_eq!(too_deep("- - - - x\n", 3), Some(1));
    assert_eq!(
        too_deep("a: \"[[[[[[\"\nb: '{{{{{{'\nc: x # [[[[[[\n", 2),
        None
    );
    assert_eq!(too_deep("a: [\n  [\n    [\n", 3), Some(3));
    assert_eq!(too_deep("a:\n  b: 1\nc:\n  d: 1\n", 2), None);
}

#[test]
fn a_sit_job_takes_repa_defaults_and_dit_fingerprints_stay_as_they_were() {
    use crate::job::fingerprint::Fingerprint;
    use fidshard_core::flow::{ModelFamily, PathType, Pixels, Solver};
    let tmp = tempfile::tempdir().unwrap();
    let job = load_in(tmp.path(), "s.yaml", &yaml_with(sit!(""))).unwrap();
    let s = &job.settings;
    assert_eq!(s.family, ModelFamily::Sit);
    assert_eq!(s.sampler, fidshard_core::SamplerKind::Ode);
    assert_eq!(s.cfg_channels, fidshard_core::CfgChannels::All);
    assert_eq!(s.pixels, Pixels::Repa);
    assert_eq!(s.flow.guidance_interval, [0.0, 1.0]);
    assert!(!s.dit.learn_sigma && !s.flow.qk_norm);
    let fp = Fingerprint::settings_only(&job);
    assert_eq!(fp.get("family"), Some("sit"));
    assert_eq!(fp.get("pixels"), Some("repa"));

    let yaml = yaml_with(sit!(
        "sampler: sde\npath_type: cosine\nguidance_interval: [0.1, 0.7]\npixels: dit\nsteps: 250"
    ));
    let job = load_in(tmp.path(), "t.yaml", &yaml).unwrap();
    let f = &job.settings.flow;
    assert_eq!((f.path_type, f.solver), (PathType::Cosine, Solver::Euler));
    assert_eq!(f.guidance_interval, [0.1, 0.7]);
    assert_eq!(job.settings.pixels, Pixels::Dit);
    let fp2 = Fingerprint::settings_only(&job);
    assert_eq!(fp2.get("guidance_interval"), Some("[0.1, 0.7]"));
    assert_eq!(fp2.get("pixels"), None);

    // SiT's own samplers: SiT's defaults (3 channels guided, DiT's pixels).
    let job = load_in(tmp.path(), "o.yaml", &yaml_with(sit!("sampler: sit-ode"))).unwrap();
    let s = &job.settings;
    assert_eq!(s.cfg_channels, fidshard_core::CfgChannels::First(3));
    assert_eq!(s.pixels, Pixels::Dit);
    assert_eq!(Fingerprint::settings_only(&job).get("last_step"), None);
    let yaml = yaml_with(sit!(
        "sampler: sit-sde\nsolver: heun\ndiffusion_form: decreasing\nlast_step: Tweedie\nsteps: 20"
    ));
    let job = load_in(tmp.path(), "e.yaml", &yaml).unwrap();
    let sde = &job.settings.flow.sit_sde;
    use fidshard_core::sit_transport::{DiffusionForm, LastStep};
    assert_eq!(job.settings.flow.solver, Solver::Heun);
    assert_eq!(
        (
            sde.diffusion_form,
            sde.diffusion_norm,
            sde.last_step,
            sde.last_step_size
        ),
        (DiffusionForm::Decreasing, 1.0, LastStep::Tweedie, 0.04)
    );
    let fp = Fingerprint::settings_only(&job);
    assert_eq!(fp.get("diffusion_form"), Some("decreasing"));
    assert_eq!(fp.get("last_step"), Some("tweedie"));
    let job = load_in(
        tmp.path(),
        "n.yaml",
        &yaml_with(sit!("sampler: sit-sde\nlast_step: none")),
    )
    .unwrap();
    assert_eq!(job.settings.flow.sit_sde.last_step_size, 0.0);

    // A DiT job's fingerprint has exactly the keys it had before the SiT family existed.
    let job = load_in(tmp.path(), "d.yaml", &yaml_with("")).unwrap();
    let fp = Fingerprint::settings_only(&job);
    for key in [
        "family",
        "pixels",
        "solver",
        "path_type",
        "guidance_interval",
        "qk_norm",
    ] {
        assert_eq!(fp.get(key), None, "{key}");
    }
}

#[test]
fn a_torchscript_job_reads_shape_facts_and_old_settings_stay_native() {
    use crate::job::fingerprint::Fingerprint;
    use fidshard_core::{ModelFormat, ScriptVae};
    let tmp = tempfile::tempdir().unwrap();
    // Only the shape facts, and keys of another code base's config, which are ignored.
    std::fs::write(
        tmp.path().join("shapes.json"),
        r#"{"input_size": 8, "num_classes": 10, "model": "LightningDiT-XL/1"}"#,
    )
    .unwrap();
    let yaml = yaml_with(
        "model:\n  config: shapes.json\n  torchscript: ../torchscript-copy.ts\n\
         vae: {torchscript: ../decoder.ts, downsample: 2, latent_channels: 4}\nlatent_scale: 1.5\n",
    );
    let sub = tmp.path().join("jobs");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::rename(tmp.path().join("shapes.json"), sub.join("shapes.json")).unwrap();
    for f in ["torchscript-copy.ts", "decoder.ts"] {
        std::fs::write(tmp.path().join(f), b"ts").unwrap();
    }
    let job = load_in(&sub, "j.yaml", &yaml).unwrap();
    let s = &job.settings;
    assert_eq!(s.model_format, ModelFormat::Torchscript);
    assert_eq!(s.checkpoint, tmp.path().join("torchscript-copy.ts"));
    assert_eq!(s.vae, tmp.path().join("decoder.ts"));
    let shape = ScriptVae {
        downsample: 2,
        latent_channels: 4,
    };
    assert_eq!(s.vae_script, Some(shape));
    assert_eq!((s.dit.input_size, s.dit.num_classes), (8, 10));
    assert!(
        s.dit.learn_sigma,
        "a DiT-family model learns its variance unless told"
    );
    assert_eq!(job.image_size, 16);
    let fp = Fingerprint::settings_only(&job);
    assert_eq!(fp.get("model_format"), Some("torchscript"));

    // Settings of older coordinators (without the new keys) still parse, as native.
    let mut json = serde_json::to_value(s).unwrap();
    let obj = json.as_object_mut().unwrap();
    obj.remove("model_format");
    obj.remove("vae_script");
    let old: fidshard_core::SamplerSettings = serde_json::from_value(json).unwrap();
    assert_eq!(old.model_format, ModelFormat::Native);
    assert_eq!(old.vae_script, None);
}

#[test]
fn evaluate_takes_paths_hub_references_and_urls_with_their_sha256() {
    use crate::job::evaluation::{hand_placed_inception, INCEPTION_SHA256, INCEPTION_URL};
    let tmp = tempfile::tempdir().unwrap();
    let reference = normalize(&golden().join("../eval/reference.npz"));
    let sha = "AB".repeat(32);
    let yaml = yaml_with(&format!(
        "evaluate:\n  reference: {}\n  reference_sha256: sha256:{sha}\n  metrics: [fid]\n",
        reference.display()
    ));
    let job = load_in(tmp.path(), "job.yaml", &yaml).unwrap();
    let e = job.evaluate.as_ref().unwrap();
    assert_eq!(e.reference, reference);
    assert_eq!(
        e.spec.reference_sha256.as_deref(),
        Some(&*format!("sha256:{sha}"))
    );
    assert_eq!(e.spec.inception, None);
    let spec = Job::weights_spec(&tmp.path().join("job.yaml")).unwrap();
    let [r, i] = &spec.evaluate[..] else {
        panic!("{:?}", spec.evaluate)
    };
    assert_eq!(
        (r.key, r.sha256_key, r.sha256.clone()),
        (
            "evaluate.reference",
            "evaluate.reference_sha256",
            Some("ab".repeat(32))
        )
    );
    assert_eq!((i.key, i.is_default), ("evaluate.inception", true));
    if !hand_placed_inception().is_file() {
        // The default: torch-fidelity's release, its published sha256 pinned.
        assert_eq!(i.value, PathBuf::from(INCEPTION_URL));
        assert_eq!(i.sha256.as_deref(), Some(INCEPTION_SHA256));
        assert!(INCEPTION_SHA256.starts_with("6726825d"));
        assert_eq!(
            e.inception.file_name().unwrap(),
            "weights-inception-2015-12-05-6726825d.pth"
        );
    }

    // Without evaluate: no files to fetch.
    std::fs::write(
        tmp.path().join("plain.yaml"),
        yaml_with("").replace("{G}", &golden().display().to_string()),
    )
    .unwrap();
    assert!(Job::weights_spec(&tmp.path().join("plain.yaml"))
        .unwrap()
        .evaluate
        .is_empty());

    // A URL not downloaded yet: no error without weights (plan, status, config), where the
    // download will land, and said so.
    let url = "https://127.0.0.1:9/never-fetched/VIRTUAL_imagenet256_labeled.npz";
    let yaml = yaml_with(&format!(
        "evaluate:\n  reference: {url}\n  inception: {}\n  inception_sha256: {}\n",
        golden().join("dit/model.pt").display(),
        "0".repeat(64)
    ))
    .replace("{G}", &golden().display().to_string());
    let path = tmp.path().join("remote.yaml");
    std::fs::write(&path, yaml).unwrap();
    let job = Job::load_without_weights(&path).unwrap();
    let e = job.evaluate.as_ref().unwrap();
    assert!(
        e.reference.ends_with("VIRTUAL_imagenet256_labeled.npz"),
        "{e:?}"
    );
    assert_eq!(e.spec.reference, PathBuf::from(url));
    assert_eq!(e.spec.inception, Some(golden().join("dit/model.pt")));
    assert_eq!(e.spec.inception_sha256, Some("0".repeat(64)));
    assert!(
        e.not_local.len() == 1 && e.not_local[0].contains("`evaluate.reference`"),
        "{:?}",
        e.not_local
    );
    let spec = Job::weights_spec(&path).unwrap();
    assert_eq!(spec.evaluate[1].sha256, Some("0".repeat(64)));
    assert!(!spec.evaluate[1].is_default);
}
