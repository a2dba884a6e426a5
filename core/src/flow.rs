//! The flow-matching family (SiT, REPA): which model family a job samples, the settings of
//! REPA's published samplers (`samplers.py` of sihyun-yu/REPA), how latents become pixels, and
//! the reading of a SiT `model.config` (REPA's `SiT(...)` constructor arguments).
use crate::dit_config::DiTConfig;
use crate::error::{CoreError, Result};
use crate::sit_transport::SitSde;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which model a checkpoint holds and therefore which samplers apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// DiT: an epsilon (and variance) model at integer timesteps; Gaussian diffusion samplers.
    #[default]
    Dit,
    /// SiT / REPA: a velocity model at continuous time t in [0, 1] (1 = noise); flow samplers.
    Sit,
}

impl ModelFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Dit => "dit",
            ModelFamily::Sit => "sit",
        }
    }
}

/// The ODE solver of REPA's `euler_sampler` (`heun=False | True`), of SiT's `sample_ode`
/// (torchdiffeq's fixed-grid `euler` | `heun2`) and of SiT's `sample_sde` (`Euler` | `Heun`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    #[default]
    Euler,
    Heun,
}

impl Solver {
    pub fn as_str(self) -> &'static str {
        match self {
            Solver::Euler => "euler",
            Solver::Heun => "heun",
        }
    }
}

/// The interpolant whose score the SDE derives from the velocity
/// (`get_score_from_velocity(..., path_type)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathType {
    /// `x_t = (1 - t) x_0 + t eps`.
    #[default]
    Linear,
    /// `x_t = cos(pi t / 2) x_0 + sin(pi t / 2) eps`.
    Cosine,
}

impl PathType {
    pub fn as_str(self) -> &'static str {
        match self {
            PathType::Linear => "linear",
            PathType::Cosine => "cosine",
        }
    }
}

/// How decoded images in [-1, 1] become uint8 (both truncate, as the references do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pixels {
    /// DiT's `sample.py`: `clamp(127.5 x + 128, 0, 255)`.
    #[default]
    Dit,
    /// REPA's `generate.py`: `clamp(255 (x + 1) / 2, 0, 255)`.
    Repa,
}

impl Pixels {
    pub fn as_str(self) -> &'static str {
        match self {
            Pixels::Dit => "dit",
            Pixels::Repa => "repa",
        }
    }
}

/// The settings of the flow samplers (`ode`, `sde`, `sit-ode`, `sit-sde`); unused by the DiT
/// family.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlowSettings {
    pub solver: Solver,
    pub path_type: PathType,
    /// Guidance only where `low <= t <= high` (REPA's `guidance_low` / `guidance_high`).
    pub guidance_interval: [f64; 2],
    /// SiT's `qk_norm` (LayerNorms on queries and keys), from `model.config`.
    pub qk_norm: bool,
    /// SiT's SDE (`sampler: sit-sde`): diffusion form and last step.
    #[serde(default)]
    pub sit_sde: SitSde,
}

impl Default for FlowSettings {
    fn default() -> Self {
        FlowSettings {
            solver: Solver::Euler,
            path_type: PathType::Linear,
            guidance_interval: [0.0, 1.0],
            qk_norm: false,
            sit_sde: SitSde::default(),
        }
    }
}

/// Most steps a flow sampler takes (REPA's tables use 250).
pub const MAX_FLOW_STEPS: usize = 10_000;

/// `steps` of a flow sampler: a plain count `N` (`"250"` or 250).
pub fn flow_steps(spec: &str) -> std::result::Result<usize, String> {
    match spec.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_FLOW_STEPS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{spec:?} is not a step count for the flow samplers; expected a number of steps in 1..={MAX_FLOW_STEPS} such as \"250\" (no respacing specs)"
        )),
    }
}

/// REPA's constructor arguments that the sampler does not need; accepted and checked for type.
const REPA_KEYS: [(&str, &str); 8] = [
    ("path_type", "string"),
    ("encoder_depth", "int"),
    ("z_dims", "ints"),
    ("projector_dim", "int"),
    ("use_cfg", "bool"),
    ("fused_attn", "bool"),
    ("decoder_hidden_size", "int"),
    ("qk_norm", "bool"),
];

