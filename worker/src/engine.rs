//! The sampler: draws each sample's noise by the per-sample contract, runs the DiT with
//! classifier-free guidance through the respaced diffusion, decodes with the VAE and converts to
//! uint8 exactly as the reference `sample.py` does.
use crate::backbone::{Backbone, LatentDecoder};
use crate::diffusion::SpacedDiffusion;
use crate::error::{EngineError, Result, StepAt};
use crate::noise::{DrawSpec, Draws};
use crate::settings::{Precision, SamplerKind, SamplerSettings};
use fidshard_core::flow::Pixels;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

mod checks;
mod flow;
pub use checks::check_finite;
pub(crate) use checks::StepChecks;

/// One finished sample: its index, class label and `H x W x 3` uint8 pixels (row-major RGB).
pub struct Sample {
    pub index: u64,
    pub label: i64,
    pub pixels: Vec<u8>,
}

/// Where a batch's time went (seconds), for `fidshard bench` and progress logs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    pub noise: f64,
    pub dit: f64,
    pub vae: f64,
}

impl std::ops::AddAssign for Timings {
    fn add_assign(&mut self, o: Self) {
        self.noise += o.noise;
        self.dit += o.dit;
        self.vae += o.vae;
    }
}

pub struct Engine {
    settings: SamplerSettings,
    device: Device,
    /// The DiT, or the SiT (a DiT fed continuous time; see crate::sit), or a TorchScript model.
    dit: Backbone,
    /// The diffusers VAE decoder, or a TorchScript one.
    vae: LatentDecoder,
    /// The respaced diffusion of the DiT family; `None` for the flow samplers.
    diffusion: Option<SpacedDiffusion>,
    /// Sampling steps (what each sample's noise draw is sized by).
    steps: usize,
    /// The DiT and VAE batch sizes in use (`auto` resolved; see batching.rs).
    batch: usize,
    vae_batch: usize,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Engine {
    /// Loads the model and the VAE once (their own weights or TorchScript modules, see
    /// crate::backbone); checks that they fit together.
    ///
    /// On the CPU this sets libtorch's intra-op threads to 1 for the whole process: several of
    /// its CPU kernels (GroupNorm over few groups, some oneDNN convolutions) split a reduction
    /// across threads, so their float bits depend on the thread count, and image `i` must not.
    /// CPU parallelism comes from running several CPU workers (`devices: {cpu: N}`).
    pub fn load(settings: SamplerSettings, device: Device) -> Result<Self> {
        let dit = Backbone::load(&settings, device)?;
        let vae = LatentDecoder::load(&settings, device)?;
        Self::from_parts(settings, device, dit, vae)
    }

    /// An engine from models built elsewhere (benchmarks with random weights). Sets the CPU
    /// thread count as [`Engine::load`] documents.
    pub fn from_parts(
        settings: SamplerSettings,
        device: Device,
        dit: impl Into<Backbone>,
        vae: impl Into<LatentDecoder>,
    ) -> Result<Self> {
        let (dit, vae) = (dit.into(), vae.into());
        if !device.is_cuda() {
            tch::set_num_threads(1);
        }
        let (diffusion, steps) = if settings.sampler.is_flow() {
            let n = settings
                .sampler
                .flow_steps(&settings.steps)
                .map_err(|e| EngineError::config("<job>", "steps", e))?;
            (None, n)
        } else {
            let d = SpacedDiffusion::new(settings.beta_schedule, &settings.steps)
                .map_err(|e| EngineError::config("<job>", "steps", e.to_string()))?;
            let n = d.num_steps();
            (Some(d), n)
        };
        if vae.latent_channels() != settings.dit.in_channels {
            return Err(EngineError::config(
                &settings.vae,
                "latent_channels",
                format!(
                    "the VAE has {} latent channels but the DiT expects {}",
                    vae.latent_channels(),
                    settings.dit.in_channels
                ),
            ));
        }
        if vae.scaling_factor().is_none() && settings.latent_scale.is_none() {
            return Err(EngineError::config(
                &settings.vae,
                "latent_scale",
                "is required with a TorchScript VAE (it has no scaling_factor): the decoder gets (z - latent_bias) / latent_scale; set latent_scale in the job",
            ));
        }
        let mut engine = Engine {
            settings,
            device,
            dit,
            vae,
            diffusion,
            steps,
            batch: 1,
            vae_batch: 1,
        };
        (engine.batch, engine.vae_batch) = engine.pick_batches();
        Ok(engine)
    }

    /// Images per DiT batch (`batch_size`, or what `auto` picked).
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Channels of the VAE decoder's widest feature map.
    pub(crate) fn vae_widest_channels(&self) -> i64 {
        self.vae.widest_channels()
    }

    pub fn settings(&self) -> &SamplerSettings {
        &self.settings
    }
    pub fn device(&self) -> Device {
        self.device
    }
    /// Side length of the images in pixels.
    pub fn image_size(&self) -> i64 {
        self.settings.dit.input_size * self.vae.upsample_factor()
    }
    fn latent_shape(&self) -> [i64; 3] {
        let c = &self.settings.dit;
        [c.in_channels, c.input_size, c.input_size]
    }

    /// Runs `f` under the job's precision (autocast for bf16/fp16 on CUDA).
    fn with_precision<T>(&self, f: impl FnOnce() -> T) -> T {
        match self.settings.precision {
            Precision::Fp32 | Precision::Tf32 => f(),
            Precision::Bf16 | Precision::Fp16 => {
                crate::precision::autocast(self.device, self.settings.precision, f)
            }
        }
    }

    /// What the draws of this engine's samples depend on (for a [`crate::noise::NoiseProducer`]).
    pub fn draw_spec(&self) -> DrawSpec {
        let s = &self.settings;
        DrawSpec {
            seed: s.seed,
            labels: s.labels,
            num_classes: s.dit.num_classes,
            steps: self.steps,
            latent_shape: self.latent_shape(),
            device: self.device,
        }
    }

    /// Sampling steps per image.
    pub fn num_steps(&self) -> usize {
        self.steps
    }

    /// Labels and final latents `(B, C, H, W)` (before the VAE) for the batch of `draws`.
    pub(crate) fn sample_latents_from(&self, draws: Draws, t: &mut Timings) -> Trajectory {
        match &self.diffusion {
            Some(diffusion) => self.sample_diffusion(diffusion, draws, t),
            None => self.sample_flow(draws, t),
        }
    }

    /// The DiT family: the respaced Gaussian diffusion (DDPM or DDIM).
    fn sample_diffusion(
        &self,
        diffusion: &SpacedDiffusion,
        draws: Draws,
        t: &mut Timings,
    ) -> Trajectory {
        let _guard = tch::no_grad_guard();
        let s = &self.settings;
        let steps = diffusion.num_steps();
        let BatchInput {
            labels,
            noise,
            y,
            b,
            start,
        } = self.begin_batch(draws, t);
        let cfg = s.uses_cfg();
        let y_model = if cfg {
            let null = Tensor::full([b], s.dit.null_label(), (Kind::Int64, self.device));
            Tensor::cat(&[&y, &null], 0)
        } else {
            y
        };
        let mut x = noise.select(1, 0);
        let map = diffusion.timestep_map().to_vec();
        let mut checks = StepChecks::default();
        for k in 0..steps {
            let i = steps - 1 - k;
            let batch = if cfg { 2 * b } else { b };
            let t_model = Tensor::full([batch], map[i], (Kind::Int64, self.device));
            let out = self.with_precision(|| {
                if cfg {
                    let x2 = Tensor::cat(&[&x, &x], 0);
                    self.dit
                        .forward_with_cfg(&x2, &t_model, &y_model, s.cfg_scale, s.cfg_channels)
                        .narrow(0, 0, b)
                } else {
                    self.dit.forward(&x, &t_model, &y_model)
                }
            });
            let out = out.to_kind(Kind::Float);
            let step_noise = noise.select(1, 1 + k as i64);
            x = match s.sampler {
                SamplerKind::Ddpm => diffusion.p_sample(&x, i, &out, &step_noise, s.variance),
                SamplerKind::Ddim => {
                    diffusion.ddim_sample(&x, i, &out, &step_noise, s.variance, s.eta)
                }
                _ => unreachable!("flow samplers have no SpacedDiffusion (Engine::from_parts)"),
            };
            let at = StepAt::Diffusion {
                index: i,
                timestep: map[i],
            };
            checks.record(at, &out, &x);
        }
        if self.device.is_cuda() {
            tch::Cuda::synchronize(self.device_index());
        }
        t.dit += secs(start.elapsed());
        Trajectory {
            labels,
            latents: x,
            checks,
        }
    }

    /// What both families start a batch with: the noise on the device (from pinned memory the
    /// copy is asynchronous), the labels as a tensor, the batch size and the clock.
    fn begin_batch(&self, draws: Draws, t: &mut Timings) -> BatchInput {
        let Draws {
            indices,
            labels,
            noise,
            seconds,
        } = draws;
        t.noise += seconds;
        // (B, steps + 1, C, H, W).
        let noise = noise.to_device_(self.device, Kind::Float, self.device.is_cuda(), false);
        let y = Tensor::from_slice(&labels).to_device(self.device);
        BatchInput {
            labels,
            noise,
            y,
            b: indices.len() as i64,
            start: Instant::now(),
        }
    }

    pub(crate) fn device_index(&self) -> i64 {
        match self.device {
            Device::Cuda(i) => i as i64,
            _ => 0,
        }
    }

    /// Images per VAE call. On the CPU it is 1 whatever `vae_batch_size` says: libtorch's CPU
    /// convolutions choose their algorithm by batch size, which changes float bits, and the
    /// promise is that image `i` never depends on the batch it was decoded in. Per-image
    /// decoding costs nothing measurable on a CPU. On a GPU `vae_batch_size` applies.
    fn vae_micro_batch(&self) -> i64 {
        if self.device.is_cuda() {
            self.vae_batch as i64
        } else {
            1
        }
    }

    /// Decodes latents to uint8 images `(B, H, W, 3)` on the CPU: `x = vae.decode(z / scale)`
    /// (or `(z - latent_bias) / latent_scale`, see `unscale`),
    /// then `clamp(127.5 x + 128, 0, 255)` (`pixels: dit`, DiT's sample.py) or
    /// `clamp(255 (x + 1) / 2, 0, 255)` (`pixels: repa`, REPA's generate.py), truncated to
    /// uint8. Float64 latents (the flow samplers') are decoded in float32, as REPA does.
    /// A non-finite decoder output is an error: clamping would turn NaN into black pixels.
    pub fn decode(&self, latents: &Tensor, t: &mut Timings) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let start = Instant::now();
        let z = self.unscale(&latents.to_kind(Kind::Float));
        let img = self.with_precision(|| self.vae.decode_micro_batched(&z, self.vae_micro_batch()));
        let img = img.to_kind(Kind::Float);
        check_finite(&img, "the VAE decoder's output", || None)?;
        let img = match self.settings.pixels {
            Pixels::Dit => img * 127.5 + 128.0,
            Pixels::Repa => (img + 1.0) / 2.0 * 255.0,
        };
        let img = img
            .clamp(0.0, 255.0)
            .permute([0, 2, 3, 1])
            .to_device(Device::Cpu)
            .to_kind(Kind::Uint8)
            .contiguous();
        t.vae += secs(start.elapsed());
        Ok(img)
    }
}

