//! Finding and preparing the weights of a diffusers `AutoencoderKL` folder for the decoder.
use super::attention::current_attention_key;
use crate::checkpoint::load_state_dict;
use crate::error::{EngineError, Result};
use crate::params::{ParamSource, StateDict};
use std::collections::BTreeMap;
use std::path::Path;
use tch::Device;

pub use fidshard_core::vae_config::{find_config, find_weights, CONFIG_FILE, WEIGHT_FILES};

/// Keys of the encoder half of `AutoencoderKL`, which real files hold and the decoder ignores.
pub fn is_encoder_key(key: &str) -> bool {
    key.starts_with("encoder.") || key.starts_with("quant_conv.")
}

/// Loads `path` and turns it into the state dict the decoder is built from.
pub fn load_decoder_state_dict(path: &Path, device: Device) -> Result<StateDict> {
    prepare_decoder_state_dict(load_state_dict(path)?, device)
}

/// Drops the encoder-side keys, renames legacy attention keys (`query/key/value/proj_attn`) to the
/// current ones (`to_q/to_k/to_v/to_out.0`) when the file uses them, and reshapes attention
/// projection weights stored as 1x1 convs (`[C, C, 1, 1]`) to linear ones (`[C, C]`), as
/// diffusers does when it loads such files. Parameters move to `device` as they are taken.
pub fn prepare_decoder_state_dict(sd: StateDict, device: Device) -> Result<StateDict> {
    let origin = sd.origin().to_path_buf();
    let tensors = sd.into_inner();
    if let Some(k) = tensors
        .keys()
        .find(|k| k.starts_with("decoder.mid.") || k.starts_with("decoder.up."))
    {
        return Err(EngineError::checkpoint(
            &origin,
            format!("key `{k}` is in the original CompVis/LDM layout; use a diffusers AutoencoderKL folder such as stabilityai/sd-vae-ft-ema (or convert it with diffusers' conversion script)"),
        ));
    }
    let mut kept = BTreeMap::new();
    for (key, t) in tensors {
        if is_encoder_key(&key) {
            continue;
        }
        let name = current_attention_key(&key).unwrap_or_else(|| key.clone());
        let is_projection = name.contains(".attentions.")
            && [
                ".to_q.weight",
                ".to_k.weight",
                ".to_v.weight",
                ".to_out.0.weight",
            ]
            .iter()
            .any(|s| name.ends_with(s));
        let size = t.size();
        let t = if is_projection && size.len() == 4 && size[2] == 1 && size[3] == 1 {
            t.reshape([size[0], size[1]])
        } else {
            t
        };
        kept.insert(key, t);
    }
    let mut sd = StateDict::new(origin, kept).with_device(device);
    let legacy: Vec<(String, String)> = sd
        .keys()
        .filter_map(|k| current_attention_key(k).map(|c| (k.clone(), c)))
        .collect();
    for (old, new) in &legacy {
        if sd.contains(new) {
            return Err(EngineError::checkpoint(
                sd.origin(),
                format!(
                    "has both `{old}` (legacy attention name) and `{new}`; keep one naming scheme"
                ),
            ));
        }
        sd.rename(old, new);
    }
    Ok(sd)
}
