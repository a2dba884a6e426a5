//! Diffusers-format DiT checkpoints (`DiTTransformer2DModel`, diffusers 0.32
//! `models/transformers/dit_transformer_2d.py`; `facebook/DiT-XL-2-256`'s `transformer/`) mapped
//! onto the state_dict of the published DiT (`models.py` of facebookresearch/DiT), which
//! crate::dit builds. fidshard_core::diffusers_dit finds the folder and reads its config.
//!
//! | published DiT                        | diffusers                                                  |
//! |--------------------------------------|------------------------------------------------------------|
//! | `x_embedder.proj.*`                  | `pos_embed.proj.*` (`PatchEmbed`)                          |
//! | `pos_embed` (fixed sin-cos parameter)| not stored (`PatchEmbed`'s non-persistent buffer): computed |
//! | `t_embedder.mlp.{0,2}.*`             | `transformer_blocks.0.norm1.emb.timestep_embedder.linear_{1,2}.*` |
//! | `y_embedder.embedding_table.weight`  | `transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight` |
//! | `blocks.N.attn.qkv.*`                | `transformer_blocks.N.attn1.to_{q,k,v}.*`, concatenated     |
//! | `blocks.N.attn.proj.*`               | `transformer_blocks.N.attn1.to_out.0.*`                     |
//! | `blocks.N.mlp.fc{1,2}.*`             | `transformer_blocks.N.ff.net.{0.proj,2}.*`                  |
//! | `blocks.N.adaLN_modulation.1.*`      | `transformer_blocks.N.norm1.linear.*`                       |
//! | `final_layer.adaLN_modulation.1.*`   | `proj_out_1.*`                                              |
//! | `final_layer.linear.*`               | `proj_out_2.*`                                              |
//!
//! No chunk is reordered: diffusers' `AdaLayerNormZero.forward` splits its linear's output as
//! `shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = emb.chunk(6, dim=1)`, the
//! order of `DiTBlock.forward`, and `DiTTransformer2DModel.forward` splits `proj_out_1`'s as
//! `shift, scale = ....chunk(2, dim=1)`, the order of `FinalLayer.forward`.
//!
//! The published DiT has one timestep and one class embedder; diffusers gives each block's
//! `norm1` its own (`CombinedTimestepLabelEmbeddings`), and its conversion script copies DiT's
//! into every block, so they must be equal: a model whose blocks differ is not a DiT.
//!
//! fidshard then runs the published forward, which differs from diffusers' own in two numeric
//! details (docs/models.md): the timestep frequencies (`exp(-ln(10^4) k / 128)` in DiT,
//! `/ 127` in diffusers' `Timesteps(downscale_freq_shift=1)`) and the eps of the LayerNorm
//! before the MLP (1e-6 in DiT, diffusers' `norm_eps`, 1e-5 by default).
use super::load_state_dict;
use crate::dit::DiTConfig;
use crate::error::{EngineError, Result};
use crate::params::{ParamSource, StateDict};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// The published-layout state dict of the diffusers DiT at `path` (a folder, or its weights file
/// with config.json beside it), or `None` when `path` is no diffusers DiT. Errors name the
/// weights file and the diffusers key that is missing, misshapen or not used.
pub fn load(path: &Path, config: &DiTConfig) -> Result<Option<StateDict>> {
    let Some(found) = fidshard_core::diffusers_dit::find(path)? else {
        return Ok(None);
    };
    to_published(load_state_dict(&found.weights)?, config).map(Some)
}

/// Renames and concatenates a diffusers DiT's tensors onto the published layout (see the module
/// docs); every tensor of `sd` must be used.
pub fn to_published(mut sd: StateDict, config: &DiTConfig) -> Result<StateDict> {
    let mut out = BTreeMap::new();
    patch_embed(&mut sd, config, &mut out)?;
    conditioning(&mut sd, config, &mut out)?;
    for i in 0..config.depth {
        attention(&mut sd, config, i, &mut out)?;
        feed_forward(&mut sd, config, i, &mut out)?;
        block_modulation(&mut sd, config, i, &mut out)?;
    }
    final_layer(&mut sd, config, &mut out)?;
    out.insert(
        "pos_embed".to_string(),
        sincos_pos_embed(config.hidden_size, config.input_size / config.patch_size),
    );
    let origin = sd.origin().to_path_buf();
    sd.finish()?;
    Ok(StateDict::new(origin, out))
}

