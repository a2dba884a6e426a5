//! The job fingerprint: everything that changes the pixels of an image or the layout of the
//! shard records, as `name -> value` strings. A resumed run must have the same fingerprint as the
//! run that made the out dir, or the finished shards would mix two different jobs.
//!
//! Deliberately absent: `batch_size`, `vae_batch_size`, `devices`, `retry`, `stall_timeout` and
//! `out_dir`. Images never depend on them (docs/architecture.md, batch invariance), so changing
//! them between runs (e.g. resuming a 4-GPU job on 2 GPUs) must keep the finished work.
//!
//! Weights are identified by content (size + CRC32 of the whole file) plus the file name, never
//! by path or mtime: a checkpoint copied to a new cluster keeps its identity, one retrained in
//! place under the same name does not.
use crate::job::config::Job;
use anyhow::{Context, Result};
use fidshard_core::dit_config::CfgChannels;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One difference between two fingerprints: `(key, old value, new value)`; a key present on one
/// side only has `(none)` on the other.
pub(crate) type Change = (String, String, String);

const ABSENT: &str = "(none)";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Fingerprint(BTreeMap<String, String>);

impl Fingerprint {
    /// Hashes the checkpoint and the VAE files (seconds for GB-sized checkpoints) and collects
    /// the pixel-relevant settings.
    pub fn compute(job: &Job) -> Result<Fingerprint> {
        let s = &job.settings;
        let mut fp = Self::settings_only(job);
        let weights = fidshard_core::identity::WeightsIdentity::compute(&s.checkpoint, &s.vae)
            .context("cannot read the weights to fingerprint them")?;
        fp.insert("checkpoint", weights.checkpoint);
        fp.insert("vae", weights.vae);
        Ok(fp)
    }

    /// Everything but the weights' identities (no file is read): for `status`, which compares
    /// a YAML with what an out dir recorded in milliseconds.
    pub fn settings_only(job: &Job) -> Fingerprint {
        let s = &job.settings;
        let mut fp = Fingerprint::default();
        fp.insert("dit", serde_json::to_string(&s.dit).unwrap_or_default());
        fp.insert("sampler", s.sampler.as_str());
        fp.insert("steps", s.steps.as_str());
        // `{}` of an f64 is the shortest string that parses back to the same value.
        fp.insert("eta", s.eta.to_string());
        fp.insert("cfg_scale", s.cfg_scale.to_string());
        fp.insert(
            "cfg_channels",
            match s.cfg_channels {
                CfgChannels::First(n) => n.to_string(),
                CfgChannels::All => "all".to_string(),
            },
        );
        fp.insert("beta_schedule", s.beta_schedule.name());
        fp.insert("variance", s.variance.name());
        fp.insert("seed", s.seed.to_string());
        fp.insert("num_samples", s.num_samples.to_string());
        fp.insert("image_size", job.image_size.to_string());
        fp.insert("labels", s.labels.as_str());
        fp.insert("precision", s.precision.as_str());
        // The SiT family's keys, absent for DiT jobs so that their fingerprints stay as they were.
        if s.family != fidshard_core::ModelFamily::Dit {
            let f = &s.flow;
            fp.insert("family", s.family.as_str());
            fp.insert("qk_norm", f.qk_norm.to_string());
            fp.insert("solver", f.solver.as_str());
            fp.insert("path_type", f.path_type.as_str());
            let [low, high] = f.guidance_interval;
            fp.insert("guidance_interval", format!("[{low}, {high}]"));
            if s.sampler == fidshard_core::SamplerKind::SitSde {
                let sde = &f.sit_sde;
                fp.insert("diffusion_form", sde.diffusion_form.as_str());
                fp.insert("diffusion_norm", sde.diffusion_norm.to_string());
                fp.insert("last_step", sde.last_step.as_str());
                fp.insert("last_step_size", sde.last_step_size.to_string());
            }
        }
        // TorchScript files (docs/models.md), absent for state_dicts and diffusers folders so
        // that those fingerprints stay as they were.
        if s.model_format != fidshard_core::ModelFormat::Native {
            fp.insert("model_format", s.model_format.as_str());
        }
        if let Some(v) = s.vae_script {
            fp.insert(
                "vae_format",
                format!(
                    "torchscript, downsample {}, latent_channels {}",
                    v.downsample, v.latent_channels
                ),
            );
        }
        if s.pixels != fidshard_core::Pixels::Dit {
            fp.insert("pixels", s.pixels.as_str());
        }
        for (key, v) in [
            ("latent_scale", &s.latent_scale),
            ("latent_bias", &s.latent_bias),
        ] {
            if let Some(v) = v {
                let v: Vec<String> = v.iter().map(f64::to_string).collect();
                fp.insert(key, format!("[{}]", v.join(", ")));
            }
        }
        // Not a pixel setting, but the shard records (ids, CRC lists) are laid out by it.
        fp.insert("shard_size", job.run.shard_size.to_string());
        fp
    }

