//! Which sampler a job runs and the keys that belong to it: the DiT family samples with the
//! Gaussian diffusion (`ddpm`, `ddim`), the SiT family with REPA's flow samplers (`ode`, `sde`);
//! a key of one kind in a job of the other is refused (exit 2) naming the key, never ignored.
use super::raw::{CfgChannelsSpec, PerChannel, RawJob, VarianceChoice};
use super::resolve::Resolver;
use anyhow::{bail, Result};
use fidshard_core::flow::{FlowSettings, ModelFamily};
use fidshard_core::SamplerKind;

impl Resolver<'_> {
    /// `sampler`, checked against `model.family`; the default is `ddpm` for DiT, `ode` for SiT
    /// (REPA's generate.py default mode).
    pub(super) fn sampler(&self, raw: &RawJob) -> Result<SamplerKind> {
        let family = raw.model.family;
        let sampler = raw.sampler.unwrap_or(match family {
            ModelFamily::Dit => SamplerKind::Ddpm,
            ModelFamily::Sit => SamplerKind::Ode,
        });
        match (family, sampler.is_flow()) {
            (ModelFamily::Dit, true) => bail!(self.err(
                "sampler",
                format!(
                    "`{}` is a flow sampler for a velocity model: set `model.family: sit`, or use ddpm or ddim for a DiT",
                    sampler.as_str()
                )
            )),
            (ModelFamily::Sit, false) => bail!(self.err(
                "sampler",
                format!(
                    "`{}` samples a DiT (epsilon model); a SiT (model.family: sit) samples with `ode` or `sde`",
                    sampler.as_str()
                )
            )),
            _ => Ok(sampler),
        }
    }

    /// The flow samplers' keys (`solver`, `path_type`, `guidance_interval`), refused where they
    /// do not apply, as are the diffusion-only keys in a flow job.
    pub(super) fn flow_settings(
        &self,
        raw: &RawJob,
        sampler: SamplerKind,
        qk_norm: bool,
    ) -> Result<FlowSettings> {
        let flow_only = [
            ("solver", raw.solver.is_some()),
            ("path_type", raw.path_type.is_some()),
            ("guidance_interval", raw.guidance_interval.is_some()),
        ];
        if !sampler.is_flow() {
            if let Some((key, _)) = flow_only.iter().find(|(_, set)| *set) {
                bail!(self.err(
                    key,
                    format!(
                        "applies to the flow samplers (`sampler: ode | sde`, model.family: sit) only, not to `{}`; remove it",
                        sampler.as_str()
                    )
                ));
            }
            return Ok(FlowSettings::default());
        }
        self.diffusion_keys_absent(raw, sampler)?;
        if sampler == SamplerKind::Sde && raw.solver.is_some() {
            bail!(self.err(
                "solver",
                "applies to `sampler: ode` only (the SDE sampler is Euler-Maruyama); remove it"
            ));
        }
        if sampler == SamplerKind::Ode && raw.path_type.is_some() {
            bail!(self.err(
                "path_type",
                "applies to `sampler: sde` only (the ODE follows the velocity whatever the path); remove it"
            ));
        }
        let interval = raw.guidance_interval.unwrap_or([0.0, 1.0]);
        let [low, high] = interval;
        if !(low.is_finite() && high.is_finite() && low <= high) {
            bail!(self.err(
                "guidance_interval",
                format!(
                    "[{low}, {high}] is not an interval [low, high] of times with low <= high (REPA's FID recipe uses [0, 0.7])"
                )
            ));
        }
        Ok(FlowSettings {
            solver: raw.solver.unwrap_or_default(),
            path_type: raw.path_type.unwrap_or_default(),
            guidance_interval: interval,
            qk_norm,
        })
    }

    /// `latent_scale` / `latent_bias`: finite numbers, one or `in_channels` of them; a scale is
    /// never 0.
    pub(super) fn per_channel(
        &self,
        key: &str,
        value: &Option<PerChannel>,
        channels: i64,
    ) -> Result<Option<Vec<f64>>> {
        let Some(PerChannel(v)) = value else {
            return Ok(None);
        };
        if v.len() != 1 && v.len() as i64 != channels {
            bail!(self.err(
                key,
                format!(
                    "lists {} numbers; expected one, or one per latent channel ({channels})",
                    v.len()
                )
            ));
        }
        let scale = key == "latent_scale";
        if let Some(x) = v.iter().find(|x| !x.is_finite() || (scale && **x == 0.0)) {
            bail!(self.err(
                key,
                format!(
                    "{x} is not a finite{} number (the decoder gets (z - latent_bias) / latent_scale)",
                    if scale { ", non-zero" } else { "" }
                )
            ));
        }
        Ok(Some(v.clone()))
    }

    /// The Gaussian diffusion's keys, which a flow sampler has no use for.
    fn diffusion_keys_absent(&self, raw: &RawJob, sampler: SamplerKind) -> Result<()> {
        let name = sampler.as_str();
        if raw.beta_schedule.is_some() {
            bail!(self.err(
                "beta_schedule",
                format!("applies to ddpm and ddim only, not to `{name}`; remove it")
            ));
        }
        if raw.variance != VarianceChoice::Auto {
            bail!(self.err(
                "variance",
                format!("applies to ddpm and ddim only, not to `{name}`; remove it")
            ));
        }
        if let Some(CfgChannelsSpec::First(_)) = raw.cfg_channels {
            bail!(self.err(
                "cfg_channels",
                format!(
                    "`{name}` guides all latent channels, as REPA's samplers do; remove it or write `all`"
                )
            ));
        }
        Ok(())
    }
}
