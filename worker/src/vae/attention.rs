//! The mid block's self-attention: diffusers' `Attention` with `AttnProcessor2_0` as
//! `UNetMidBlock2D` builds it for the VAE (`heads = 1`, `dim_head = C`, `norm_num_groups` groups,
//! eps 1e-6, `residual_connection=True`, `rescale_output_factor=1`, biases on all projections).
//!
//! Also the mapping from the attention names diffusers used before 2023 (`query`, `key`, `value`,
//! `proj_attn`; still in the hub uploads of stabilityai/sd-vae-ft-ema and -mse) to the current
//! ones (`to_q`, `to_k`, `to_v`, `to_out.0`), which diffusers applies on load in
//! `_convert_deprecated_attention_blocks`.
use super::GROUP_NORM_EPS;
use crate::error::Result;
use crate::nn::{GroupNorm, Linear};
use crate::params::{join, ParamSource};
use tch::Tensor;

/// (legacy, current) names of the attention projections.
pub const LEGACY_ATTENTION_NAMES: [(&str, &str); 4] = [
    ("query", "to_q"),
    ("key", "to_k"),
    ("value", "to_v"),
    ("proj_attn", "to_out.0"),
];

/// The current name of a legacy attention parameter key
/// (`decoder.mid_block.attentions.0.query.weight` -> `decoder.mid_block.attentions.0.to_q.weight`),
/// or `None` when `key` is not a legacy attention key.
pub fn current_attention_key(key: &str) -> Option<String> {
    let (rest, param) = key.rsplit_once('.')?;
    if param != "weight" && param != "bias" {
        return None;
    }
    let (block, legacy) = rest.rsplit_once('.')?;
    // `block` is `<...>.attentions.<index>`.
    let (parent, index) = block.rsplit_once('.')?;
    if !(parent == "attentions" || parent.ends_with(".attentions"))
        || index.parse::<usize>().is_err()
    {
        return None;
    }
    let current = LEGACY_ATTENTION_NAMES
        .iter()
        .find(|(old, _)| *old == legacy)?
        .1;
    Some(format!("{block}.{current}.{param}"))
}

pub struct VaeAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl VaeAttention {
    pub fn new(p: &mut dyn ParamSource, prefix: &str, channels: i64, groups: i64) -> Result<Self> {
        Ok(VaeAttention {
            group_norm: GroupNorm::new(
                p,
                &join(prefix, "group_norm"),
                groups,
                channels,
                GROUP_NORM_EPS,
            )?,
            to_q: Linear::new(p, &join(prefix, "to_q"), channels, channels)?,
            to_k: Linear::new(p, &join(prefix, "to_k"), channels, channels)?,
            to_v: Linear::new(p, &join(prefix, "to_v"), channels, channels)?,
            // `to_out` is `ModuleList([Linear, Dropout])`; the Linear is `to_out.0`.
            to_out: Linear::new(p, &join(prefix, "to_out.0"), channels, channels)?,
        })
    }

    /// `AttnProcessor2_0.__call__` for a 4-D input and one head.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("VAE attention expects [B, C, H, W]");
        // `view(b, c, h*w)`; GroupNorm runs on that [B, C, HW] form, then `transpose(1, 2)`.
        let hs = self
            .group_norm
            .forward(&x.view([b, c, h * w]))
            .transpose(1, 2);
        // `view(b, -1, heads=1, head_dim=c).transpose(1, 2)` -> [B, 1, HW, C].
        let heads = |t: Tensor| t.unsqueeze(1);
        let q = heads(self.to_q.forward(&hs));
        let k = heads(self.to_k.forward(&hs));
        let v = heads(self.to_v.forward(&hs));
        // softmax(q k^T / sqrt(C)) v: F.scaled_dot_product_attention with its default scale.
        let a = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        );
        // `transpose(1, 2).reshape(b, -1, heads * head_dim)` -> [B, HW, C].
        let a = a.squeeze_dim(1);
        let out = self.to_out.forward(&a);
        // `transpose(-1, -2).reshape(b, c, h, w)`, plus the residual; `/ 1.0` omitted (exact).
        out.transpose(-1, -2).reshape([b, c, h, w]) + x
    }
}
