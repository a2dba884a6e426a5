//! `fidshard-worker serve`: the long-lived process the coordinator spawns per device. It loads
//! the model and VAE once, then samples the shards it is assigned; the PNG writer thread
//! (writer.rs) encodes and writes while the next batch samples. See fidshard-core's protocol.rs
//! for the messages.
//!
//! A shard assigned again after an interruption reuses the PNGs its earlier attempt wrote
//! (reuse.rs) and samples only the other indices. `drain` is looked for between batches: the
//! batch in flight is finished and written, then the worker exits 0 (preemption loses no
//! finished batch).
use crate::reuse::{self, LabelSpec};
use crate::writer::{WriteJob, Writer, WriterEvent};
use anyhow::{anyhow, Context, Result};
use fidshard_core::protocol::{line, FailureKind, FromWorker, ToWorker};
use fidshard_worker::noise::{Draws, NoiseProducer};
use fidshard_worker::{BatchError, Engine, Timings};
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tch::Device;

/// Messages to the coordinator, from the sampling and the writer thread alike.
#[derive(Clone)]
struct Outbox(Arc<Mutex<std::io::Stdout>>);

impl Outbox {
    fn send(&self, msg: &FromWorker) {
        let mut out = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // A closed stdout means the coordinator is gone: exit like on end of stdin.
        if out
            .write_all(line(msg).as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            std::process::exit(0);
        }
    }
}

/// Exits when the parent dies: SIGKILL on parent death, and a check that the parent we were
/// started by is still the parent (it may have died before the prctl).
fn bind_to_parent() {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    }
    // Slurm's `--signal=USR1` (without `B:`) and `srun` deliver SIGUSR1 to every process of
    // the step: the coordinator turns it into a `drain` message, so a worker ignores it
    // instead of dying with its batch in flight.
    // SAFETY: setting a signal's disposition to "ignore" runs no code in the handler.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGUSR1,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    if let Ok(ppid) = std::env::var("FIDSHARD_PARENT_PID") {
        if ppid.parse::<i32>().ok() != Some(nix::unistd::getppid().as_raw()) {
            std::process::exit(0);
        }
    }
}

