//! Where a batch's latents first stopped being finite: per-step flags kept on the device and
//! read only on failure, and the check that turns NaN/inf into an error instead of black
//! pixels.
use crate::error::{EngineError, Result, StepAt, StepFault};
use tch::{Device, Kind, Tensor};

/// Per-step finiteness of one batch's trajectory: after each sampling step, whether the DiT's
/// output and the updated latents are all finite, as 0-dim bool tensors on the device
/// (`isfinite().all()`). Recording never synchronises the device: it queues five small kernels
/// per step (two `isfinite`, two `all` reductions over the latents and the DiT output, one
/// `stack` of two bools), microseconds next to a DiT forward; memory is one 2-bool tensor per
/// step. The flags are read back (one synchronisation) only when the final latents turn out not
/// finite, to name the step.
#[derive(Default)]
pub(crate) struct StepChecks {
    /// Per step in sampling order: where it is, and the flags `[model output finite, latents
    /// finite]` stacked into one bool tensor of 2.
    steps: Vec<(StepAt, Tensor)>,
}

impl StepChecks {
    pub(crate) fn record(&mut self, at: StepAt, model_output: &Tensor, x: &Tensor) {
        let flags = Tensor::stack(&[model_output.isfinite().all(), x.isfinite().all()], 0);
        self.steps.push((at, flags));
    }

    /// The first step whose DiT output or updated latents hold a NaN or an infinity (reads all
    /// the flags back at once).
    pub fn first_non_finite(&self) -> Option<StepFault> {
        if self.steps.is_empty() {
            return None;
        }
        let flags: Vec<Tensor> = self.steps.iter().map(|s| s.1.shallow_clone()).collect();
        let flags = Tensor::stack(&flags, 0).to_device(Device::Cpu);
        let flags = Vec::<bool>::try_from(flags.view([-1])).ok()?;
        let steps = self.steps.len();
        (0..steps).find_map(|k| {
            let (out_ok, x_ok) = (flags[2 * k], flags[2 * k + 1]);
            (!out_ok || !x_ok).then(|| StepFault {
                step: k + 1,
                steps,
                at: self.steps[k].0,
                in_model_output: !out_ok,
            })
        })
    }
}

/// Fails with [`EngineError::NonFinite`] when `x` holds a NaN or an infinity (one reduction on
/// the device; it synchronises once per batch, not per step). `first` names the sampling step
/// where they first appeared; it is called only on failure.
pub fn check_finite(
    x: &Tensor,
    stage: &'static str,
    first: impl FnOnce() -> Option<StepFault>,
) -> Result<()> {
    let bad = x.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]);
    if bad > 0 {
        return Err(EngineError::NonFinite {
            stage,
            count: bad,
            total: x.numel() as i64,
            first: first(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latents(v: f32) -> Tensor {
        Tensor::full([2, 4, 2, 2], f64::from(v), (Kind::Float, Device::Cpu))
    }

    /// Records a 4-step chain (respaced indices 3..0, model timesteps 999, 666, 333, 0) whose
    /// step `bad` (0-based) has the given DiT output and latents; the steps before are finite and
    /// the steps after carry the latents on.
    fn chain(bad: usize, out: f32, x: f32) -> StepChecks {
        let mut checks = StepChecks::default();
        for (k, t) in [999, 666, 333, 0].into_iter().enumerate() {
            let (o, l) = match k.cmp(&bad) {
                std::cmp::Ordering::Less => (1.0, 1.0),
                std::cmp::Ordering::Equal => (out, x),
                std::cmp::Ordering::Greater => (out, f32::NAN),
            };
            let at = StepAt::Diffusion {
                index: 3 - k,
                timestep: t,
            };
            checks.record(at, &latents(o), &latents(l));
        }
        checks
    }

    #[test]
    fn first_non_finite_step_and_where() {
        assert_eq!(chain(9, 1.0, 1.0).first_non_finite(), None, "all finite");
        let f = chain(1, f32::NAN, f32::NAN).first_non_finite().unwrap();
        assert_eq!(
            f,
            StepFault {
                step: 2,
                steps: 4,
                at: StepAt::Diffusion {
                    index: 2,
                    timestep: 666
                },
                in_model_output: true
            }
        );
        let f = chain(2, 1e30, f32::INFINITY).first_non_finite().unwrap();
        assert_eq!(f.step, 3);
        assert_eq!(
            f.at,
            StepAt::Diffusion {
                index: 1,
                timestep: 333
            }
        );
        assert!(!f.in_model_output, "the DiT output was finite");
        assert_eq!(StepChecks::default().first_non_finite(), None);
    }

    #[test]
    fn non_finite_message_names_the_step_and_fitting_causes() {
        let x = Tensor::from_slice(&[1.0f32, f32::NAN, f32::INFINITY, 0.0]);
        let err = |in_model_output| {
            check_finite(&x, "the final latents", || {
                Some(StepFault {
                    step: 1,
                    steps: 8,
                    at: StepAt::Diffusion {
                        index: 7,
                        timestep: 999,
                    },
                    in_model_output,
                })
            })
            .unwrap_err()
            .to_string()
        };
        let dit = err(true);
        assert!(
            dit.starts_with(
                "2 of 4 values of the final latents are NaN or infinite, first at sampling step 1 \
                 of 8 (respaced index 7, model timestep 999) in the DiT output; likely causes: \
                 NaN or infinite weights in the checkpoint, a cfg_scale so large"
            ),
            "{dit}"
        );
        assert!(dit.contains("fp16") && !dit.contains('\n'), "{dit}");
        let update = err(false);
        assert!(
            update.contains("in the diffusion update, from a finite DiT output; likely causes: a noise schedule whose terms underflow or overflow float32 at that step"),
            "{update}"
        );
        let vae = check_finite(&x, "the VAE decoder's output", || None).unwrap_err();
        assert!(
            vae.to_string().starts_with(
                "2 of 4 values of the VAE decoder's output are NaN or infinite; likely causes: NaN"
            ),
            "{vae}"
        );
        assert!(check_finite(&latents(0.0), "x", || unreachable!()).is_ok());
    }
}

#[cfg(test)]
mod flow_tests {
    use super::*;

    #[test]
    fn a_flow_step_is_named_by_its_time() {
        let mut checks = StepChecks::default();
        let ok = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let bad = Tensor::from_slice(&[0.0f32, f32::INFINITY]);
        checks.record(StepAt::Flow { t: 0.0 }, &ok, &ok);
        checks.record(StepAt::Flow { t: 0.52 }, &ok, &bad);
        let f = checks.first_non_finite().unwrap();
        assert_eq!((f.step, f.steps, f.in_model_output), (2, 2, false));
        let e = check_finite(&bad, "the final latents", || Some(f))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("first at sampling step 2 of 2 (t = 0.52) in the sampler's update, from a finite velocity; likely causes: an SDE coefficient"),
            "{e}"
        );
    }
}
