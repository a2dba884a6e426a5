//! `OUT/job.resolved.yaml`: the job as fidshard runs it, every default filled in, paths made
//! absolute, the `--set` overrides applied; itself a job file (`fidshard config job.yaml >
//! x.yaml; fidshard run x.yaml` runs the same job, same fingerprint, same out dir, from any
//! folder). `run` writes it beside the results, so what produced an npz is always on disk;
//! `fidshard config` prints it. Needs no weights.
use crate::job::config::Job;
use crate::job::devices::Devices;
use anyhow::Result;
use fidshard_core::dit_config::CfgChannels;
use fidshard_core::BatchSize;
use serde_yaml::{Mapping, Value};
use std::path::Path;

fn path(p: &Path) -> Value {
    Value::String(p.to_string_lossy().into_owned())
}

fn batch(b: BatchSize) -> Value {
    match b {
        BatchSize::Fixed(n) => Value::from(n as u64),
        BatchSize::Auto => Value::from("auto"),
    }
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        if !v.is_null() {
            m.insert(Value::from(k), v);
        }
    }
    Value::Mapping(m)
}

/// The job as a job file: every key of docs/configuration.md, defaults filled in.
fn job_document(job: &Job) -> Value {
    let s = &job.settings;
    let m = &job.model_spec;
    let devices = match &job.run.devices {
        Devices::Auto => Value::from("auto"),
        Devices::Gpus(ids) => Value::Sequence(ids.iter().map(|&i| Value::from(i)).collect()),
        Devices::Cpu(n) => map(vec![("cpu", Value::from(*n))]),
    };
    let mut model = vec![
        ("preset", m.preset.clone().map_or(Value::Null, Value::from)),
        ("config", m.config.as_deref().map_or(Value::Null, path)),
        (
            match s.model_format {
                fidshard_core::ModelFormat::Native => "checkpoint",
                fidshard_core::ModelFormat::Torchscript => "torchscript",
            },
            path(&m.checkpoint),
        ),
        ("sha256", m.sha256.clone().map_or(Value::Null, Value::from)),
    ];
    if s.family != fidshard_core::ModelFamily::Dit {
        model.insert(0, ("family", Value::from(s.family.as_str())));
    }
    let model = map(model);
    let out_dir = std::path::absolute(&job.out_dir).unwrap_or_else(|_| job.out_dir.clone());
    let mut keys = vec![
        ("model", model),
        (
            "vae",
            match s.vae_script {
                None => path(&m.vae),
                Some(v) => map(vec![
                    ("torchscript", path(&m.vae)),
                    ("downsample", Value::from(v.downsample)),
                    ("latent_channels", Value::from(v.latent_channels)),
                ]),
            },
        ),
        ("num_classes", Value::from(s.dit.num_classes)),
        ("image_size", Value::from(job.image_size)),
        ("num_samples", Value::from(s.num_samples)),
        ("seed", Value::from(s.seed)),
        ("labels", Value::from(s.labels.as_str())),
        ("cfg_scale", Value::from(s.cfg_scale)),
        (
            "cfg_channels",
            match s.cfg_channels {
                CfgChannels::First(n) => Value::from(n),
                CfgChannels::All => Value::from("all"),
            },
        ),
        ("sampler", Value::from(s.sampler.as_str())),
        ("steps", Value::from(s.steps.clone())),
    ];
    keys.extend(sampler_keys(s));
    keys.extend(vec![
        ("precision", Value::from(s.precision.as_str())),
        ("batch_size", batch(s.batch_size)),
        ("vae_batch_size", batch(s.vae_batch_size)),
        ("out_dir", path(&out_dir)),
        ("devices", devices),
        ("shard_size", Value::from(job.run.shard_size)),
        (
            "retry",
            map(vec![
                ("attempts", Value::from(job.run.retry.attempts)),
                ("backoff", Value::from(job.run.retry.backoff.as_secs_f64())),
                (
                    "backoff_max",
                    Value::from(job.run.retry.backoff_max.as_secs_f64()),
                ),
            ]),
        ),
        (
            "stall_timeout",
            Value::from(job.run.stall_timeout.as_secs_f64()),
        ),
        (
            "progress_interval",
            Value::from(job.run.progress_interval.as_secs_f64()),
        ),
        (
            "partitions",
            job.partitions_from
                .map_or(Value::Null, |s| Value::from(s.as_yaml())),
        ),
    ]);
    if let Some(e) = &job.evaluate {
        let sha = |s: &Option<String>| s.clone().map_or(Value::Null, Value::from);
        let mut section = vec![
            ("reference", path(&e.spec.reference)),
            ("reference_sha256", sha(&e.spec.reference_sha256)),
        ];
        if let Some(p) = &e.spec.inception {
            section.push(("inception", path(p)));
        }
        section.push(("inception_sha256", sha(&e.spec.inception_sha256)));
        section.push((
            "metrics",
            Value::Sequence(e.metrics.iter().map(|m| Value::from(m.as_str())).collect()),
        ));
        keys.push(("evaluate", map(section)));
    }
    if let Some(n) = &job.notify {
        let mut section = Vec::new();
        if let Some(c) = &n.command {
            section.push(("command", Value::from(c.as_str())));
        }
        if let Some(w) = &n.webhook {
            section.push(("webhook", Value::from(w.as_str())));
        }
        section.push((
            "on",
            Value::Sequence(n.on.iter().map(|e| Value::from(e.as_str())).collect()),
        ));
        keys.push(("notify", map(section)));
    }
    map(keys)
}