type Out = BTreeMap<String, Tensor>;

/// `weight` and `bias` of the linear `from` (`[rows, cols]`, `[rows]`) as `to`.
fn linear(
    sd: &mut StateDict,
    from: &str,
    to: &str,
    rows: i64,
    cols: i64,
    out: &mut Out,
) -> Result<()> {
    out.insert(
        format!("{to}.weight"),
        sd.take(&format!("{from}.weight"), &[rows, cols])?,
    );
    out.insert(
        format!("{to}.bias"),
        sd.take(&format!("{from}.bias"), &[rows])?,
    );
    Ok(())
}

/// diffusers' `PatchEmbed.proj` is timm's `PatchEmbed.proj`, DiT's `x_embedder.proj`: the same
/// conv (kernel = stride = patch).
fn patch_embed(sd: &mut StateDict, c: &DiTConfig, out: &mut Out) -> Result<()> {
    let (d, p) = (c.hidden_size, c.patch_size);
    let w = sd.take("pos_embed.proj.weight", &[d, c.in_channels, p, p])?;
    out.insert("x_embedder.proj.weight".into(), w);
    out.insert(
        "x_embedder.proj.bias".into(),
        sd.take("pos_embed.proj.bias", &[d])?,
    );
    Ok(())
}

/// DiT's shared `t_embedder` (`mlp.0`, SiLU, `mlp.2`: diffusers' `TimestepEmbedding`'s
/// `linear_1`, SiLU, `linear_2`) and `y_embedder` (diffusers' `LabelEmbedding`, the same table
/// with the null row last) from block 0's `norm1.emb`; the other blocks' copies must be equal.
fn conditioning(sd: &mut StateDict, c: &DiTConfig, out: &mut Out) -> Result<()> {
    let d = c.hidden_size;
    let f = crate::dit::FREQUENCY_EMBEDDING_SIZE;
    let parts: [(&str, &str, Vec<i64>); 5] = [
        (
            "timestep_embedder.linear_1.weight",
            "t_embedder.mlp.0.weight",
            vec![d, f],
        ),
        (
            "timestep_embedder.linear_1.bias",
            "t_embedder.mlp.0.bias",
            vec![d],
        ),
        (
            "timestep_embedder.linear_2.weight",
            "t_embedder.mlp.2.weight",
            vec![d, d],
        ),
        (
            "timestep_embedder.linear_2.bias",
            "t_embedder.mlp.2.bias",
            vec![d],
        ),
        (
            "class_embedder.embedding_table.weight",
            "y_embedder.embedding_table.weight",
            vec![c.label_table_rows(), d],
        ),
    ];
    for (from, to, shape) in parts {
        let first = sd.take(&format!("transformer_blocks.0.norm1.emb.{from}"), &shape)?;
        for i in 1..c.depth {
            let key = format!("transformer_blocks.{i}.norm1.emb.{from}");
            let t = sd.take(&key, &shape)?;
            if !t.equal(&first) {
                return Err(EngineError::checkpoint(
                    sd.origin(),
                    format!(
                        "`{key}` differs from block 0's: the published DiT shares one timestep \
                         and class embedder between its blocks (diffusers' conversion copies it \
                         into each), so this model cannot be run as a DiT"
                    ),
                ));
            }
        }
        out.insert(to.to_string(), first);
    }
    Ok(())
}