    pub fn insert(&mut self, key: &str, value: impl Into<String>) {
        self.0.insert(key.to_string(), value.into());
    }

    /// The weights' identities this fingerprint recorded (what each worker must load).
    pub fn weights(&self) -> Option<fidshard_core::identity::WeightsIdentity> {
        Some(fidshard_core::identity::WeightsIdentity {
            checkpoint: self.get("checkpoint")?.to_string(),
            vae: self.get("vae")?.to_string(),
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// What changed from `self` (the old job) to `other` (the new one), in key order.
    pub fn diff(&self, other: &Fingerprint) -> Vec<Change> {
        let keys: std::collections::BTreeSet<&String> =
            self.0.keys().chain(other.0.keys()).collect();
        keys.into_iter()
            .filter_map(|k| {
                let old = self.get(k);
                let new = other.get(k);
                (old != new).then(|| {
                    (
                        k.clone(),
                        old.unwrap_or(ABSENT).to_string(),
                        new.unwrap_or(ABSENT).to_string(),
                    )
                })
            })
            .collect()
    }
}

/// `seed 0 -> 1, steps 250 -> 100` for messages.
pub(crate) fn describe(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|(k, old, new)| format!("{k} {old} -> {new}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fp(pairs: &[(&str, &str)]) -> Fingerprint {
        let mut f = Fingerprint::default();
        for (k, v) in pairs {
            f.insert(k, *v);
        }
        f
    }

    #[test]
    fn diff_names_the_changed_keys() {
        let a = fp(&[("seed", "0"), ("steps", "250"), ("sampler", "ddpm")]);
        let b = fp(&[("seed", "1"), ("steps", "250"), ("precision", "tf32")]);
        assert!(a.diff(&a.clone()).is_empty());
        let d = a.diff(&b);
        assert_eq!(
            d,
            vec![
                ("precision".into(), "(none)".into(), "tf32".into()),
                ("sampler".into(), "ddpm".into(), "(none)".into()),
                ("seed".into(), "0".into(), "1".into()),
            ]
        );
        assert_eq!(
            describe(&d[2..]),
            "seed 0 -> 1",
            "the message format the state error uses"
        );
    }

    #[test]
    fn round_trips_through_json_as_an_object() {
        let a = fp(&[("seed", "0"), ("eta", "0.5")]);
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(text, r#"{"eta":"0.5","seed":"0"}"#);
        assert_eq!(serde_json::from_str::<Fingerprint>(&text).unwrap(), a);
    }

    /// A job on the golden fixtures with `extra` YAML lines appended.
    fn job(dir: &Path, name: &str, extra: &str) -> Job {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/golden");
        let yaml = format!(
            "model:\n  config: {g}/dit/config.json\n  checkpoint: {g}/dit/model.pt\n\
             vae: {g}/vae\nnum_samples: 40\n{extra}",
            g = golden.display()
        );
        let path = dir.join(name);
        std::fs::write(&path, yaml).unwrap();
        Job::load(&path).unwrap()
    }

    #[test]
    fn computed_from_a_job_ignores_throughput_settings() {
        let dir = tempfile::tempdir().unwrap();
        let base = Fingerprint::compute(&job(dir.path(), "a.yaml", "")).unwrap();
        for key in [
            "checkpoint",
            "vae",
            "dit",
            "sampler",
            "steps",
            "eta",
            "cfg_scale",
            "cfg_channels",
            "beta_schedule",
            "variance",
            "seed",
            "num_samples",
            "image_size",
            "labels",
            "precision",
            "shard_size",
        ] {
            assert!(base.get(key).is_some(), "missing {key}");
        }
        assert!(base.get("checkpoint").unwrap().starts_with("model.pt, "));
        let throughput = "batch_size: 3\nvae_batch_size: 1\ndevices: {cpu: 2}\n\
                          stall_timeout: 5\nretry: {attempts: 9}\nout_dir: elsewhere\n\
                          partitions: k8s/2\nnotify: {command: \"true\", webhook: http://h/x}\n";
        let same = Fingerprint::compute(&job(dir.path(), "b.yaml", throughput)).unwrap();
        assert_eq!(base.diff(&same), vec![]);
        let other = Fingerprint::compute(&job(dir.path(), "c.yaml", "seed: 1\n")).unwrap();
        assert_eq!(
            base.diff(&other),
            vec![("seed".into(), "0".into(), "1".into())]
        );
    }
}
