//! A diffusion model as a TorchScript module: `forward(x, t, y)` with latents `x` `(N, C, H,
//! W)` float32, labels `y` `(N,)` int64 (the null label `num_classes` for the unconditional
//! half of guidance) and `t` `(N,)` by family: int64 timesteps in 0..1000 for `dit` (an epsilon
//! model, DiT's `models.py`), float32 times in [0, 1] for `sit` (a velocity model, REPA's
//! convention: t = 1 is noise). The output is `(N, C, H, W)`, or `(N, 2C, H, W)` with a learned
//! variance (`learn_sigma`).
use super::{first_line, forward, load_module};
use crate::error::{EngineError, Result};
use fidshard_core::{DiTConfig, ModelFamily};
use std::path::{Path, PathBuf};
use tch::{CModule, Device, Kind, Tensor};

pub struct ScriptModel {
    module: CModule,
    path: PathBuf,
    /// The shape facts of the job's `model.config` (or preset).
    config: DiTConfig,
}

impl ScriptModel {
    /// Loads the module and checks its contract on one sample (see [`ScriptModel::check`]).
    pub fn load(
        path: &Path,
        config: &DiTConfig,
        family: ModelFamily,
        device: Device,
    ) -> Result<Self> {
        let model = ScriptModel {
            module: load_module(path, "model.torchscript", device)?,
            path: path.to_path_buf(),
            config: config.clone(),
        };
        model.check(family, device)?;
        Ok(model)
    }

    pub fn config(&self) -> &DiTConfig {
        &self.config
    }

    /// The module's output for `x`, `t`, `y` (see the module documentation).
    pub fn forward(&self, x: &Tensor, t: &Tensor, y: &Tensor) -> Tensor {
        forward(&self.module, &self.path, &[x, t, y])
    }

    /// One forward pass on a one-sample input of the family's types: it must run and return
    /// `(1, C, H, W)`, or `(1, 2C, H, W)` (for `dit`, as `learn_sigma` says).
    fn check(&self, family: ModelFamily, device: Device) -> Result<()> {
        let c = &self.config;
        let (ch, side) = (c.in_channels, c.input_size);
        let x = Tensor::zeros([1, ch, side, side], (Kind::Float, device));
        let t = match family {
            ModelFamily::Dit => Tensor::full([1], 999, (Kind::Int64, device)),
            ModelFamily::Sit => Tensor::full([1], 1.0, (Kind::Float, device)),
        };
        let y = Tensor::full([1], c.null_label(), (Kind::Int64, device));
        let t_kind = match family {
            ModelFamily::Dit => "int64 timesteps",
            ModelFamily::Sit => "float32 times in [0, 1]",
        };
        let out = self.module.forward_ts(&[&x, &t, &y]).map_err(|e| {
            self.bad(format!(
                "forward(x, t, y) failed on x {:?} float32, t {t_kind} (model.family: {}), y int64: {}",
                x.size(),
                family.as_str(),
                first_line(&e.to_string())
            ))
        })?;
        let allowed = match family {
            ModelFamily::Dit => vec![c.out_channels()],
            ModelFamily::Sit => vec![ch, 2 * ch],
        };
        let size = out.size();
        let fits = size.len() == 4
            && size[0] == 1
            && allowed.contains(&size[1])
            && size[2..] == [side, side];
        if !fits {
            let want = match family {
                ModelFamily::Dit if c.learn_sigma => format!("2 * in_channels = {}", 2 * ch),
                ModelFamily::Dit => format!("in_channels = {ch}"),
                ModelFamily::Sit => format!("in_channels = {ch} or {}", 2 * ch),
            };
            return Err(self.bad(format!(
                "returned {size:?} for input {:?}; expected (N, {want}, H, W){}",
                x.size(),
                if family == ModelFamily::Dit {
                    " (set learn_sigma in model.config to what the model predicts)"
                } else {
                    ""
                }
            )));
        }
        Ok(())
    }

    fn bad(&self, msg: String) -> EngineError {
        EngineError::checkpoint(&self.path, format!("`model.torchscript`: {msg}"))
    }
}