/// `guidance_interval` of a flow job.
fn interval(s: &fidshard_core::SamplerSettings) -> (&'static str, Value) {
    let [low, high] = s.flow.guidance_interval;
    (
        "guidance_interval",
        Value::Sequence(vec![Value::from(low), Value::from(high)]),
    )
}

/// The keys of the job's sampler only: a flow job refuses the diffusion's keys and the other
/// way round, and the resolved file must load again.
fn sampler_keys(s: &fidshard_core::SamplerSettings) -> Vec<(&'static str, Value)> {
    use fidshard_core::SamplerKind;
    let mut keys = Vec::new();
    match s.sampler {
        SamplerKind::Ddpm | SamplerKind::Ddim => {
            keys.push(("eta", Value::from(s.eta)));
            keys.push(("beta_schedule", Value::from(s.beta_schedule.name())));
            keys.push(("variance", Value::from(s.variance.name())));
        }
        SamplerKind::Ode | SamplerKind::Sde => {
            if s.sampler == SamplerKind::Ode {
                keys.push(("solver", Value::from(s.flow.solver.as_str())));
            } else {
                keys.push(("path_type", Value::from(s.flow.path_type.as_str())));
            }
            let [low, high] = s.flow.guidance_interval;
            keys.push((
                "guidance_interval",
                Value::Sequence(vec![Value::from(low), Value::from(high)]),
            ));
        }
        SamplerKind::SitOde => {
            keys.push(("solver", Value::from(s.flow.solver.as_str())));
            keys.push(interval(s));
        }
        SamplerKind::SitSde => {
            let sde = &s.flow.sit_sde;
            keys.push(("solver", Value::from(s.flow.solver.as_str())));
            keys.push(interval(s));
            keys.push(("diffusion_form", Value::from(sde.diffusion_form.as_str())));
            keys.push(("diffusion_norm", Value::from(sde.diffusion_norm)));
            keys.push(("last_step", Value::from(sde.last_step.as_str())));
            if sde.last_step != fidshard_core::LastStep::None {
                keys.push(("last_step_size", Value::from(sde.last_step_size)));
            }
        }
    }
    if s.pixels != fidshard_core::Pixels::Dit || s.sampler.is_flow() {
        keys.push(("pixels", Value::from(s.pixels.as_str())));
    }
    for (key, v) in [
        ("latent_scale", &s.latent_scale),
        ("latent_bias", &s.latent_bias),
    ] {
        if let Some(v) = v {
            keys.push((
                key,
                Value::Sequence(v.iter().map(|&x| Value::from(x)).collect()),
            ));
        }
    }
    keys
}

/// The resolved job as YAML text (`fidshard config`'s output, `OUT/job.resolved.yaml`): a job file, with where it came from in comments.
pub(crate) fn resolved_yaml(job: &Job) -> Result<String> {
    let overrides: Vec<String> = crate::job::config::overrides::global()
        .iter()
        .map(|o| format!("#   --set {}\n", one_line(&o.text)))
        .collect();
    let overrides = if overrides.is_empty() {
        String::new()
    } else {
        format!("# with the overrides\n{}", overrides.concat())
    };
    Ok(format!(
        "# The resolved job (fidshard {}): every default filled in, paths absolute; a job file \
         that runs the same job.\n# from {}\n{overrides}# {} shards of {} samples\n{}",
        env!("CARGO_PKG_VERSION"),
        one_line(&job.source.display().to_string()),
        job.total_shard_count(),
        job.run.shard_size,
        serde_yaml::to_string(&job_document(job))?
    ))
}

/// Text for a comment line: no line break can end the comment early.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::fingerprint::Fingerprint;

    /// A job of TorchScript files resolves to a file that names them the same way and loads
    /// as the same job.
    #[test]
    fn a_torchscript_job_resolves_to_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let g = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        for f in ["m.ts", "d.ts"] {
            std::fs::write(tmp.path().join(f), b"ts").unwrap();
        }
        let job = tmp.path().join("job.yaml");
        std::fs::write(
            &job,
            format!(
                "model:\n  config: {}\n  torchscript: m.ts\n\
                 vae: {{torchscript: d.ts, downsample: 2, latent_channels: 4}}\n\
                 latent_scale: 1.5\nnum_samples: 4\n",
                g.join("demo-digits/dit/config.json").display()
            ),
        )
        .unwrap();
        let job = Job::load(&job).unwrap();
        let text = resolved_yaml(&job).unwrap();
        assert!(text.contains("  torchscript: "), "{text}");
        assert!(text.contains("downsample: 2"), "{text}");
        let path = tmp.path().join("resolved.yaml");
        std::fs::write(&path, &text).unwrap();
        let again = Job::load(&path).unwrap();
        assert_eq!(
            Fingerprint::settings_only(&again),
            Fingerprint::settings_only(&job),
            "{text}"
        );
        assert_eq!(again.settings.checkpoint, job.settings.checkpoint);
        assert_eq!(again.settings.vae, job.settings.vae);
    }
}
