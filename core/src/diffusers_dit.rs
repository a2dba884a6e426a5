//! Diffusers-format DiT checkpoints (`facebook/DiT-XL-2-256`'s `transformer/`): a folder with
//! `config.json` (diffusers' `DiTTransformer2DModel`, or the older `Transformer2DModel` with
//! `norm_type: ada_norm_zero`) and `diffusion_pytorch_model.safetensors`. This module finds such
//! a folder and reads its config as the published DiT's constructor arguments; the worker's
//! `checkpoint/diffusers_dit.rs` maps the tensors onto the published layout.
use crate::dit_config::DiTConfig;
use crate::error::{CoreError, Result};
use crate::vae_config::{CONFIG_FILE, WEIGHT_FILES};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The two files of a diffusers DiT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffusersDit {
    pub config: PathBuf,
    pub weights: PathBuf,
}

/// Does `json` describe a DiT: `_class_name` `DiTTransformer2DModel`, or `Transformer2DModel`
/// with `norm_type: ada_norm_zero` (how diffusers < 0.28 saved DiT pipelines)?
pub fn is_dit_config(json: &Value) -> bool {
    let class = json.get("_class_name").and_then(Value::as_str);
    let norm = json.get("norm_type").and_then(Value::as_str);
    match class {
        Some("DiTTransformer2DModel") => true,
        Some("Transformer2DModel") => norm == Some("ada_norm_zero"),
        _ => false,
    }
}

/// The diffusers DiT at `path`: a folder holding `config.json` and the weights, or the weights
/// file with such a `config.json` beside it. `None` when `path` is not one (a plain `.pt` or
/// `.safetensors` state_dict, whatever its folder holds); an error for a folder whose
/// `config.json` is not a DiT's or that lacks the weights, naming the file.
pub fn find(path: &Path) -> Result<Option<DiffusersDit>> {
    let (folder, weights) = if path.is_dir() {
        let config = path.join(CONFIG_FILE);
        if !config.is_file() {
            return Err(CoreError::checkpoint(
                path,
                "is a folder without config.json; name the model file (.pt or .safetensors), or \
                 a diffusers DiT folder (config.json + diffusion_pytorch_model.safetensors, such \
                 as facebook/DiT-XL-2-256's transformer/)",
            ));
        }
        let weights = WEIGHT_FILES
            .iter()
            .map(|w| path.join(w))
            .find(|w| w.is_file())
            .ok_or_else(|| {
                CoreError::checkpoint(
                    path,
                    "has config.json but no diffusion_pytorch_model.safetensors (or .bin) beside \
                     it (an interrupted download?)",
                )
            })?;
        (path.to_path_buf(), weights)
    } else {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(folder) = path.parent().filter(|_| WEIGHT_FILES.contains(&name)) else {
            return Ok(None);
        };
        if !folder.join(CONFIG_FILE).is_file() {
            return Ok(None);
        }
        (folder.to_path_buf(), path.to_path_buf())
    };
    let config = folder.join(CONFIG_FILE);
    let json = DiTConfig::read_json(&config)?;
    if !is_dit_config(&json) {
        if path.is_dir() {
            let class = json.get("_class_name").and_then(Value::as_str);
            return Err(CoreError::config(
                &config,
                "_class_name",
                format!(
                    "{} is not a diffusers DiT (expected DiTTransformer2DModel, or \
                     Transformer2DModel with norm_type ada_norm_zero)",
                    class.map_or("absent".to_string(), |c| format!("`{c}`"))
                ),
            ));
        }
        return Ok(None);
    }
    Ok(Some(DiffusersDit { config, weights }))
}

/// The published DiT's constructor arguments from a diffusers DiT `config.json`:
/// `sample_size` -> input_size, `patch_size`, `in_channels`, `num_attention_heads` x
/// `attention_head_dim` -> hidden_size, `num_layers` -> depth, `num_attention_heads` ->
/// num_heads, `num_embeds_ada_norm` -> num_classes, `out_channels` = 2 x in_channels ->
/// learn_sigma. The feed-forward is diffusers' default 4 x hidden (mlp_ratio 4) and the label
/// table has the null row (`LabelEmbedding`'s class_dropout_prob 0.1), as in DiT.
pub fn config_from_file(path: &Path) -> Result<DiTConfig> {
    let json = DiTConfig::read_json(path)?;
    config_from_json(path, &json)
}

