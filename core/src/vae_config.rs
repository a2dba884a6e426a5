//! The subset of diffusers' `AutoencoderKL` config (`config.json`) that the decoder needs.
//!
//! Missing keys take the defaults of `AutoencoderKL.__init__` in diffusers (as `from_config`
//! does), except that `scaling_factor: null` also means 0.18215. Keys this decoder does not use
//! (`in_channels`, `down_block_types`, `force_upcast`, `use_quant_conv`, `latents_mean`, ...) are
//! ignored, like every unknown key.
use crate::error::{CoreError as EngineError, Result};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

/// The latent scale of the Stable Diffusion VAEs (`vae.config.scaling_factor` in diffusers); DiT
/// samples are decoded as `vae.decode(latents / 0.18215)`.
pub const DEFAULT_SCALING_FACTOR: f64 = 0.18215;

/// Bounds of the numbers of a [`VaeConfig`] (see [`VaeConfig::validate`]).
pub const MAX_CHANNELS: i64 = 65_536;
pub const MAX_LAYERS_PER_BLOCK: i64 = 64;
pub const MIN_SCALING_FACTOR: f64 = 1e-6;
pub const MAX_SCALING_FACTOR: f64 = 1e6;
/// A config.json is a few dozen keys; anything over this is refused before parsing.
pub const MAX_JSON_BYTES: u64 = 1 << 20;

/// The only up block type this decoder implements.
pub const UP_DECODER_BLOCK: &str = "UpDecoderBlock2D";

/// Keys of `config.json` read into [`VaeConfig`]; each is type-checked on its own so that an error
/// names the key.
const KNOWN_KEYS: [&str; 13] = [
    "_class_name",
    "block_out_channels",
    "layers_per_block",
    "norm_num_groups",
    "latent_channels",
    "out_channels",
    "up_block_types",
    "act_fn",
    "scaling_factor",
    "shift_factor",
    "use_post_quant_conv",
    "mid_block_add_attention",
    "sample_size",
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VaeConfig {
    /// `_class_name`; when present it must be `AutoencoderKL`.
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    /// Channels of the encoder's blocks; the decoder walks them in reverse.
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<i64>,
    /// The decoder's up blocks have `layers_per_block + 1` resnets each.
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: i64,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: i64,
    #[serde(default = "default_latent_channels")]
    pub latent_channels: i64,
    #[serde(default = "default_out_channels")]
    pub out_channels: i64,
    #[serde(default = "default_up_block_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    #[serde(
        default = "default_scaling_factor",
        deserialize_with = "null_as_default_scaling_factor"
    )]
    pub scaling_factor: f64,
    /// Only `null`/absent or 0 are supported (the SD VAEs have none).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
    /// Image side the VAE was trained at; informational only.
    #[serde(default = "default_sample_size")]
    pub sample_size: i64,
}

fn default_block_out_channels() -> Vec<i64> {
    vec![64]
}
fn default_layers_per_block() -> i64 {
    1
}
fn default_norm_num_groups() -> i64 {
    32
}
fn default_latent_channels() -> i64 {
    4
}
fn default_out_channels() -> i64 {
    3
}
fn default_up_block_types() -> Vec<String> {
    vec![UP_DECODER_BLOCK.to_string()]
}
fn default_act_fn() -> String {
    "silu".to_string()
}
fn default_scaling_factor() -> f64 {
    DEFAULT_SCALING_FACTOR
}
fn yes() -> bool {
    true
}
fn default_sample_size() -> i64 {
    32
}

fn null_as_default_scaling_factor<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(DEFAULT_SCALING_FACTOR))
}

impl Default for VaeConfig {
    /// The defaults of diffusers' `AutoencoderKL.__init__`.
    fn default() -> Self {
        VaeConfig {
            class_name: None,
            block_out_channels: default_block_out_channels(),
            layers_per_block: default_layers_per_block(),
            norm_num_groups: default_norm_num_groups(),
            latent_channels: default_latent_channels(),
            out_channels: default_out_channels(),
            up_block_types: default_up_block_types(),
            act_fn: default_act_fn(),
            scaling_factor: DEFAULT_SCALING_FACTOR,
            shift_factor: None,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            sample_size: default_sample_size(),
        }
    }
}