/// A SiT `model.config`: the DiT part of the architecture and `qk_norm`. Accepts REPA's extra
/// constructor arguments; `learn_sigma` defaults to false (REPA's 4 output channels; the worker
/// takes it from the checkpoint's output layer anyway).
pub fn sit_config_from_json_file(path: &Path) -> Result<(DiTConfig, bool)> {
    let bad = |key: &str, msg: String| CoreError::config(path, key, msg);
    let mut value = DiTConfig::read_json(path)?;
    let obj = value.as_object_mut().ok_or_else(|| {
        bad(
            "model.config",
            "expected a JSON object of the SiT constructor arguments".into(),
        )
    })?;
    let mut qk_norm = false;
    for (key, kind) in REPA_KEYS {
        let Some(v) = obj.remove(key) else { continue };
        let ok = match kind {
            "string" => v.is_string(),
            "int" => v.is_i64(),
            "bool" => v.is_boolean(),
            _ => v
                .as_array()
                .is_some_and(|a| a.iter().all(serde_json::Value::is_i64)),
        };
        if !ok {
            return Err(bad(key, format!("{v} is not of type {kind}")));
        }
        if key == "qk_norm" {
            qk_norm = v.as_bool().unwrap_or(false);
        }
        if key == "decoder_hidden_size" {
            let hidden = obj.get("hidden_size").and_then(serde_json::Value::as_i64);
            if v.as_i64() != hidden {
                return Err(bad(
                    key,
                    format!(
                        "{v} differs from hidden_size; REPA's SiT only runs with decoder_hidden_size = hidden_size"
                    ),
                ));
            }
        }
    }
    obj.entry("learn_sigma")
        .or_insert(serde_json::Value::Bool(false));
    let cfg = DiTConfig::from_json_value(path, value)?;
    Ok((cfg, qk_norm))
}

/// A SiT preset (`SiT-XL/2`, ...; the same sizes as the DiT presets), with REPA's 4 output
/// channels.
pub fn sit_preset(name: &str, input_size: i64, num_classes: i64) -> Option<DiTConfig> {
    let rest = name.strip_prefix("SiT")?;
    let mut cfg = DiTConfig::preset(&format!("DiT{rest}"), input_size, num_classes)?;
    cfg.learn_sigma = false;
    Some(cfg)
}

/// The SiT preset names, as REPA's `SiT_models` dict spells them.
pub const SIT_PRESETS: [&str; 12] = [
    "SiT-XL/2", "SiT-XL/4", "SiT-XL/8", "SiT-L/2", "SiT-L/4", "SiT-L/8", "SiT-B/2", "SiT-B/4",
    "SiT-B/8", "SiT-S/2", "SiT-S/4", "SiT-S/8",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_steps_are_plain_counts() {
        assert_eq!(flow_steps("250"), Ok(250));
        assert_eq!(flow_steps(" 1 "), Ok(1));
        for bad in ["0", "ddim50", "10,20", "-3", "10001"] {
            assert!(flow_steps(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sit_presets_mirror_the_dit_sizes_without_sigma() {
        let c = sit_preset("SiT-XL/2", 32, 1000).unwrap();
        assert_eq!(
            (c.depth, c.hidden_size, c.num_heads, c.patch_size),
            (28, 1152, 16, 2)
        );
        assert!(!c.learn_sigma);
        assert!(sit_preset("DiT-XL/2", 32, 1000).is_none());
        for p in SIT_PRESETS {
            assert!(sit_preset(p, 32, 1000).is_some(), "{p}");
        }
    }

    #[test]
    fn repa_config_keys_are_accepted_and_checked() {
        let dir = std::env::temp_dir().join(format!("fidshard-sit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        let write = |s: &str| std::fs::write(&path, s).unwrap();
        write(
            r#"{"path_type":"linear","input_size":8,"patch_size":2,"in_channels":4,"hidden_size":128,
            "decoder_hidden_size":128,"encoder_depth":2,"depth":4,"num_heads":4,"mlp_ratio":4.0,
            "class_dropout_prob":0.1,"num_classes":10,"use_cfg":true,"z_dims":[32],
            "projector_dim":64,"qk_norm":true,"fused_attn":false}"#,
        );
        let (c, qk) = sit_config_from_json_file(&path).unwrap();
        assert!(qk && !c.learn_sigma);
        assert_eq!((c.input_size, c.hidden_size, c.num_classes), (8, 128, 10));
        write(
            r#"{"input_size":8,"hidden_size":128,"decoder_hidden_size":64,"depth":1,"num_heads":4}"#,
        );
        let e = sit_config_from_json_file(&path).unwrap_err().to_string();
        assert!(e.contains("decoder_hidden_size"), "{e}");
        write(r#"{"input_size":8,"hidden_size":128,"depth":1,"num_heads":4,"z_dims":"x"}"#);
        let e = sit_config_from_json_file(&path).unwrap_err().to_string();
        assert!(e.contains("z_dims"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
