//! One batch of the SiT family: REPA's samplers (crate::flow; float64 state, time 1 -> 0) or
//! SiT's own (crate::sit::transport; float32 state, time 0 -> 1), the model called in float32
//! or the job's autocast precision.
use super::{BatchInput, Engine, StepChecks, Timings, Trajectory};
use crate::error::StepAt;
use crate::flow::{euler_maruyama_sampler, euler_sampler, Guide};
use crate::noise::Draws;
use crate::settings::SamplerKind;
use crate::sit::transport::{sit_ode, sit_sde};
use tch::{Kind, Tensor};

impl Engine {
    /// The velocity of the model at latents `x` (any float kind; the result has the same), time
    /// `time` for every row, labels `y`.
    fn velocity(&self, x: &Tensor, time: f64, y: &Tensor) -> Tensor {
        let n = x.size()[0];
        let t_in = Tensor::full([n], time, (Kind::Float, self.device));
        let x_in = x.to_kind(Kind::Float);
        let v = self.with_precision(|| crate::sit::velocity(&self.dit, &x_in, &t_in, y));
        v.to_kind(x.kind())
    }

    /// SiT's guided velocity (`forward_with_cfg` of willisma/SiT's models.py): the batch doubled
    /// with the null labels, the first `cfg_channels` channels guided (3 by default), the other
    /// channels those of the conditional half; unguided without `cfg_scale > 1` or outside
    /// `guidance_interval` (in SiT's time, as LightningDiT's `cfg_interval_start`).
    fn sit_velocity(&self, x: &Tensor, time: f64, y: &Tensor, y_null: &Tensor) -> Tensor {
        let s = &self.settings;
        let [low, high] = s.flow.guidance_interval;
        if !s.uses_cfg() || time < low || time > high {
            return self.velocity(x, time, y);
        }
        let n = x.size()[0];
        let x2 = Tensor::cat(&[x, x], 0).to_kind(Kind::Float);
        let y2 = Tensor::cat(&[y, y_null], 0);
        let t_in = Tensor::full([2 * n], time, (Kind::Float, self.device));
        let out = self.with_precision(|| {
            self.dit
                .forward_with_cfg(&x2, &t_in, &y2, s.cfg_scale, s.cfg_channels)
        });
        out.narrow(0, 0, n)
            .narrow(1, 0, s.dit.in_channels)
            .to_kind(x.kind())
    }

    /// The SiT family's batch; every step's velocity and state are checked for finiteness on
    /// the device (read back only on failure, see [`StepChecks`]).
    pub(super) fn sample_flow(&self, draws: Draws, t: &mut Timings) -> Trajectory {
        let _guard = tch::no_grad_guard();
        let s = &self.settings;
        let BatchInput {
            labels,
            noise,
            y,
            b,
            start,
        } = self.begin_batch(draws, t);
        let y_null = Tensor::full([b], s.dit.null_label(), (Kind::Int64, self.device));
        let mut checks = StepChecks::default();
        let mut on_step = |time: f64, out: &Tensor, x: &Tensor| {
            checks.record(StepAt::Flow { t: time }, out, x);
        };
        let latents = if s.sampler.is_sit_transport() {
            let field = |x: &Tensor, time: f64| self.sit_velocity(x, time, &y, &y_null);
            let x = noise.select(1, 0);
            match s.sampler {
                SamplerKind::SitOde => sit_ode(&field, x, self.steps, s.flow.solver, &mut on_step),
                _ => sit_sde(
                    &field,
                    x,
                    &noise,
                    self.steps,
                    s.flow.solver,
                    &s.flow.sit_sde,
                    &mut on_step,
                ),
            }
        } else {
            let guide = Guide {
                y: &y,
                y_null: &y_null,
                scale: s.uses_cfg().then_some(s.cfg_scale),
                interval: s.flow.guidance_interval,
            };
            let model = |x: &Tensor, time: f64, y: &Tensor| self.velocity(x, time, y);
            let x = noise.select(1, 0).to_kind(Kind::Double);
            match s.sampler {
                SamplerKind::Sde => euler_maruyama_sampler(
                    &model,
                    x,
                    &noise,
                    self.steps,
                    s.flow.path_type,
                    &guide,
                    &mut on_step,
                ),
                _ => euler_sampler(&model, x, self.steps, s.flow.solver, &guide, &mut on_step),
            }
        };
        if self.device.is_cuda() {
            tch::Cuda::synchronize(self.device_index());
        }
        t.dit += super::secs(start.elapsed());
        Trajectory {
            labels,
            latents,
            checks,
        }
    }
}