impl VaeConfig {
    /// Reads and validates a diffusers `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| EngineError::io(path, e))?;
        if meta.len() > MAX_JSON_BYTES {
            return Err(EngineError::checkpoint(
                path,
                format!(
                    "{} bytes is too large for a VAE config.json (at most {MAX_JSON_BYTES})",
                    meta.len()
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        Self::from_json_str(text.trim_start_matches('\u{feff}'), path)
    }

    /// Parses and validates the text of a `config.json`; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            EngineError::checkpoint(
                origin,
                format!("not valid JSON ({e}); expected a diffusers AutoencoderKL config.json"),
            )
        })?;
        let obj = value.as_object().ok_or_else(|| {
            EngineError::checkpoint(
                origin,
                "expected a JSON object (a diffusers AutoencoderKL config.json)",
            )
        })?;
        // Type-check each known key alone, so that the error names it (serde's would not).
        for key in KNOWN_KEYS {
            if let Some(v) = obj.get(key) {
                let mut single = serde_json::Map::new();
                single.insert(key.to_string(), v.clone());
                serde_json::from_value::<VaeConfig>(serde_json::Value::Object(single))
                    .map_err(|e| EngineError::config(origin, key, e.to_string()))?;
            }
        }
        let cfg: VaeConfig = serde_json::from_value(value)
            .map_err(|e| EngineError::checkpoint(origin, e.to_string()))?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Rejects what the decoder does not implement; `origin` names the config in errors.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let err = |key: &str, msg: String| Err(EngineError::config(origin, key, msg));
        if let Some(name) = &self.class_name {
            if name != "AutoencoderKL" {
                return err(
                    "_class_name",
                    format!("{name:?} is not supported; expected \"AutoencoderKL\" (a diffusers VAE folder such as stabilityai/sd-vae-ft-ema)"),
                );
            }
        }
        if self.block_out_channels.is_empty()
            || self
                .block_out_channels
                .iter()
                .any(|&c| c <= 0 || c > MAX_CHANNELS)
        {
            return err(
                "block_out_channels",
                format!(
                    "{:?}: expected a non-empty list of channel counts in 1..={MAX_CHANNELS}",
                    self.block_out_channels
                ),
            );
        }
        if self.block_out_channels.len() > 16 {
            return err(
                "block_out_channels",
                format!(
                    "{} blocks is more than this decoder supports (16)",
                    self.block_out_channels.len()
                ),
            );
        }
        if self.up_block_types.len() != self.block_out_channels.len() {
            return err(
                "up_block_types",
                format!(
                    "has {} entries but block_out_channels has {}; they must match",
                    self.up_block_types.len(),
                    self.block_out_channels.len()
                ),
            );
        }
        if let Some((i, t)) = self
            .up_block_types
            .iter()
            .enumerate()
            .find(|(_, t)| t.as_str() != UP_DECODER_BLOCK)
        {
            return err(
                "up_block_types",
                format!("entry {i} is {t:?}; only \"{UP_DECODER_BLOCK}\" is supported (the decoder of the Stable Diffusion VAEs)"),
            );
        }
        if !(0..=MAX_LAYERS_PER_BLOCK).contains(&self.layers_per_block) {
            return err(
                "layers_per_block",
                format!(
                    "{} is not in 0..={MAX_LAYERS_PER_BLOCK}",
                    self.layers_per_block
                ),
            );
        }
        if self.norm_num_groups <= 0 {
            return err(
                "norm_num_groups",
                format!("{} must be positive", self.norm_num_groups),
            );
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|&&c| c % self.norm_num_groups != 0)
        {
            return err(
                "norm_num_groups",
                format!(
                    "{} does not divide the block channel count {c} (GroupNorm needs it to)",
                    self.norm_num_groups
                ),
            );
        }
        for (key, v) in [
            ("latent_channels", self.latent_channels),
            ("out_channels", self.out_channels),
        ] {
            if v <= 0 || v > MAX_CHANNELS {
                return err(key, format!("{v} is not in 1..={MAX_CHANNELS}"));
            }
        }
        // diffusers' get_activation maps both "silu" and "swish" to nn.SiLU.
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return err(
                "act_fn",
                format!("{:?} is not supported; only \"silu\"", self.act_fn),
            );
        }
        // Latents are divided by it before decoding: 0 or a denormal would make them inf.
        if !(self.scaling_factor.is_finite()
            && (MIN_SCALING_FACTOR..=MAX_SCALING_FACTOR).contains(&self.scaling_factor))
        {
            return err(
                "scaling_factor",
                format!(
                    "{} is not a positive number in [{MIN_SCALING_FACTOR:e}, {MAX_SCALING_FACTOR:e}] (the SD VAEs use 0.18215)",
                    short(self.scaling_factor)
                ),
            );
        }
        if let Some(s) = self.shift_factor {
            if s != 0.0 {
                return err(
                    "shift_factor",
                    format!("{s} is not supported; only null or 0 (the Stable Diffusion VAEs have no shift)"),
                );
            }
        }
        Ok(())
    }

    /// How much larger the decoded image is than the latent: one nearest x2 upsampler per up
    /// block but the last, i.e. `2^(len(block_out_channels) - 1)` (8 for the SD VAEs).
    pub fn upsample_factor(&self) -> i64 {
        1i64 << (self.block_out_channels.len().max(1) - 1)
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

// Finding the files of a diffusers `AutoencoderKL` folder (the worker loads them; the
// coordinator fingerprints them).

pub const CONFIG_FILE: &str = "config.json";

/// Weight files of a diffusers folder, in the order diffusers prefers them (safetensors first);
/// the `fp16` variants are a last resort (parameters are converted to float32 anyway).
pub const WEIGHT_FILES: [&str; 4] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.fp16.bin",
];

/// The folder's `config.json`, or a one-line error naming the folder and the fix.
pub fn find_config(folder: &Path) -> Result<PathBuf> {
    if !folder.exists() {
        return Err(EngineError::checkpoint(
            folder,
            "VAE folder does not exist; pass a diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors) such as a download of stabilityai/sd-vae-ft-ema",
        ));
    }
    if !folder.is_dir() {
        return Err(EngineError::checkpoint(
            folder,
            "is a file, but the VAE must be a diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors) such as stabilityai/sd-vae-ft-ema; pass the folder that holds it",
        ));
    }
    let config = folder.join(CONFIG_FILE);
    if !config.is_file() {
        return Err(EngineError::checkpoint(
            folder,
            "no config.json; expected a diffusers AutoencoderKL folder such as stabilityai/sd-vae-ft-ema",
        ));
    }
    Ok(config)
}

/// The folder's weight file (see [`WEIGHT_FILES`]), or a one-line error naming the fix.
pub fn find_weights(folder: &Path) -> Result<PathBuf> {
    WEIGHT_FILES
        .iter()
        .map(|f| folder.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            EngineError::checkpoint(
                folder,
                "no diffusion_pytorch_model.safetensors (or .bin); download the AutoencoderKL weights (e.g. stabilityai/sd-vae-ft-ema) into this folder next to config.json",
            )
        })
}
