//! Models and VAE decoders given as TorchScript modules (`model.torchscript`, `vae:
//! {torchscript: ...}`; docs/models.md): the settings that say so, and the reader of the shape
//! facts a TorchScript model's `model.config` gives. The worker runs the module as it is; only
//! the shapes in and out are fidshard's to know.
use crate::dit_config::DiTConfig;
use crate::error::{CoreError, Result};
use crate::flow::ModelFamily;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How `SamplerSettings::checkpoint` holds the model: a state_dict fidshard builds its own DiT /
/// SiT from (`model.checkpoint`), or a TorchScript module run as exported (`model.torchscript`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    #[default]
    Native,
    Torchscript,
}

impl ModelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Native => "native",
            ModelFormat::Torchscript => "torchscript",
        }
    }
}

/// `vae: {torchscript: FILE, downsample: N, latent_channels: C}`: a TorchScript decoder taking
/// `(z - latent_bias) / latent_scale` `(N, C, h, w)` to images `(N, 3, h * N, w * N)` in
/// [-1, 1]. `SamplerSettings::vae` is then the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptVae {
    /// The image side over the latent side (8 for the SD VAE, 16 for VA-VAE f16d32).
    pub downsample: i64,
    pub latent_channels: i64,
}

/// The largest `vae.downsample` accepted.
pub const MAX_DOWNSAMPLE: i64 = 64;

/// The sizes assumed for what a TorchScript model's config leaves out: DiT-XL's, with patch 1
/// (the most tokens for the latent side). They only
/// bound the memory `batch_size: auto` plans for (and the FLOPs `bench` reports); the module
/// itself decides what it computes.
const ASSUMED: [(&str, i64); 4] = [
    ("patch_size", 1),
    ("hidden_size", 1152),
    ("depth", 28),
    ("num_heads", 16),
];

/// The shape facts of a TorchScript model from its `model.config` JSON: `input_size`
/// (required), `in_channels` (default 4), `num_classes` (default 1000; label `num_classes` is
/// the null label of guidance), `learn_sigma` (default true for `dit`, false for `sit`). Other
/// keys of the DiT constructor (`patch_size`, `hidden_size`, `depth`, `num_heads`,
/// `mlp_ratio`) are read when present (see [`ASSUMED`]); any other key is ignored, so a
/// model's own config file can be named as it is.
pub fn script_config_from_json_file(path: &Path, family: ModelFamily) -> Result<DiTConfig> {
    let bad = |key: &str, msg: String| CoreError::config(path, key, msg);
    let value = DiTConfig::read_json(path)?;
    let obj = value.as_object().ok_or_else(|| {
        bad(
            "model.config",
            "expected a JSON object with input_size, in_channels, num_classes, learn_sigma".into(),
        )
    })?;
    let int = |key: &str, default: Option<i64>| -> Result<i64> {
        match obj.get(key) {
            None => default.ok_or_else(|| {
                bad(
                    key,
                    "is required (the latent side the model takes, e.g. 32 for 256 px with the SD VAE)"
                        .into(),
                )
            }),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| bad(key, format!("{v} is not a whole number"))),
        }
    };
    let learn_sigma = match obj.get("learn_sigma") {
        None => family == ModelFamily::Dit,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad("learn_sigma", format!("{v} is not true or false")))?,
    };
    let mlp_ratio = match obj.get("mlp_ratio") {
        None => 4.0,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| bad("mlp_ratio", format!("{v} is not a number")))?,
    };
    let assumed = |key: &str| int(key, ASSUMED.iter().find(|(k, _)| *k == key).map(|p| p.1));
    let cfg = DiTConfig {
        input_size: int("input_size", None)?,
        patch_size: assumed("patch_size")?,
        in_channels: int("in_channels", Some(4))?,
        hidden_size: assumed("hidden_size")?,
        depth: assumed("depth")?,
        num_heads: assumed("num_heads")?,
        mlp_ratio,
        class_dropout_prob: 0.1,
        num_classes: int("num_classes", Some(1000))?,
        learn_sigma,
    };
    cfg.validate(path)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, family: ModelFamily) -> Result<DiTConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, text).unwrap();
        script_config_from_json_file(&path, family)
    }

    #[test]
    fn minimal_config_fills_in_the_rest() {
        let c = read(r#"{"input_size": 16, "num_classes": 10}"#, ModelFamily::Dit).unwrap();
        assert_eq!((c.input_size, c.in_channels, c.num_classes), (16, 4, 10));
        assert!(c.learn_sigma, "a DiT learns its variance unless told");
        assert_eq!((c.hidden_size, c.depth, c.patch_size), (1152, 28, 1));
        let s = read(
            r#"{"input_size": 16, "in_channels": 32, "model_type": "LightningDiT-XL/1"}"#,
            ModelFamily::Sit,
        )
        .unwrap();
        assert!(!s.learn_sigma && s.in_channels == 32);
    }

    #[test]
    fn missing_or_mistyped_keys_are_named() {
        let e = read(r#"{"in_channels": 4}"#, ModelFamily::Dit).unwrap_err();
        assert!(e.to_string().contains("`input_size`: is required"), "{e}");
        let e = read(r#"{"input_size": "8"}"#, ModelFamily::Dit).unwrap_err();
        assert!(e.to_string().contains("is not a whole number"), "{e}");
        let e = read(r#"{"input_size": 8, "learn_sigma": 1}"#, ModelFamily::Dit).unwrap_err();
        assert!(e.to_string().contains("`learn_sigma`"), "{e}");
        let e = read(r#"{"input_size": 7, "patch_size": 2}"#, ModelFamily::Dit).unwrap_err();
        assert!(e.to_string().contains("patch_size"), "{e}");
        assert!(read("[1]", ModelFamily::Dit).is_err());
    }
}