/// diffusers' `Attention` (`to_q`, `to_k`, `to_v`, `to_out.0`) onto timm's (`qkv`, `proj`):
/// timm splits `qkv`'s output as `reshape(B, N, 3, heads, head_dim)`, so q, k and v are
/// concatenated along the output rows in that order.
fn attention(sd: &mut StateDict, c: &DiTConfig, i: i64, out: &mut Out) -> Result<()> {
    let d = c.hidden_size;
    let from = format!("transformer_blocks.{i}.attn1");
    for (w, shape) in [("weight", vec![d, d]), ("bias", vec![d])] {
        let qkv = ["to_q", "to_k", "to_v"]
            .iter()
            .map(|x| sd.take(&format!("{from}.{x}.{w}"), &shape))
            .collect::<Result<Vec<_>>>()?;
        out.insert(format!("blocks.{i}.attn.qkv.{w}"), Tensor::cat(&qkv, 0));
    }
    linear(
        sd,
        &format!("{from}.to_out.0"),
        &format!("blocks.{i}.attn.proj"),
        d,
        d,
        out,
    )
}

/// diffusers' `FeedForward` with `GELU(approximate="tanh")` (`net.0.proj`, `net.2`) onto timm's
/// `Mlp` (`fc1`, `fc2`).
fn feed_forward(sd: &mut StateDict, c: &DiTConfig, i: i64, out: &mut Out) -> Result<()> {
    let (d, h) = (c.hidden_size, c.mlp_hidden());
    let (from, to) = (
        format!("transformer_blocks.{i}.ff.net"),
        format!("blocks.{i}.mlp"),
    );
    linear(
        sd,
        &format!("{from}.0.proj"),
        &format!("{to}.fc1"),
        h,
        d,
        out,
    )?;
    linear(sd, &format!("{from}.2"), &format!("{to}.fc2"), d, h, out)
}

/// `AdaLayerNormZero.linear` is `adaLN_modulation.1`, chunks in the same order (module docs).
fn block_modulation(sd: &mut StateDict, c: &DiTConfig, i: i64, out: &mut Out) -> Result<()> {
    let d = c.hidden_size;
    let (from, to) = (
        format!("transformer_blocks.{i}.norm1.linear"),
        format!("blocks.{i}.adaLN_modulation.1"),
    );
    linear(sd, &from, &to, 6 * d, d, out)
}

/// `proj_out_1` (shift, scale) and `proj_out_2` are `FinalLayer`'s `adaLN_modulation.1` and
/// `linear`.
fn final_layer(sd: &mut StateDict, c: &DiTConfig, out: &mut Out) -> Result<()> {
    let d = c.hidden_size;
    let rows = c.patch_size * c.patch_size * c.out_channels();
    linear(
        sd,
        "proj_out_1",
        "final_layer.adaLN_modulation.1",
        2 * d,
        d,
        out,
    )?;
    linear(sd, "proj_out_2", "final_layer.linear", rows, d, out)
}

/// The published DiT's fixed `pos_embed` (`get_2d_sincos_pos_embed(hidden, grid)` of MAE,
/// computed in float64 and stored as float32), `(1, grid * grid, hidden)`: token `r * grid + c`
/// holds `[sin(c w), cos(c w), sin(r w), cos(r w)]` with `w_k = 10000^(-k / (hidden / 4))`,
/// `k < hidden / 4` (the first half encodes `np.meshgrid(grid_w, grid_h)[0]`, the column).
pub fn sincos_pos_embed(hidden: i64, grid: i64) -> Tensor {
    let opts = (Kind::Double, tch::Device::Cpu);
    let quarter = hidden / 4;
    let omega = (Tensor::arange(quarter, opts) * (-(10000f64.ln()) / quarter as f64)).exp();
    let pos = Tensor::arange(grid, opts);
    let angles = pos.unsqueeze(1) * omega.unsqueeze(0);
    let one_d = Tensor::cat(&[angles.sin(), angles.cos()], 1);
    let half = one_d.size()[1];
    let cols = one_d.unsqueeze(0).expand([grid, grid, half], false);
    let rows = one_d.unsqueeze(1).expand([grid, grid, half], false);
    Tensor::cat(&[cols, rows], 2)
        .reshape([1, grid * grid, 2 * half])
        .to_kind(Kind::Float)
}