fn config_from_json(path: &Path, json: &Value) -> Result<DiTConfig> {
    let bad = |key: &str, msg: String| CoreError::config(path, key, msg);
    let int = |key: &str, default: Option<i64>| -> Result<i64> {
        match json.get(key) {
            None | Some(Value::Null) => {
                default.ok_or_else(|| bad(key, "is required for a diffusers DiT".into()))
            }
            Some(v) => v
                .as_i64()
                .ok_or_else(|| bad(key, format!("{v} is not an integer"))),
        }
    };
    // Options under which the model is not the published DiT.
    let expect = |key: &str, want: Value| -> Result<()> {
        match json.get(key) {
            Some(v) if !v.is_null() && *v != want => Err(bad(
                key,
                format!("{v}: the published DiT has {want}; this model cannot be run as a DiT"),
            )),
            _ => Ok(()),
        }
    };
    expect("activation_fn", Value::from("gelu-approximate"))?;
    expect("attention_bias", Value::from(true))?;
    expect("norm_elementwise_affine", Value::from(false))?;
    expect("num_vector_embeds", Value::Null)?;
    if let Some(v) = json.get("cross_attention_dim").filter(|v| !v.is_null()) {
        return Err(bad(
            "cross_attention_dim",
            format!("{v}: the published DiT has no cross-attention"),
        ));
    }
    let heads = int("num_attention_heads", Some(16))?;
    let head_dim = int("attention_head_dim", Some(72))?;
    let in_channels = int("in_channels", Some(4))?;
    let out_channels = int("out_channels", Some(in_channels))?;
    let learn_sigma = if out_channels == 2 * in_channels {
        true
    } else if out_channels == in_channels {
        false
    } else {
        return Err(bad(
            "out_channels",
            format!(
                "{out_channels}: expected in_channels ({in_channels}) or twice it (learn_sigma)"
            ),
        ));
    };
    let cfg = DiTConfig {
        input_size: int("sample_size", Some(32))?,
        patch_size: int("patch_size", Some(2))?,
        in_channels,
        hidden_size: heads.saturating_mul(head_dim),
        depth: int("num_layers", Some(28))?,
        num_heads: heads,
        mlp_ratio: 4.0,
        class_dropout_prob: 0.1,
        num_classes: int("num_embeds_ada_norm", Some(1000))?,
        learn_sigma,
    };
    cfg.validate(path)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/diffusers-dit/transformer")
    }

    #[test]
    fn finds_the_folder_and_its_weights_file_and_reads_the_config() {
        let d = folder();
        let found = find(&d).unwrap().unwrap();
        assert_eq!(found.config, d.join("config.json"));
        assert_eq!(found.weights, d.join("diffusion_pytorch_model.safetensors"));
        assert_eq!(find(&found.weights).unwrap(), Some(found.clone()));
        let cfg = config_from_file(&found.config).unwrap();
        assert_eq!(
            (
                cfg.input_size,
                cfg.patch_size,
                cfg.hidden_size,
                cfg.depth,
                cfg.num_heads
            ),
            (8, 2, 32, 2, 2)
        );
        assert_eq!((cfg.num_classes, cfg.learn_sigma), (10, true));
        // A plain state_dict is not a diffusers DiT.
        let golden = d.join("../../golden/dit/model.safetensors");
        assert_eq!(find(&golden).unwrap(), None);
    }

    #[test]
    fn refuses_configs_that_are_not_the_published_dit() {
        let p = Path::new("t/config.json");
        let base: Value = serde_json::from_str(
            r#"{"_class_name": "Transformer2DModel", "norm_type": "ada_norm_zero",
                "num_attention_heads": 16, "attention_head_dim": 72, "in_channels": 4,
                "out_channels": 8, "num_layers": 28, "sample_size": 32, "patch_size": 2,
                "num_embeds_ada_norm": 1000, "cross_attention_dim": null}"#,
        )
        .unwrap();
        assert!(is_dit_config(&base));
        let cfg = config_from_json(p, &base).unwrap();
        assert_eq!(cfg, DiTConfig::dit_xl_2(32));
        for (key, value, says) in [
            ("out_channels", Value::from(5), "expected in_channels"),
            (
                "activation_fn",
                Value::from("geglu"),
                "cannot be run as a DiT",
            ),
            (
                "cross_attention_dim",
                Value::from(768),
                "no cross-attention",
            ),
            ("num_layers", Value::from("x"), "not an integer"),
        ] {
            let mut j = base.clone();
            j[key] = value;
            let e = config_from_json(p, &j).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(says), "{e}");
        }
        let mut j = base.clone();
        j["norm_type"] = Value::from("layer_norm");
        assert!(!is_dit_config(&j));
    }
}
