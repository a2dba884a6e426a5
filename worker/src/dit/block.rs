//! `DiTBlock` (adaLN-Zero conditioning, paper section 3.2) and `FinalLayer`.
use super::layers::{Attention, Mlp};
use crate::error::Result;
use crate::nn::{LayerNormNoAffine, Linear};
use crate::params::{join, ParamSource};
use tch::Tensor;

/// `x * (1 + scale) + shift`, with shift/scale broadcast over tokens.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Tensor {
    x * (scale.unsqueeze(1) + 1.0) + shift.unsqueeze(1)
}

/// The reference's LayerNorms: no affine parameters, eps 1e-6.
const LN_EPS: f64 = 1e-6;

pub(crate) struct DiTBlock {
    norm1: LayerNormNoAffine,
    attn: Attention,
    norm2: LayerNormNoAffine,
    mlp: Mlp,
    /// `adaLN_modulation = Sequential(SiLU(), Linear(D, 6D))`: parameters live at index 1.
    ada_ln_modulation_1: Linear,
}

impl DiTBlock {
    pub fn new(
        p: &mut dyn ParamSource,
        prefix: &str,
        dim: i64,
        num_heads: i64,
        mlp_hidden: i64,
        qk_norm: bool,
    ) -> Result<Self> {
        Ok(DiTBlock {
            norm1: LayerNormNoAffine::new(dim, LN_EPS),
            attn: Attention::new(p, &join(prefix, "attn"), dim, num_heads, qk_norm)?,
            norm2: LayerNormNoAffine::new(dim, LN_EPS),
            mlp: Mlp::new(p, &join(prefix, "mlp"), dim, mlp_hidden)?,
            ada_ln_modulation_1: Linear::new(p, &join(prefix, "adaLN_modulation.1"), dim, 6 * dim)?,
        })
    }

    pub fn forward(&self, x: &Tensor, c: &Tensor) -> Tensor {
        let m = self.ada_ln_modulation_1.forward(&c.silu()).chunk(6, 1);
        let (shift_msa, scale_msa, gate_msa) = (&m[0], &m[1], &m[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&m[3], &m[4], &m[5]);
        let h = self
            .attn
            .forward(&modulate(&self.norm1.forward(x), shift_msa, scale_msa));
        let x = x + gate_msa.unsqueeze(1) * h;
        let h = self
            .mlp
            .forward(&modulate(&self.norm2.forward(&x), shift_mlp, scale_mlp));
        &x + gate_mlp.unsqueeze(1) * h
    }
}

pub(crate) struct FinalLayer {
    norm_final: LayerNormNoAffine,
    linear: Linear,
    ada_ln_modulation_1: Linear,
}

impl FinalLayer {
    pub fn new(
        p: &mut dyn ParamSource,
        prefix: &str,
        dim: i64,
        patch: i64,
        out_ch: i64,
    ) -> Result<Self> {
        Ok(FinalLayer {
            norm_final: LayerNormNoAffine::new(dim, LN_EPS),
            linear: Linear::new(p, &join(prefix, "linear"), dim, patch * patch * out_ch)?,
            ada_ln_modulation_1: Linear::new(p, &join(prefix, "adaLN_modulation.1"), dim, 2 * dim)?,
        })
    }

    pub fn forward(&self, x: &Tensor, c: &Tensor) -> Tensor {
        let m = self.ada_ln_modulation_1.forward(&c.silu()).chunk(2, 1);
        let x = modulate(&self.norm_final.forward(x), &m[0], &m[1]);
        self.linear.forward(&x)
    }
}
