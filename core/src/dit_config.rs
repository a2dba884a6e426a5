//! DiT architecture configuration: the constructor arguments of the reference `DiT` class
//! (`models.py` of facebookresearch/DiT), the paper's 12 presets (Peebles & Xie 2023, Table 1:
//! S/B/L/XL x patch 2/4/8) and custom architectures read from a JSON of those arguments.
use crate::error::{CoreError as EngineError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiTConfig {
    /// Latent side length (image_size / VAE factor).
    pub input_size: i64,
    #[serde(default = "default_patch")]
    pub patch_size: i64,
    #[serde(default = "default_in_channels")]
    pub in_channels: i64,
    pub hidden_size: i64,
    pub depth: i64,
    pub num_heads: i64,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Only decides whether the label table has a null-label row (`> 0`); no dropout at sampling.
    #[serde(default = "default_dropout")]
    pub class_dropout_prob: f64,
    #[serde(default = "default_classes")]
    pub num_classes: i64,
    #[serde(default = "default_true")]
    pub learn_sigma: bool,
}

fn default_patch() -> i64 {
    2
}
fn default_in_channels() -> i64 {
    4
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_dropout() -> f64 {
    0.1
}
fn default_classes() -> i64 {
    1000
}
fn default_true() -> bool {
    true
}

/// A DiT config JSON is a dozen keys; anything over this is refused before parsing.
pub const MAX_JSON_BYTES: u64 = 1 << 20;
/// Bounds of the integers of a [`DiTConfig`] (see [`DiTConfig::validate`]).
pub const MAX_INPUT_SIZE: i64 = 1024;
pub const MAX_CHANNELS: i64 = 1024;
pub const MAX_HIDDEN: i64 = 65_536;
pub const MAX_DEPTH: i64 = 1024;
pub const MAX_CLASSES: i64 = 1_000_000;
pub const MAX_MLP_RATIO: f64 = 64.0;

#[derive(Clone, Copy)]
enum JsonKind {
    Int,
    Float,
    Bool,
}

/// The keys of a DiT config JSON and their JSON types.
const JSON_KEYS: [(&str, JsonKind); 10] = [
    ("input_size", JsonKind::Int),
    ("patch_size", JsonKind::Int),
    ("in_channels", JsonKind::Int),
    ("hidden_size", JsonKind::Int),
    ("depth", JsonKind::Int),
    ("num_heads", JsonKind::Int),
    ("mlp_ratio", JsonKind::Float),
    ("class_dropout_prob", JsonKind::Float),
    ("num_classes", JsonKind::Int),
    ("learn_sigma", JsonKind::Bool),
];

/// The keys without a default.
const REQUIRED_KEYS: [&str; 4] = ["input_size", "hidden_size", "depth", "num_heads"];

/// The preset names, as the reference's `DiT_models` dict spells them.
pub const PRESETS: [&str; 12] = [
    "DiT-XL/2", "DiT-XL/4", "DiT-XL/8", "DiT-L/2", "DiT-L/4", "DiT-L/8", "DiT-B/2", "DiT-B/4",
    "DiT-B/8", "DiT-S/2", "DiT-S/4", "DiT-S/8",
];

impl DiTConfig {
    /// A preset (`DiT-XL/2`, also accepted as `DiT-XL-2`) for a given latent size and class count.
    pub fn preset(name: &str, input_size: i64, num_classes: i64) -> Option<Self> {
        let norm = name.replace('-', "/").replacen("DiT/", "DiT-", 1);
        let (size, patch) = norm.strip_prefix("DiT-")?.split_once('/')?;
        let (depth, hidden_size, num_heads) = match size {
            "XL" => (28, 1152, 16),
            "L" => (24, 1024, 16),
            "B" => (12, 768, 12),
            "S" => (12, 384, 6),
            _ => return None,
        };
        let patch_size = match patch {
            "2" => 2,
            "4" => 4,
            "8" => 8,
            _ => return None,
        };
        Some(DiTConfig {
            input_size,
            patch_size,
            in_channels: 4,
            hidden_size,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            class_dropout_prob: 0.1,
            num_classes,
            learn_sigma: true,
        })
    }

    pub fn dit_xl_2(input_size: i64) -> Self {
        Self::preset("DiT-XL/2", input_size, 1000).expect("known preset")
    }

    /// Reads a JSON of the constructor arguments (as `golden/dit/config.json`). Each key is
    /// type-checked on its own so that an error names it; then [`DiTConfig::validate`].
    pub fn from_json_file(path: &Path) -> Result<Self> {
        Self::from_json_value(path, Self::read_json(path)?)
    }

    /// The JSON value of a model config file (size-bounded; a UTF-8 BOM is skipped).
    pub fn read_json(path: &Path) -> Result<serde_json::Value> {
        let bad = |key: &str, msg: String| EngineError::config(path, key, msg);
        let meta = std::fs::metadata(path).map_err(|e| EngineError::io(path, e))?;
        if meta.len() > MAX_JSON_BYTES {
            return Err(EngineError::checkpoint(
                path,
                format!(
                    "{} bytes is too large for a DiT config JSON (at most {MAX_JSON_BYTES})",
                    meta.len()
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        serde_json::from_str(text.trim_start_matches('\u{feff}')).map_err(|e| {
            bad(
                "model.config",
                format!("not valid JSON ({e}); expected the DiT constructor arguments"),
            )
        })
    }

    /// A config from the JSON `value` of the file `path` (named in errors).
    pub fn from_json_value(path: &Path, value: serde_json::Value) -> Result<Self> {
        let bad = |key: &str, msg: String| EngineError::config(path, key, msg);
        let obj = value.as_object().ok_or_else(|| {
            bad(
                "model.config",
                "expected a JSON object of the DiT constructor arguments".into(),
            )
        })?;
        for (key, v) in obj {
            let Some((_, kind)) = JSON_KEYS.iter().find(|(k, _)| k == key) else {
                let keys: Vec<&str> = JSON_KEYS.iter().map(|(k, _)| *k).collect();
                return Err(bad(
                    key,
                    format!("unknown key; the keys are {}", keys.join(", ")),
                ));
            };
            let ok = match kind {
                JsonKind::Int => v.is_i64(),
                JsonKind::Float => v.is_number(),
                JsonKind::Bool => v.is_boolean(),
            };
            if !ok {
                let want = match kind {
                    JsonKind::Int => "a whole number",
                    JsonKind::Float => "a number",
                    JsonKind::Bool => "true or false",
                };
                let mut got = v.to_string();
                if got.len() > 40 {
                    got = format!("{}...", got.chars().take(40).collect::<String>());
                }
                return Err(bad(key, format!("{got} is not {want}")));
            }
        }
        for key in REQUIRED_KEYS {
            if !obj.contains_key(key) {
                return Err(bad(key, "is required".into()));
            }
        }
        let cfg: DiTConfig = serde_json::from_value(value)
            .map_err(|e| bad("model.config", format!("invalid DiT config JSON: {e}")))?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks every number against what the DiT can be built with; `origin` names the file in
    /// errors. The upper bounds only keep absurd values (a typo, a byte-flipped file) from
    /// reaching libtorch as a multi-terabyte allocation.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let bad = |key: &str, msg: String| Err(EngineError::config(origin, key, msg));
        let ints = [
            ("input_size", self.input_size, MAX_INPUT_SIZE),
            ("patch_size", self.patch_size, MAX_INPUT_SIZE),
            ("in_channels", self.in_channels, MAX_CHANNELS),
            ("hidden_size", self.hidden_size, MAX_HIDDEN),
            ("depth", self.depth, MAX_DEPTH),
            ("num_heads", self.num_heads, MAX_HIDDEN),
            ("num_classes", self.num_classes, MAX_CLASSES),
        ];
        for (key, v, max) in ints {
            if v <= 0 || v > max {
                return bad(key, format!("{v} is not in 1..={max}"));
            }
        }
        if self.input_size % self.patch_size != 0 {
            return bad(
                "input_size",
                format!(
                    "{} is not a positive multiple of patch_size {}",
                    self.input_size, self.patch_size
                ),
            );
        }
        if self.hidden_size % self.num_heads != 0 {
            return bad(
                "num_heads",
                format!(
                    "hidden_size {} is not divisible by num_heads {}",
                    self.hidden_size, self.num_heads
                ),
            );
        }
        // The fixed 2-D sin-cos position embedding splits hidden_size in 4 equal parts.
        if self.hidden_size % 4 != 0 {
            return bad(
                "hidden_size",
                format!("{} is not a multiple of 4", self.hidden_size),
            );
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0 && self.mlp_ratio <= MAX_MLP_RATIO)
        {
            return bad(
                "mlp_ratio",
                format!(
                    "{} is not a number in (0, {MAX_MLP_RATIO}] (the reference uses 4.0)",
                    short(self.mlp_ratio)
                ),
            );
        }
        if self.mlp_hidden() < 1 {
            return bad(
                "mlp_ratio",
                format!(
                    "{} x hidden_size {} leaves the MLP no hidden unit",
                    self.mlp_ratio, self.hidden_size
                ),
            );
        }
        if !(self.class_dropout_prob.is_finite() && (0.0..1.0).contains(&self.class_dropout_prob)) {
            return bad(
                "class_dropout_prob",
                format!(
                    "{} is not in [0, 1) (the reference uses 0.1; > 0 adds the null label of guidance)",
                    short(self.class_dropout_prob)
                ),
            );
        }
        Ok(())
    }

    pub fn out_channels(&self) -> i64 {
        if self.learn_sigma {
            self.in_channels * 2
        } else {
            self.in_channels
        }
    }
    /// Number of patch tokens.
    pub fn num_patches(&self) -> i64 {
        let side = self.input_size / self.patch_size;
        side * side
    }
    pub fn mlp_hidden(&self) -> i64 {
        (self.hidden_size as f64 * self.mlp_ratio) as i64
    }
    /// Rows of the label table: one extra (the null label) when classifier-free guidance is used.
    pub fn label_table_rows(&self) -> i64 {
        self.num_classes + i64::from(self.class_dropout_prob > 0.0)
    }
    /// The label that means "no class" (index num_classes).
    pub fn null_label(&self) -> i64 {
        self.num_classes
    }
}

/// `x` for a message: plain when moderate, in scientific notation when huge or tiny.
fn short(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-4..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

/// Which output channels classifier-free guidance is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CfgChannels {
    /// The first N channels. The reference guides only the first 3 of the 4 latent channels
    /// (`eps, rest = model_out[:, :3], model_out[:, 3:]`); that is the published behaviour and the
    /// default, `First(3)`.
    First(i64),
    /// All latent channels (`in_channels`), the "textbook" form of guidance.
    All,
}

impl Default for CfgChannels {
    fn default() -> Self {
        CfgChannels::First(3)
    }
}
