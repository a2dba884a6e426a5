//! The `sample` task: samples a range of indices in this one process and writes
//! `DIR/{index}.png` (and optionally the final latents). The quick look and the engine's
//! end-to-end test path; `run` distributes the same work over `serve` workers.
use crate::device::to_tch;
use crate::writer::{WriteJob, Writer, WriterEvent};
use anyhow::{anyhow, Context, Result};
use fidshard_core::output::png_name;
use fidshard_core::{DeviceSpec, SamplerSettings};
use fidshard_worker::{Engine, Timings};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tch::{Device, Tensor};

pub(crate) fn run(
    settings: SamplerSettings,
    out: PathBuf,
    (a, b): (u64, u64),
    device: DeviceSpec,
    save_latents: bool,
) -> Result<()> {
    let device = to_tch(device)?;
    fidshard_worker::precision::configure(settings.precision);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let n = settings.num_samples;
    let engine = Engine::load(settings, device)?;
    let batch = engine.batch_size().max(1);
    let side = engine.image_size() as u32;
    tracing::info!(range = %format!("{a}..{b}"), device = %crate::device::name(device), image_size = side, "sampling");

    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let writer = {
        let failure = failure.clone();
        Writer::spawn(out.clone(), side, n, None, move |ev| {
            if let WriterEvent::Failed { message, .. } = ev {
                *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
            }
        })
    };
    let start = Instant::now();
    let mut timings = Timings::default();
    let mut labels: Vec<(u64, i64)> = Vec::new();
    // Chunk by chunk: a range of a 10^9-sample job allocates one batch, not 10^9 indices.
    for start in (a..b).step_by(batch) {
        let chunk: Vec<u64> = (start..(start + batch as u64).min(b)).collect();
        let chunk = &chunk[..];
        if writer.is_aborted(1) {
            break;
        }
        let res = engine.try_sample_batch(chunk, &mut timings);
        let batch =
            res.map_err(|m| anyhow!("sampling {}..{}: {m}", chunk[0], chunk[chunk.len() - 1] + 1))?;
        if save_latents {
            write_latents(&out, chunk, &batch.samples, &batch.latents, n)?;
        }
        labels.extend(batch.samples.iter().map(|s| (s.index, s.label)));
        let job = WriteJob::Images {
            run: 1,
            shard: 0,
            samples: batch.samples,
            features: None,
        };
        if writer.tx.send(job).is_err() {
            break;
        }
    }
    writer.finish();
    if let Some(msg) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(anyhow!(msg));
    }
    // Which class each PNG is, beside them (index -> label), as `grid` and evaluators need it.
    let labels: std::collections::BTreeMap<String, i64> = labels
        .into_iter()
        .map(|(i, l)| (png_name(i, n), l))
        .collect();
    let json = serde_json::to_vec_pretty(&labels)?;
    fidshard_core::output::write_atomic(&out.join("labels.json"), &json)?;
    let secs = start.elapsed().as_secs_f64();
    tracing::info!(
        images = b - a,
        seconds = secs,
        dit = timings.dit,
        vae = timings.vae,
        noise = timings.noise,
        "done"
    );
    Ok(())
}

/// Writes `DIR/latents/{index}.safetensors` with `latent` (C, H, W) and `label` (1,).
fn write_latents(
    dir: &Path,
    indices: &[u64],
    samples: &[fidshard_worker::Sample],
    latents: &Tensor,
    n: u64,
) -> Result<()> {
    let ldir = dir.join("latents");
    std::fs::create_dir_all(&ldir)?;
    for (j, (&index, s)) in indices.iter().zip(samples).enumerate() {
        let name = png_name(index, n).replace(".png", ".safetensors");
        let lat = latents.get(j as i64).to_device(Device::Cpu).contiguous();
        let lab = Tensor::from_slice(&[s.label]);
        Tensor::write_safetensors(&[("latent", &lat), ("label", &lab)], ldir.join(name))?;
    }
    Ok(())
}
