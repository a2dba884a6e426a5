//! The handshake of `serve`: `init` in, the weights checked and loaded (and the Inception
//! network, when the job is evaluated), `ready` out, and the PNG writer started.
use super::features::ShardFeatures;
use super::link::{Inbound, Inbox, Outbox};
use crate::writer::{Writer, WriterEvent};
use anyhow::{anyhow, Context, Result};
use fidshard_core::identity::WeightsIdentity;
use fidshard_core::protocol::{FailureKind, FromWorker, ToWorker};
use fidshard_core::{Exit, SamplerSettings};
use fidshard_worker::Engine;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

/// How the handshake ended.
pub(super) enum Handshake {
    Ready(Box<Loaded>),
    /// The input ended before `init`: exit with this code.
    Ended(Exit),
}

/// What the handshake set up for the shard loop.
pub(super) struct Loaded {
    pub engine: Engine,
    /// The PNG writer thread, reporting to the coordinator.
    pub writer: Writer,
    pub samples_dir: PathBuf,
    pub num_samples: u64,
    /// With the job's `evaluate:`: the features of every shard.
    pub features: Option<ShardFeatures>,
}

/// Waits for `init`, loads the models (checking the weights before and after), sends `ready`
/// and starts the writer thread.
pub(super) fn handshake(
    id: u32,
    device: Device,
    outbox: &Outbox,
    inbox: &mut Inbox,
) -> Result<Handshake> {
    let (settings, samples_dir, weights, features) = match inbox.next() {
        Inbound::Msg(ToWorker::Init {
            settings,
            samples_dir,
            weights,
            features,
        }) => (settings, samples_dir, weights, features),
        Inbound::End(code) => return Ok(Handshake::Ended(code)),
        Inbound::Msg(_) => return Err(anyhow!("worker {id}: the first message was not `init`")),
    };
    fidshard_worker::precision::configure(settings.precision);
    let start = Instant::now();
    let num_samples = settings.num_samples;
    let engine = load(id, outbox, *settings, device, weights.as_ref())?;
    let side = engine.image_size() as u32;
    let features = match features {
        Some(spec) => Some(load_features(id, outbox, spec, device, side)?),
        None => None,
    };
    outbox.send(&FromWorker::Ready {
        pid: std::process::id(),
        device: crate::device::name(device),
        load_seconds: start.elapsed().as_secs_f64(),
    });
    tracing::info!(worker = id, device = %crate::device::name(device), features = features.is_some(), "ready");
    let spec = features.as_ref().map(|f| f.spec.clone());
    let writer = spawn_writer(outbox, samples_dir.clone(), side, num_samples, spec);
    Ok(Handshake::Ready(Box::new(Loaded {
        engine,
        writer,
        samples_dir,
        num_samples,
        features,
    })))
}

/// Loads the Inception network; a failure is a `fatal` message of kind `load`.
fn load_features(
    id: u32,
    outbox: &Outbox,
    spec: fidshard_core::protocol::FeaturesSpec,
    device: Device,
    side: u32,
) -> Result<ShardFeatures> {
    ShardFeatures::load(spec, device, side).map_err(|e| {
        outbox.send(&FromWorker::Fatal {
            kind: FailureKind::Load,
            message: format!("{e:#}"),
        });
        e.context(format!("worker {id}: loading the Inception network failed"))
    })
}

/// Loads the engine; a failure is reported as a `fatal` message of kind `load`.
fn load(
    id: u32,
    outbox: &Outbox,
    settings: SamplerSettings,
    device: Device,
    weights: Option<&WeightsIdentity>,
) -> Result<Engine> {
    if let Some(expected) = weights {
        check_weights(outbox, expected, &settings.checkpoint, &settings.vae)?;
    }
    let loaded = fidshard_core::faults::maybe_load_failure()
        .map_err(|m| fidshard_worker::EngineError::checkpoint(&settings.checkpoint, m))
        .and_then(|_| Engine::load(settings, device));
    let engine = match loaded {
        Ok(e) => e,
        Err(e) => {
            outbox.send(&FromWorker::Fatal {
                kind: FailureKind::Load,
                message: e.to_string(),
            });
            return Err(anyhow!(e)).context(format!("worker {id}: loading failed"));
        }
    };
    // Checked again after loading: a file replaced while it was being read is caught too.
    if let Some(expected) = weights {
        let s = engine.settings();
        check_weights(outbox, expected, &s.checkpoint, &s.vae)?;
    }
    Ok(engine)
}

/// Stops the worker (and, through the `weights_changed` fatal message, the run) when the
/// checkpoint or the VAE on disk is not what the job's fingerprint recorded.
fn check_weights(
    outbox: &Outbox,
    expected: &WeightsIdentity,
    checkpoint: &Path,
    vae: &Path,
) -> Result<()> {
    let found = WeightsIdentity::compute(checkpoint, vae).map_err(|e| e.to_string());
    let problem = match &found {
        Ok(found) => found.mismatch(expected, checkpoint, vae),
        Err(e) => Some(format!("cannot read the weights to check them: {e}")),
    };
    if let Some(message) = problem {
        outbox.send(&FromWorker::Fatal {
            kind: FailureKind::WeightsChanged,
            message: message.clone(),
        });
        return Err(anyhow!(fidshard_core::Fatal::input(anyhow!(message))));
    }
    Ok(())
}

/// The PNG writer thread, reporting each shard it completes (or fails to write) to the
/// coordinator.
fn spawn_writer(
    outbox: &Outbox,
    dir: PathBuf,
    side: u32,
    num_samples: u64,
    features: Option<fidshard_core::protocol::FeaturesSpec>,
) -> Writer {
    let outbox = outbox.clone();
    Writer::spawn(dir, side, num_samples, features, move |ev| match ev {
        WriterEvent::Done {
            shard,
            crc32,
            mut labels,
            seconds,
            features_crc32,
        } => {
            fidshard_core::faults::maybe_wrong_labels(&mut labels);
            outbox.send(&FromWorker::ShardDone {
                labels,
                shard,
                crc32,
                seconds,
                features_crc32,
            })
        }
        WriterEvent::Failed { shard, message } => outbox.send(&FromWorker::ShardFailed {
            shard,
            kind: FailureKind::Io,
            message,
        }),
    })
}
