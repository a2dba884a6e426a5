//! The DiT model (`DiT` class of the reference `models.py`): patchify, add the fixed sin-cos
//! position embedding, condition every block on `t_emb + y_emb` through adaLN-Zero, unpatchify.
use super::block::{DiTBlock, FinalLayer};
use super::layers::{LabelEmbedder, PatchEmbed, TimestepEmbedder};
use super::{CfgChannels, DiTConfig};
use crate::error::{EngineError, Result};
use crate::params::{ParamSource, StateDict};
use tch::Tensor;

pub struct DiT {
    config: DiTConfig,
    x_embedder: PatchEmbed,
    t_embedder: TimestepEmbedder,
    y_embedder: LabelEmbedder,
    /// Fixed (non-learned) 2-D sin-cos embedding, stored in the state dict as `pos_embed`.
    pos_embed: Tensor,
    blocks: Vec<DiTBlock>,
    final_layer: FinalLayer,
}

impl DiT {
    /// Builds the model, taking every parameter from `p` under the reference's names.
    pub fn build(config: &DiTConfig, p: &mut dyn ParamSource) -> Result<Self> {
        Self::build_with(config, false, p)
    }

    /// [`DiT::build`] with timm's `qk_norm` in every attention (SiT's option; DiT never has it).
    pub fn build_with(config: &DiTConfig, qk_norm: bool, p: &mut dyn ParamSource) -> Result<Self> {
        let d = config.hidden_size;
        let x_embedder =
            PatchEmbed::new(p, "x_embedder", config.in_channels, d, config.patch_size)?;
        let t_embedder = TimestepEmbedder::new(p, "t_embedder", d)?;
        let y_embedder = LabelEmbedder::new(p, "y_embedder", config.label_table_rows(), d)?;
        let pos_embed = p.take("pos_embed", &[1, config.num_patches(), d])?;
        let blocks = (0..config.depth)
            .map(|i| {
                DiTBlock::new(
                    p,
                    &format!("blocks.{i}"),
                    d,
                    config.num_heads,
                    config.mlp_hidden(),
                    qk_norm,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let final_layer = FinalLayer::new(
            p,
            "final_layer",
            d,
            config.patch_size,
            config.out_channels(),
        )?;
        Ok(DiT {
            config: config.clone(),
            x_embedder,
            t_embedder,
            y_embedder,
            pos_embed,
            blocks,
            final_layer,
        })
    }

    /// Builds from a loaded checkpoint and checks that every tensor was used. The label table is
    /// checked first, because a wrong `num_classes` is the most common mistake and deserves a
    /// message that says which value the checkpoint implies.
    pub fn from_state_dict(config: &DiTConfig, sd: StateDict) -> Result<Self> {
        Self::from_state_dict_with(config, false, sd)
    }

    /// [`DiT::from_state_dict`] with timm's `qk_norm` (see [`DiT::build_with`]).
    pub fn from_state_dict_with(
        config: &DiTConfig,
        qk_norm: bool,
        mut sd: StateDict,
    ) -> Result<Self> {
        const TABLE: &str = "y_embedder.embedding_table.weight";
        if let Some(table) = sd.get(TABLE) {
            let rows = table.size().first().copied().unwrap_or(0);
            let expected = config.label_table_rows();
            if rows != expected {
                let hint = if config.class_dropout_prob > 0.0 {
                    format!(
                        " (num_classes + 1 null label); the checkpoint was trained with num_classes = {}: set `num_classes: {}`",
                        rows - 1,
                        rows - 1
                    )
                } else {
                    String::new()
                };
                return Err(EngineError::ShapeMismatch {
                    path: sd.origin().to_path_buf(),
                    key: TABLE.to_string(),
                    expected: vec![expected, config.hidden_size],
                    found: table.size(),
                    hint,
                });
            }
        }
        let model = DiT::build_with(config, qk_norm, &mut sd)?;
        sd.finish()?;
        Ok(model)
    }

    pub fn config(&self) -> &DiTConfig {
        &self.config
    }

    /// `(N, C, H, W)` latents, `(N,)` int64 timesteps (original, not respaced, indices),
    /// `(N,)` int64 labels -> `(N, out_channels, H, W)`.
    pub fn forward(&self, x: &Tensor, t: &Tensor, y: &Tensor) -> Tensor {
        let x = self.x_embedder.forward(x) + &self.pos_embed;
        let c = self.t_embedder.forward(t) + self.y_embedder.forward(y);
        let x = self.blocks.iter().fold(x, |x, block| block.forward(&x, &c));
        let x = self.final_layer.forward(&x, &c);
        self.unpatchify(&x)
    }

    /// `(N, T, p*p*C) -> (N, C, H, W)`, the reference's `einsum('nhwpqc->nchpwq')`.
    fn unpatchify(&self, x: &Tensor) -> Tensor {
        let c = self.config.out_channels();
        let p = self.config.patch_size;
        let n = x.size()[0];
        let h = self.config.input_size / p;
        x.reshape([n, h, h, p, p, c])
            .permute([0, 5, 1, 3, 2, 4])
            .reshape([n, c, h * p, h * p])
    }

    /// The reference's `forward_with_cfg`: runs the first half of `x` twice (conditional labels in
    /// the first half of `y`, null labels in the second), mixes
    /// `uncond + scale * (cond - uncond)` on the guided channels, and returns the guided output
    /// duplicated to the full batch; the unguided channels (the learned variance, and with
    /// `First(3)` the 4th latent channel) are passed through from each half.
    pub fn forward_with_cfg(
        &self,
        x: &Tensor,
        t: &Tensor,
        y: &Tensor,
        cfg_scale: f64,
        channels: CfgChannels,
    ) -> Tensor {
        let n = x.size()[0];
        let half = x.narrow(0, 0, n / 2);
        let combined = Tensor::cat(&[&half, &half], 0);
        let model_out = self.forward(&combined, t, y);
        guide(&model_out, self.config.in_channels, cfg_scale, channels)
    }
}

/// The guidance of the reference's `forward_with_cfg` on a model output whose first half
/// (dim 0) is conditional and second half unconditional: `uncond + scale * (cond - uncond)` on
/// the first `channels` (at most `in_channels`), duplicated to the full batch; the other
/// channels passed through from each half.
pub(crate) fn guide(
    model_out: &Tensor,
    in_channels: i64,
    cfg_scale: f64,
    channels: CfgChannels,
) -> Tensor {
    let n = model_out.size()[0];
    let guided = match channels {
        CfgChannels::First(k) => k.min(in_channels),
        CfgChannels::All => in_channels,
    };
    let total = model_out.size()[1];
    let eps = model_out.narrow(1, 0, guided);
    let rest = model_out.narrow(1, guided, total - guided);
    let halves = eps.split(n / 2, 0);
    let (cond_eps, uncond_eps) = (&halves[0], &halves[1]);
    let half_eps = uncond_eps + (cond_eps - uncond_eps) * cfg_scale;
    let eps = Tensor::cat(&[&half_eps, &half_eps], 0);
    Tensor::cat(&[&eps, &rest], 1)
}