pub(crate) fn run(id: u32, device: Device) -> Result<()> {
    bind_to_parent();
    let outbox = Outbox(Arc::new(Mutex::new(std::io::stdout())));
    let (tx, rx) = mpsc::channel::<ToWorker>();
    let inbox_outbox = outbox.clone();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for l in stdin.lock().lines() {
            let Ok(l) = l else { break };
            match serde_json::from_str::<ToWorker>(&l) {
                Ok(msg) => {
                    if tx.send(msg).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    // The two binaries disagree (different versions?): stop at once and say so,
                    // instead of idling until the stall timeout.
                    let message = format!(
                        "protocol error: cannot parse a message from the coordinator ({e}); are fidshard and fidshard-worker the same version?"
                    );
                    tracing::error!("{message}");
                    inbox_outbox.send(&FromWorker::Fatal {
                        kind: FailureKind::Protocol,
                        message,
                    });
                    std::process::exit(fidshard_core::Exit::InvalidInput as i32);
                }
            }
        }
        // End of input: the coordinator is gone or wants us gone. Never outlive it.
        tracing::info!("stdin closed; exiting");
        std::process::exit(0);
    });

    let Ok(ToWorker::Init {
        settings,
        samples_dir,
        weights,
    }) = rx.recv()
    else {
        return Err(anyhow!("worker {id}: the first message was not `init`"));
    };
    fidshard_worker::precision::configure(settings.precision);
    let start = Instant::now();
    let num_samples = settings.num_samples;
    if let Some(expected) = &weights {
        check_weights(&outbox, expected, &settings.checkpoint, &settings.vae)?;
    }
    let loaded = fidshard_core::faults::maybe_load_failure()
        .map_err(|m| fidshard_worker::EngineError::checkpoint(&settings.checkpoint, m))
        .and_then(|_| Engine::load(*settings, device));
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
    if let Some(expected) = &weights {
        check_weights(
            &outbox,
            expected,
            &engine.settings().checkpoint,
            &engine.settings().vae,
        )?;
    }
    outbox.send(&FromWorker::Ready {
        pid: std::process::id(),
        device: format!("{device:?}"),
        load_seconds: start.elapsed().as_secs_f64(),
    });
    tracing::info!(worker = id, ?device, "ready");

    let mut run_seq = 0u64;
    let side = engine.image_size() as u32;
    let labels = {
        let d = engine.draw_spec();
        LabelSpec {
            seed: d.seed,
            labels: d.labels,
            num_classes: d.num_classes,
        }
    };
    let writer = {
        let outbox = outbox.clone();
        Writer::spawn(
            samples_dir.clone(),
            engine.image_size() as u32,
            num_samples,
            move |ev| match ev {
                WriterEvent::Done {
                    shard,
                    crc32,
                    mut labels,
                    seconds,
                } => outbox.send(&FromWorker::ShardDone {
                    labels: {
                        fidshard_core::faults::maybe_wrong_labels(&mut labels);
                        labels
                    },
                    shard,
                    crc32,
                    seconds,
                }),
                WriterEvent::Failed { shard, message } => outbox.send(&FromWorker::ShardFailed {
                    shard,
                    kind: FailureKind::Io,
                    message,
                }),
            },
        )
    };

    let mut batch = engine.batch_size().max(1);
    let mut producer = NoiseProducer::new(engine.draw_spec());
    // Messages read while a shard was sampling (looking for `drain`), handled after it.
    let mut pending: VecDeque<ToWorker> = VecDeque::new();
    // Set by `drain`: the shard it interrupted and how many of its PNGs exist.
    let mut drained: Option<Option<(fidshard_core::shard::Shard, usize)>> = None;
    while let Some(msg) = pending.pop_front().or_else(|| rx.recv().ok()) {
        match msg {
            ToWorker::Assign { shard, attempt } => {
                tracing::info!(worker = id, %shard, attempt, "sampling shard");
                fidshard_core::faults::maybe_crash(id);
                run_seq += 1;
                let run = run_seq;
                let started = Instant::now();
                let found = reuse::scan(&samples_dir, &shard, num_samples, side, labels);
                for (path, why) in &found.bad {
                    tracing::warn!(worker = id, "{}: {why}; sampling it again", path.display());
                }
                let reused = found.reused.len();
                let indices = found.missing;
                if reused > 0 {
                    tracing::info!(
                        worker = id,
                        %shard,
                        reused,
                        sampling = indices.len(),
                        "reusing PNGs written by an earlier attempt"
                    );
                }
                if writer
                    .tx
                    .send(WriteJob::Begin {
                        run,
                        reused: found.reused,
                    })
                    .is_err()
                {
                    return Err(anyhow!("PNG writer thread stopped"));
                }
                if reused > 0 {
                    outbox.send(&FromWorker::Progress {
                        shard: shard.id,
                        sampled: reused as u64,
                        written: 0,
                        total: shard.len(),
                        batch,
                    });
                }
                let mut sampled = 0usize;
                let mut timings = Timings::default();
                // Noise for the next batch is drawn while this one samples (noise.rs).
                producer.clear();
                let mut requested = 0usize;
                while sampled < indices.len() {
                    if writer.is_aborted(run) {
                        break;
                    }
                    // Between batches: the one before this point is finished and queued for
                    // writing, so a drain loses nothing that was sampled.
                    if drain_requested(&rx, &mut pending) {
                        drained = Some(Some((shard, reused + sampled)));
                        break;
                    }
                    while requested < indices.len() && requested < sampled + 2 * batch {
                        let end = (requested + batch).min(indices.len());
                        producer.request(indices[requested..end].to_vec());
                        requested = end;
                    }
                    let Some(draws) = producer.take() else {
                        return Err(anyhow!("the noise producer thread stopped"));
                    };
                    let chunk_len = draws.indices.len();
                    fidshard_core::faults::maybe_slow();
                    let poisoned = fidshard_core::faults::maybe_poison(shard.id)
                        .map_err(|m| ChunkError::Fail(FailureKind::Other, m));
                    match poisoned.and_then(|_| sample_chunk(&engine, draws, &mut timings)) {
                        Ok(samples) => {
                            sampled += chunk_len;
                            if writer
                                .tx
                                .send(WriteJob::Images {
                                    run,
                                    shard: shard.id,
                                    samples,
                                })
                                .is_err()
                            {
                                return Err(anyhow!("PNG writer thread stopped"));
                            }
                            outbox.send(&FromWorker::Progress {
                                shard: shard.id,
                                sampled: (reused + sampled) as u64,
                                written: 0,
                                total: shard.len(),
                                batch,
                            });
                        }
                        Err(ChunkError::Oom(msg)) if batch > 1 => {
                            batch = (batch / 2).max(1);
                            // The batches drawn ahead have the old size: draw again.
                            producer.clear();
                            requested = sampled;
                            tracing::warn!(
                                worker = id,
                                batch,
                                "out of memory; halving the micro-batch: {msg}"
                            );
                        }
                        Err(ChunkError::Oom(msg)) => {
                            outbox.send(&FromWorker::ShardFailed {
                                shard: shard.id,
                                kind: FailureKind::Oom,
                                message: format!("out of memory at micro-batch 1: {msg}"),
                            });
                            break;
                        }
                        Err(ChunkError::Fail(kind, msg)) => {
                            outbox.send(&FromWorker::ShardFailed {
                                shard: shard.id,
                                kind,
                                message: msg,
                            });
                            break;
                        }
                    }
                }
                if drained.is_some() {
                    break;
                }
                if sampled == indices.len() {
                    let _ = writer.tx.send(WriteJob::EndShard {
                        run,
                        shard: shard.id,
                        started,
                    });
                }
            }
            ToWorker::Drain => {
                drained = Some(None);
                break;
            }
            ToWorker::Shutdown => break,
            ToWorker::Init { .. } => tracing::warn!("ignoring a second init"),
        }
    }
    // Writes what is queued (fsync + rename each), reporting any shard that completes.
    writer.finish();
    if let Some(interrupted) = drained {
        match interrupted {
            Some((shard, written)) => tracing::info!(
                worker = id,
                %shard,
                written,
                total = shard.len(),
                "drained: the batch in flight is written; the shard's PNGs are reused when it is assigned again; exiting"
            ),
            None => tracing::info!(worker = id, "drained: nothing in flight; exiting"),
        }
        // Draws requested ahead are not needed: do not wait for them.
        std::mem::forget(producer);
    }
    Ok(())
}

