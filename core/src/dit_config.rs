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

    /// Reads a JSON of the constructor arguments (as `golden/dit/config.json`).
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        let cfg: DiTConfig = serde_json::from_str(&text).map_err(|e| {
            EngineError::config(
                path,
                "model.config",
                format!("invalid DiT config JSON: {e}"),
            )
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn validate(&self, origin: &Path) -> Result<()> {
        let bad = |key: &str, msg: String| Err(EngineError::config(origin, key, msg));
        if self.input_size <= 0 || self.patch_size <= 0 || self.input_size % self.patch_size != 0 {
            return bad(
                "input_size",
                format!(
                    "{} is not a positive multiple of patch_size {}",
                    self.input_size, self.patch_size
                ),
            );
        }
        if self.num_heads <= 0 || self.hidden_size % self.num_heads != 0 {
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
        if self.num_classes <= 0 {
            return bad(
                "num_classes",
                format!("{} must be positive", self.num_classes),
            );
        }
        if self.depth <= 0 {
            return bad("depth", format!("{} must be positive", self.depth));
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
