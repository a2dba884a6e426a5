//! The sub-modules of the DiT, named like the reference's attributes so that parameter keys
//! match the published checkpoints (`x_embedder.proj`, `t_embedder.mlp.0`, `attn.qkv`, ...).
use crate::error::Result;
use crate::nn::{Conv2d, Linear};
use crate::params::{join, ParamSource};
use tch::{Kind, Tensor};

/// timm's `PatchEmbed`: a conv with kernel = stride = patch (`proj`), then flatten to tokens
/// (B, T, D).
///
/// The non-overlapping conv is computed as what it is, patches times a matrix: libtorch's CPU
/// conv picks its algorithm by batch size, which changes float bits with the batch; a GEMM over
/// B*T rows does not (see `nn::Linear::forward`). Same weights, same result to float rounding.
pub(crate) struct PatchEmbed {
    proj: Linear,
    in_ch: i64,
    patch: i64,
}

impl PatchEmbed {
    pub fn new(
        p: &mut dyn ParamSource,
        prefix: &str,
        in_ch: i64,
        dim: i64,
        patch: i64,
    ) -> Result<Self> {
        let proj = Conv2d::new(p, &join(prefix, "proj"), in_ch, dim, patch, patch, 0)?;
        Ok(PatchEmbed {
            proj: Linear {
                weight: proj.weight.reshape([dim, in_ch * patch * patch]),
                bias: Some(proj.bias),
            },
            in_ch,
            patch,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, _, h, w) = x.size4().expect("latents are (B, C, H, W)");
        let (p, c) = (self.patch, self.in_ch);
        let (gh, gw) = (h / p, w / p);
        // (B, C, gh, p, gw, p) -> (B, gh, gw, C, p, p): one row per patch, in the conv's
        // (channel, kernel row, kernel column) order; tokens in row-major patch order.
        let patches = x
            .reshape([b, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b, gh * gw, c * p * p]);
        self.proj.forward(&patches)
    }
}

/// Sinusoidal timestep features (`TimestepEmbedder.timestep_embedding` of the reference, from
/// GLIDE): `[cos(t * f), sin(t * f)]` with `f_k = exp(-ln(max_period) * k / half)`.
pub(crate) fn timestep_embedding(t: &Tensor, dim: i64, max_period: f64) -> Tensor {
    let half = dim / 2;
    let freqs =
        (Tensor::arange(half, (Kind::Float, t.device())) * (-max_period.ln()) / half as f64).exp();
    let args = t.unsqueeze(1).to_kind(Kind::Float) * freqs.unsqueeze(0);
    let emb = Tensor::cat(&[args.cos(), args.sin()], -1);
    if dim % 2 == 1 {
        Tensor::cat(&[&emb, &emb.narrow(1, 0, 1).zeros_like()], -1)
    } else {
        emb
    }
}

/// `TimestepEmbedder`: sinusoidal features (256) -> Linear -> SiLU -> Linear.
pub(crate) struct TimestepEmbedder {
    mlp_0: Linear,
    mlp_2: Linear,
    frequency_embedding_size: i64,
}

impl TimestepEmbedder {
    pub(crate) const FREQUENCY_EMBEDDING_SIZE: i64 = 256;

    pub fn new(p: &mut dyn ParamSource, prefix: &str, dim: i64) -> Result<Self> {
        let f = Self::FREQUENCY_EMBEDDING_SIZE;
        Ok(TimestepEmbedder {
            mlp_0: Linear::new(p, &join(prefix, "mlp.0"), f, dim)?,
            mlp_2: Linear::new(p, &join(prefix, "mlp.2"), dim, dim)?,
            frequency_embedding_size: f,
        })
    }
    pub fn forward(&self, t: &Tensor) -> Tensor {
        let freq = timestep_embedding(t, self.frequency_embedding_size, 10000.0);
        self.mlp_2.forward(&self.mlp_0.forward(&freq).silu())
    }
}

/// `LabelEmbedder`: a table lookup; row `num_classes` is the null label of classifier-free
/// guidance. Label dropout only happens in training, so sampling is a plain lookup.
pub(crate) struct LabelEmbedder {
    embedding_table: Tensor,
}

impl LabelEmbedder {
    pub fn new(p: &mut dyn ParamSource, prefix: &str, rows: i64, dim: i64) -> Result<Self> {
        Ok(LabelEmbedder {
            embedding_table: p.take(&join(prefix, "embedding_table.weight"), &[rows, dim])?,
        })
    }
    pub fn forward(&self, y: &Tensor) -> Tensor {
        Tensor::embedding(&self.embedding_table, y, -1, false, false)
    }
}

/// timm's `Attention(dim, num_heads, qkv_bias=True, qk_norm)`: fused qkv projection, optional
/// LayerNorms on queries and keys (`q_norm`, `k_norm`; SiT's `qk_norm`), scaled dot-product
/// attention over heads, output projection.
pub(crate) struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: i64,
    qk_norm: Option<(HeadNorm, HeadNorm)>,
}

/// timm's `norm_layer` of `qk_norm`: `nn.LayerNorm(head_dim)` with affine parameters, eps 1e-5.
pub(crate) struct HeadNorm {
    weight: Tensor,
    bias: Tensor,
    dim: i64,
}

impl HeadNorm {
    fn new(p: &mut dyn ParamSource, prefix: &str, dim: i64) -> Result<Self> {
        Ok(HeadNorm {
            weight: p.take(&join(prefix, "weight"), &[dim])?,
            bias: p.take(&join(prefix, "bias"), &[dim])?,
            dim,
        })
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm([self.dim], Some(&self.weight), Some(&self.bias), 1e-5, true)
    }
}

impl Attention {
    pub fn new(
        p: &mut dyn ParamSource,
        prefix: &str,
        dim: i64,
        num_heads: i64,
        qk_norm: bool,
    ) -> Result<Self> {
        let head_dim = dim / num_heads;
        let qk_norm = if qk_norm {
            Some((
                HeadNorm::new(p, &join(prefix, "q_norm"), head_dim)?,
                HeadNorm::new(p, &join(prefix, "k_norm"), head_dim)?,
            ))
        } else {
            None
        };
        Ok(Attention {
            qkv: Linear::new(p, &join(prefix, "qkv"), dim, 3 * dim)?,
            proj: Linear::new(p, &join(prefix, "proj"), dim, dim)?,
            num_heads,
            qk_norm,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, n, c) = x.size3().expect("attention input is (B, N, C)");
        let head_dim = c / self.num_heads;
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, n, 3, self.num_heads, head_dim])
            .permute([2, 0, 3, 1, 4]);
        let (mut q, mut k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        if let Some((q_norm, k_norm)) = &self.qk_norm {
            q = q_norm.forward(&q);
            k = k_norm.forward(&k);
        }
        let out = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        );
        self.proj.forward(&out.transpose(1, 2).reshape([b, n, c]))
    }
}

/// timm's `Mlp` with `GELU(approximate="tanh")`: fc1 -> GELU -> fc2.
pub(crate) struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    pub fn new(p: &mut dyn ParamSource, prefix: &str, dim: i64, hidden: i64) -> Result<Self> {
        Ok(Mlp {
            fc1: Linear::new(p, &join(prefix, "fc1"), dim, hidden)?,
            fc2: Linear::new(p, &join(prefix, "fc2"), hidden, dim)?,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.fc1.forward(x).gelu("tanh"))
    }
}