impl Engine {
    /// `(z - latent_bias) / latent_scale`, what the decoder takes. Without `latent_scale` /
    /// `latent_bias` it is `z / scaling_factor` as the references compute it (a single number is
    /// divided as a scalar, so `latent_scale: <scaling_factor>` gives the same bits).
    fn unscale(&self, z: &Tensor) -> Tensor {
        let s = &self.settings;
        let per_channel = |v: &[f64]| {
            Tensor::from_slice(v)
                .to_kind(Kind::Float)
                .to_device(z.device())
                .view([1, -1, 1, 1])
        };
        let z = match s.latent_bias.as_deref() {
            None => z.shallow_clone(),
            Some([b]) => z - *b,
            Some(b) => z - per_channel(b),
        };
        match s.latent_scale.as_deref() {
            // Only a diffusers VAE has no latent_scale here (Engine::from_parts).
            None => z / self.vae.scaling_factor().unwrap_or(1.0),
            Some([k]) => z / *k,
            Some(k) => z / per_channel(k),
        }
    }
}

/// A batch's inputs on the device (see [`Engine::begin_batch`]).
struct BatchInput {
    labels: Vec<i64>,
    noise: Tensor,
    y: Tensor,
    b: i64,
    start: Instant,
}

/// What [`Engine::sample_latents_from`] produced for one batch.
pub(crate) struct Trajectory {
    pub labels: Vec<i64>,
    /// The final latents `(B, C, H, W)`, before the VAE.
    pub latents: Tensor,
    /// Where non-finite values first appeared, if they did.
    pub checks: StepChecks,
}

/// Splits a `(B, H, W, 3)` uint8 CPU tensor into [`Sample`]s.
pub fn to_samples(indices: &[u64], labels: &[i64], images: &Tensor) -> Result<Vec<Sample>> {
    let mut out = Vec::with_capacity(indices.len());
    for (j, (&index, &label)) in indices.iter().zip(labels).enumerate() {
        let img = images.get(j as i64);
        let mut pixels = vec![0u8; img.numel()];
        img.f_copy_data(&mut pixels, img.numel())?;
        out.push(Sample {
            index,
            label,
            pixels,
        });
    }
    Ok(out)
}
