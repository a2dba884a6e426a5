//! Model FLOPs of a DiT forward pass, from the architecture (2 FLOPs per multiply-add, matrix
//! products only: the norms, activations and the sampler's elementwise arithmetic are a few
//! percent at most). `bench` divides achieved FLOP/s by a card's dense peak: model FLOP
//! utilisation (MFU), as the DiT paper counts Gflops (Peebles & Xie 2023, Table 4: 118.6 for
//! DiT-XL/2 at 256 px, which counts multiply-adds, so half of this figure).
use fidshard_core::DiTConfig;

/// FLOPs of one forward pass for one image (the unconditional half of guidance is a second
/// image).
pub(crate) fn dit_forward_flops(c: &DiTConfig) -> f64 {
    let t = c.num_patches() as f64;
    let h = c.hidden_size as f64;
    let p2 = (c.patch_size * c.patch_size) as f64;
    let mlp = c.mlp_hidden() as f64;
    let patch_embed = 2.0 * t * p2 * c.in_channels as f64 * h;
    let per_block = 2.0 * t * h * 3.0 * h  // qkv
        + 2.0 * 2.0 * t * t * h          // QK^T and attention x V
        + 2.0 * t * h * h                // proj
        + 2.0 * 2.0 * t * h * mlp        // fc1 and fc2
        + 2.0 * h * 6.0 * h; // adaLN modulation (per image)
    let final_layer = 2.0 * t * h * p2 * c.out_channels() as f64 + 2.0 * h * 2.0 * h;
    patch_embed + c.depth as f64 * per_block + final_layer
}

/// FLOPs per image of a whole sampling run: one forward per step, two with guidance.
pub fn flops_per_image(c: &DiTConfig, steps: usize, cfg: bool) -> f64 {
    dit_forward_flops(c) * steps as f64 * if cfg { 2.0 } else { 1.0 }
}

/// Model evaluations per image of `settings`' sampler with `steps` (the engine's step count:
/// respaced steps, REPA's steps, or SiT's grid points): one per step; REPA's Heun adds one on all
/// steps but the last; SiT's grids of N points take N - 1 steps (Heun: two evaluations each) and
/// its SDE one more for the last step.
pub fn model_evaluations(settings: &fidshard_core::SamplerSettings, steps: usize) -> usize {
    use fidshard_core::{LastStep, SamplerKind, Solver};
    let per_step = match settings.flow.solver {
        Solver::Euler => 1,
        Solver::Heun => 2,
    };
    match settings.sampler {
        SamplerKind::Ode if per_step == 2 => 2 * steps - 1,
        SamplerKind::SitOde => per_step * (steps - 1),
        SamplerKind::SitSde => {
            let last = usize::from(settings.flow.sit_sde.last_step != LastStep::None);
            per_step * (steps - 1) + last
        }
        _ => steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's 118.6 Gflops (multiply-adds) for DiT-XL/2 at 256 px (32x32 latents).
    #[test]
    fn dit_xl_2_matches_the_paper() {
        let gmacs = dit_forward_flops(&DiTConfig::dit_xl_2(32)) / 2e9;
        assert!((gmacs - 118.6).abs() / 118.6 < 0.02, "{gmacs}");
    }
}
