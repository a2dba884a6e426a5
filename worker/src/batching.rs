//! `batch_size: auto` and `vae_batch_size: auto`: the largest batch that fits the device,
//! decided once when the engine is built, from the memory free on the device and an upper
//! bound of what one image needs; a real out-of-memory error at run time then halves the DiT
//! batch (the worker's `serve` loop) and the size is kept from there on. Images never depend
//! on the batch size (docs/architecture.md), so this changes speed, never pixels.
use crate::engine::Engine;
use fidshard_core::{BatchSize, DiTConfig, Precision};
use tch::Device;

/// Upper bounds: past these a larger batch gains nothing measurable.
const MAX_DIT_BATCH: usize = 512;
const MAX_VAE_BATCH: usize = 64;
/// On the CPU a worker samples on one thread; larger batches only cost memory.
const CPU_DIT_BATCH: usize = 16;
/// The share of the free memory a batch may plan to use (the rest: allocator slack, cuDNN
/// workspaces, fragmentation).
const USABLE: f64 = 0.7;

/// Bytes per element of activations under `precision`.
fn elem_bytes(p: Precision) -> u64 {
    match p {
        Precision::Fp32 | Precision::Tf32 => 4,
        Precision::Bf16 | Precision::Fp16 => 2,
    }
}

/// An upper bound of the activation memory one image needs in one DiT forward pass (without
/// gradients): a few token x hidden tensors live at once (input, residual, modulated input,
/// qkv, the MLP's hidden layer), plus the attention scores (heads x tokens x tokens), doubled
/// for the unconditional half of classifier-free guidance, with a factor 2 of headroom for
/// temporaries.
pub(crate) fn dit_bytes_per_image(c: &DiTConfig, precision: Precision, cfg: bool) -> u64 {
    let t = c.num_patches() as u64;
    let h = c.hidden_size as u64;
    let mlp = c.mlp_hidden() as u64;
    let heads = c.num_heads as u64;
    let per_row = 6 * h + mlp;
    let elems = t * per_row + heads * t * t;
    let guidance = if cfg { 2 } else { 1 };
    2 * guidance * elems * elem_bytes(precision)
}

/// An upper bound for one image in the VAE decoder: its widest feature map (the largest
/// channel count at the full image size) a few times over (input, GroupNorm output, conv
/// output, upsampled copy), in float32 except under autocast.
pub(crate) fn vae_bytes_per_image(
    widest_channels: i64,
    image_size: i64,
    precision: Precision,
) -> u64 {
    let plane = (image_size * image_size) as u64;
    4 * widest_channels as u64 * plane * elem_bytes(precision)
}

/// The largest power of two `<= cap` whose `n * per_image` fits in `USABLE * free`, at least 1.
pub fn fit(free: u64, per_image: u64, cap: usize) -> usize {
    let budget = (free as f64 * USABLE) as u64;
    let most = (budget / per_image.max(1)).clamp(1, cap as u64) as usize;
    1usize << (usize::BITS - 1 - most.leading_zeros())
}

/// Free memory on the CUDA device this worker sees, through NVML (the driver's library;
/// CUDA_VISIBLE_DEVICES names the GPU by index or UUID, as the coordinator sets it).
fn cuda_free_bytes() -> Option<u64> {
    let nvml = nvml_wrapper::Nvml::init().ok()?;
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let first = visible
        .as_deref()
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .unwrap_or("0");
    let device = if first.starts_with("GPU-") {
        nvml.device_by_uuid(first).ok()?
    } else {
        nvml.device_by_index(first.parse().ok()?).ok()?
    };
    device.memory_info().ok().map(|m| m.free)
}

/// Free memory for a CPU worker: MemAvailable of /proc/meminfo.
fn host_free_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

impl Engine {
    /// Resolves `auto` batch sizes for this engine's device; fixed sizes stay as they are.
    /// Returns `(dit, vae)`.
    pub(crate) fn pick_batches(&self) -> (usize, usize) {
        let s = self.settings();
        let device = self.device();
        let free = match device {
            Device::Cuda(_) => cuda_free_bytes(),
            _ => host_free_bytes(),
        }
        .unwrap_or(4 << 30);
        let dit = s.batch_size.fixed().unwrap_or_else(|| {
            let per = dit_bytes_per_image(&s.dit, s.precision, s.uses_cfg());
            let cap = if device.is_cuda() {
                MAX_DIT_BATCH
            } else {
                CPU_DIT_BATCH
            };
            fit(free, per, cap)
        });
        let vae = s.vae_batch_size.fixed().unwrap_or_else(|| {
            if !device.is_cuda() {
                return 1; // the CPU decodes one image at a time (batch invariance)
            }
            let per =
                vae_bytes_per_image(self.vae_widest_channels(), self.image_size(), s.precision);
            fit(free, per, MAX_VAE_BATCH)
        });
        if s.batch_size == BatchSize::Auto || s.vae_batch_size == BatchSize::Auto {
            tracing::info!(
                dit_batch = dit,
                vae_batch = vae,
                free_bytes = free,
                device = ?device,
                "batch size auto: picked from the free memory"
            );
        }
        (dit, vae)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_is_a_power_of_two_within_the_budget() {
        assert_eq!(fit(1000, 10, 512), 64); // 700 / 10 = 70 -> 64
        assert_eq!(fit(1000, 10_000, 512), 1);
        assert_eq!(fit(u64::MAX / 2, 1, 512), 512);
        assert_eq!(fit(0, 1, 8), 1);
    }

    #[test]
    fn dit_xl_2_on_an_80_gb_card() {
        let c = DiTConfig::dit_xl_2(32);
        let per = dit_bytes_per_image(&c, Precision::Tf32, true);
        // 256 tokens: a few MB per image, so an 80 GB card takes the cap.
        assert!(per > 1 << 20 && per < 64 << 20, "{per}");
        assert_eq!(fit(80 << 30, per, MAX_DIT_BATCH), MAX_DIT_BATCH);
        // The sd-vae decoder at 256 px: 512 channels x 65536 pixels is the widest map.
        let v = vae_bytes_per_image(512, 256, Precision::Tf32);
        assert_eq!(fit(80 << 30, v, MAX_VAE_BATCH), 64);
        assert_eq!(fit(8 << 30, v, MAX_VAE_BATCH), 8);
    }
}
