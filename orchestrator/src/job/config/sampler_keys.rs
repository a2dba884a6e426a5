//! Which sampler a job runs and the keys that belong to it: the DiT family samples with the
//! Gaussian diffusion (`ddpm`, `ddim`), the SiT family with REPA's flow samplers (`ode`, `sde`)
//! or SiT's own (`sit-ode`, `sit-sde`);
//! a key of one kind in a job of the other is refused (exit 2) naming the key, never ignored.
use super::raw::{CfgChannelsSpec, PerChannel, RawJob, VarianceChoice};
use super::resolve::Resolver;
use anyhow::{bail, Result};
use fidshard_core::flow::{FlowSettings, ModelFamily};
use fidshard_core::sit_transport::{DiffusionForm, LastStep, SitSde};
use fidshard_core::SamplerKind;

const SIT_SDE_ONLY: &str = "`sampler: sit-sde` only (SiT's SDE, a flow sampler)";

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
                    "`{}` samples a DiT (epsilon model); a SiT (model.family: sit) samples with `ode` or `sde` (REPA's samplers) or `sit-ode` or `sit-sde` (SiT's)",
                    sampler.as_str()
                )
            )),
            _ => Ok(sampler),
        }
    }

    /// The flow samplers' keys, refused where they do not apply, as are the diffusion-only keys
    /// in a flow job: `solver` (ode, sit-ode, sit-sde), `path_type` (sde), `guidance_interval`
    /// (ode, sde), and SiT's SDE keys (sit-sde).
    pub(super) fn flow_settings(
        &self,
        raw: &RawJob,
        sampler: SamplerKind,
        qk_norm: bool,
    ) -> Result<FlowSettings> {
        let applies: [(&str, bool, &str); 7] = [
            ("solver", raw.solver.is_some(), "the flow samplers `ode`, `sit-ode` and `sit-sde` only"),
            ("path_type", raw.path_type.is_some(), "`sampler: sde` only (REPA's SDE, a flow sampler; SiT's samplers follow the Linear path)"),
            ("guidance_interval", raw.guidance_interval.is_some(), "the flow samplers only"),
            ("diffusion_form", raw.diffusion_form.is_some(), SIT_SDE_ONLY),
            ("diffusion_norm", raw.diffusion_norm.is_some(), SIT_SDE_ONLY),
            ("last_step", raw.last_step.is_some(), SIT_SDE_ONLY),
            ("last_step_size", raw.last_step_size.is_some(), SIT_SDE_ONLY),
        ];
        let allowed = |key: &str| match key {
            "solver" => matches!(
                sampler,
                SamplerKind::Ode | SamplerKind::SitOde | SamplerKind::SitSde
            ),
            "path_type" => sampler == SamplerKind::Sde,
            "guidance_interval" => sampler.is_flow(),
            _ => sampler == SamplerKind::SitSde,
        };
        if let Some((key, _, which)) = applies.iter().find(|(k, set, _)| *set && !allowed(k)) {
            bail!(self.err(
                key,
                format!(
                    "applies to {which}, not to `{}`; remove it",
                    sampler.as_str()
                )
            ));
        }
        if !sampler.is_flow() {
            return Ok(FlowSettings::default());
        }
        self.diffusion_keys_absent(raw, sampler)?;
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
            sit_sde: self.sit_sde(raw)?,
        })
    }

    /// SiT's SDE settings (`diffusion_form`, `diffusion_norm`, `last_step`, `last_step_size`),
    /// SiT's command-line defaults where absent.
    fn sit_sde(&self, raw: &RawJob) -> Result<SitSde> {
        let mut sde = SitSde::default();
        if let Some(form) = &raw.diffusion_form {
            sde.diffusion_form =
                DiffusionForm::parse(form).map_err(|e| self.err("diffusion_form", e))?;
        }
        if let Some(norm) = raw.diffusion_norm {
            if !(norm.is_finite() && norm >= 0.0) {
                bail!(self.err(
                    "diffusion_norm",
                    format!("{norm} is not a finite number >= 0 (SiT's default is 1)")
                ));
            }
            sde.diffusion_norm = norm;
        }
        if let Some(last) = &raw.last_step {
            sde.last_step = LastStep::parse(last).map_err(|e| self.err("last_step", e))?;
        }
        match raw.last_step_size {
            Some(_) if sde.last_step == LastStep::None => bail!(self.err(
                "last_step_size",
                "has no effect with `last_step: none` (the grid then runs to t = 1); remove it"
            )),
            Some(size) if !(size.is_finite() && size > 0.0 && size < 1.0) => bail!(self.err(
                "last_step_size",
                format!("{size} is not in (0, 1) (SiT's default is 0.04)")
            )),
            Some(size) => sde.last_step_size = size,
            None if sde.last_step == LastStep::None => sde.last_step_size = 0.0,
            None => {}
        }
        Ok(sde)
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
        if let (Some(CfgChannelsSpec::First(_)), false) =
            (&raw.cfg_channels, sampler.is_sit_transport())
        {
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