/// Whether the coordinator sent `drain`; other messages read on the way are kept in `pending`.
fn drain_requested(rx: &mpsc::Receiver<ToWorker>, pending: &mut VecDeque<ToWorker>) -> bool {
    while let Ok(msg) = rx.try_recv() {
        if matches!(msg, ToWorker::Drain) {
            return true;
        }
        pending.push_back(msg);
    }
    false
}

/// Stops the worker (and, through the `weights_changed` fatal message, the run) when the
/// checkpoint or the VAE on disk is not what the job's fingerprint recorded.
fn check_weights(
    outbox: &Outbox,
    expected: &fidshard_core::identity::WeightsIdentity,
    checkpoint: &std::path::Path,
    vae: &std::path::Path,
) -> Result<()> {
    let found = fidshard_core::identity::WeightsIdentity::compute(checkpoint, vae)
        .map_err(|e| e.to_string());
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

enum ChunkError {
    Oom(String),
    Fail(FailureKind, String),
}

/// Samples and decodes one micro-batch, classifying libtorch's errors (out of memory or not).
fn sample_chunk(
    engine: &Engine,
    draws: Draws,
    t: &mut Timings,
) -> Result<Vec<fidshard_worker::Sample>, ChunkError> {
    fidshard_core::faults::maybe_oom(draws.indices.len()).map_err(ChunkError::Oom)?;
    match engine.try_sample_batch_from(draws, t) {
        Ok(batch) => Ok(batch.samples),
        Err(BatchError::OutOfMemory(msg)) => Err(ChunkError::Oom(msg)),
        Err(BatchError::NonFinite(msg)) => Err(ChunkError::Fail(FailureKind::NonFinite, msg)),
        Err(BatchError::Failed(msg)) => Err(ChunkError::Fail(FailureKind::Other, msg)),
    }
}
