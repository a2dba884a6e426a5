//! `fidshard-worker serve`: the long-lived process the coordinator spawns per device. It loads
//! the model and VAE once (the handshake, start.rs), then samples the shards it is assigned
//! ([`Server::shard`]); the PNG writer thread (writer.rs) encodes and writes while the next
//! batch samples. See fidshard-core's protocol.rs for the messages, link.rs for their transport.
//!
//! A shard assigned again after an interruption reuses the PNGs its earlier attempt wrote
//! (reuse.rs) and samples only the other indices. `drain` is looked for between batches: the
//! batch in flight is finished and written, then the worker exits 0 (preemption loses no
//! finished batch). A closed stdout is looked for there too and while idle: the worker then
//! exits 0 without waiting for the writer. The end of input and a line that does not parse are
//! acted on like messages, and end the process from the reader thread within a second if the
//! server is busy (link.rs, `main::end_now`): a worker whose coordinator is gone never goes on
//! sampling into a resumed run.
//!
//! With the job's `evaluate:`, each batch's Inception features are computed from its pixels
//! right after it is sampled, and each shard ends with its features file (features.rs).
mod features;
mod link;
mod start;

use crate::reuse::{self, LabelSpec};
use crate::writer::{WriteJob, Writer};
use anyhow::{anyhow, Result};
use features::ShardFeatures;
use fidshard_core::protocol::{FailureKind, FromWorker, ToWorker};
use fidshard_core::shard::Shard;
use fidshard_core::Exit;
use fidshard_worker::noise::{Draws, NoiseProducer};
use fidshard_worker::{BatchError, Engine, Timings};
use link::{Inbound, Inbox, Outbox, Stop};
use start::{Handshake, Loaded};
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;

/// Serves the coordinator until `shutdown`, `drain` or the end of input; returns the exit code.
pub(crate) fn run(id: u32, device: Device) -> Result<Exit> {
    if !link::bind_to_parent() {
        return Ok(Exit::Complete);
    }
    let outbox = Outbox::new();
    let mut inbox = Inbox::spawn(outbox.clone());
    match start::handshake(id, device, &outbox, &mut inbox)? {
        Handshake::Ready(loaded) => Server::new(id, *loaded, outbox, inbox).serve(),
        Handshake::Ended(code) => Ok(code),
    }
}

/// A loaded worker between shards.
struct Server {
    id: u32,
    engine: Engine,
    outbox: Outbox,
    inbox: Inbox,
    writer: Writer,
    /// Noise for the next batch is drawn while this one samples (noise.rs).
    producer: NoiseProducer,
    samples_dir: PathBuf,
    num_samples: u64,
    side: u32,
    labels: LabelSpec,
    /// The micro-batch in use: the engine's, halved at each out-of-memory error.
    batch: usize,
    /// Numbers the assignments, so that the writer never mixes two attempts at a shard.
    run_seq: u64,
    /// With the job's `evaluate:`: the Inception network.
    features: Option<ShardFeatures>,
    /// Seconds spent on Inception features in the current shard.
    features_seconds: f64,
}

/// How a shard's sampling ended.
enum ShardEnd {
    /// Every missing index is sampled and queued: the writer reports `shard_done`.
    Sampled,
    /// A write failed: the writer reported `shard_failed` and aborted the run.
    WriteFailed,
    /// A batch failed (or ran out of memory at micro-batch 1): report `shard_failed`.
    Failed { kind: FailureKind, message: String },
    /// `drain` came between batches; `written` PNGs of the shard exist or are queued.
    Drained { written: usize },
    /// The input ended or did not parse, or stdout is closed: exit with this code, not
    /// waiting for the writer.
    Ended(Exit),
}

/// How one micro-batch ended.
enum BatchEnd {
    /// This many samples were queued for writing.
    Sampled(usize),
    /// Out of memory: the micro-batch is halved and the batch sampled again.
    Halved,
    Failed {
        kind: FailureKind,
        message: String,
    },
}

impl Server {
    fn new(id: u32, loaded: Loaded, outbox: Outbox, inbox: Inbox) -> Server {
        let Loaded {
            engine,
            writer,
            samples_dir,
            num_samples,
            features,
        } = loaded;
        let d = engine.draw_spec();
        Server {
            id,
            batch: engine.batch_size().max(1),
            producer: NoiseProducer::new(engine.draw_spec()),
            side: engine.image_size() as u32,
            labels: LabelSpec {
                seed: d.seed,
                labels: d.labels,
                num_classes: d.num_classes,
            },
            engine,
            outbox,
            inbox,
            writer,
            samples_dir,
            num_samples,
            run_seq: 0,
            features,
            features_seconds: 0.0,
        }
    }

    /// Acts on the coordinator's messages until one ends the worker.
    fn serve(mut self) -> Result<Exit> {
        loop {
            if self.outbox.gone() {
                return Ok(self.abandon(Exit::Complete));
            }
            match self.inbox.next() {
                Inbound::Msg(ToWorker::Assign { shard, attempt }) => {
                    match self.shard(shard, attempt)? {
                        ShardEnd::Sampled | ShardEnd::WriteFailed => {}
                        ShardEnd::Failed { kind, message } => {
                            self.outbox.send(&FromWorker::ShardFailed {
                                shard: shard.id,
                                kind,
                                message,
                            })
                        }
                        ShardEnd::Drained { written } => {
                            return Ok(self.drain(Some((shard, written))))
                        }
                        ShardEnd::Ended(code) => return Ok(self.abandon(code)),
                    }
                }
                Inbound::Msg(ToWorker::Drain) => return Ok(self.drain(None)),
                Inbound::Msg(ToWorker::Shutdown) => {
                    // Writes what is queued (fsync + rename each), reporting any shard that
                    // completes.
                    self.writer.finish();
                    return Ok(Exit::Complete);
                }
                Inbound::Msg(ToWorker::Init { .. }) => tracing::warn!("ignoring a second init"),
                Inbound::End(code) => return Ok(self.abandon(code)),
            }
        }
    }

    /// Samples what `shard` lacks and queues it for writing.
    fn shard(&mut self, shard: Shard, attempt: u32) -> Result<ShardEnd> {
        let id = self.id;
        tracing::info!(worker = id, %shard, attempt, "sampling shard");
        fidshard_core::faults::maybe_crash(id);
        self.run_seq += 1;
        let run = self.run_seq;
        let started = Instant::now();
        let found = reuse::scan(
            &self.samples_dir,
            &shard,
            self.num_samples,
            self.side,
            self.labels,
        );
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
        self.features_seconds = 0.0;
        let features = match self.reused_features(&shard, &found.reused) {
            Ok(f) => f,
            Err(e) => {
                return Ok(ShardEnd::Failed {
                    kind: FailureKind::Other,
                    message: format!("{e:#}"),
                })
            }
        };
        self.queue(WriteJob::Begin {
            run,
            reused: found.reused,
            features,
        })?;
        if reused > 0 {
            self.progress(&shard, reused);
        }
        let end = self.sample(run, &shard, reused, &indices)?;
        if let ShardEnd::Sampled = end {
            tracing::info!(
                worker = id,
                %shard,
                seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                features_seconds = format!("{:.2}", self.features_seconds),
                "shard sampled"
            );
            let _ = self.writer.tx.send(WriteJob::EndShard {
                run,
                shard: shard.id,
                started,
            });
        }
        Ok(end)
    }

    /// Samples `indices` batch by batch; between batches, stops for a failed write, `drain` or
    /// the end of input.
    fn sample(
        &mut self,
        run: u64,
        shard: &Shard,
        reused: usize,
        indices: &[u64],
    ) -> Result<ShardEnd> {
        let mut sampled = 0usize;
        let mut timings = Timings::default();
        self.producer.clear();
        let mut requested = 0usize;
        while sampled < indices.len() {
            if self.writer.is_aborted(run) {
                return Ok(ShardEnd::WriteFailed);
            }
            // Between batches: the one before this point is finished and queued for writing,
            // so a drain loses nothing that was sampled.
            match self.inbox.stop_requested() {
                Some(Stop::Drain) => {
                    return Ok(ShardEnd::Drained {
                        written: reused + sampled,
                    })
                }
                Some(Stop::End(code)) => return Ok(ShardEnd::Ended(code)),
                None if self.outbox.gone() => return Ok(ShardEnd::Ended(Exit::Complete)),
                None => {}
            }
            // Two batches are drawn ahead.
            while requested < indices.len() && requested < sampled + 2 * self.batch {
                let end = (requested + self.batch).min(indices.len());
                self.producer.request(indices[requested..end].to_vec());
                requested = end;
            }
            match self.batch(run, shard, &mut timings)? {
                BatchEnd::Sampled(n) => {
                    sampled += n;
                    self.progress(shard, reused + sampled);
                }
                // The batches drawn ahead have the old size: draw again.
                BatchEnd::Halved => requested = sampled,
                BatchEnd::Failed { kind, message } => {
                    return Ok(ShardEnd::Failed { kind, message })
                }
            }
        }
        Ok(ShardEnd::Sampled)
    }

    /// Samples the next drawn batch and queues its images; halves the micro-batch when the
    /// device runs out of memory.
    fn batch(&mut self, run: u64, shard: &Shard, timings: &mut Timings) -> Result<BatchEnd> {
        let Some(draws) = self.producer.take() else {
            return Err(anyhow!("the noise producer thread stopped"));
        };
        let n = draws.indices.len();
        fidshard_core::faults::maybe_slow();
        let poisoned = fidshard_core::faults::maybe_poison(shard.id)
            .map_err(|m| ChunkError::Fail(FailureKind::Other, m));
        match poisoned.and_then(|_| sample_chunk(&self.engine, draws, timings)) {
            Ok(samples) => {
                let features = match self.batch_features(&samples) {
                    Ok(f) => f,
                    Err(e) => {
                        return Ok(BatchEnd::Failed {
                            kind: FailureKind::Other,
                            message: format!("{e:#}"),
                        })
                    }
                };
                self.queue(WriteJob::Images {
                    run,
                    shard: shard.id,
                    samples,
                    features,
                })?;
                Ok(BatchEnd::Sampled(n))
            }
            Err(ChunkError::Oom(msg)) if self.batch > 1 => {
                self.batch = (self.batch / 2).max(1);
                self.producer.clear();
                tracing::warn!(
                    worker = self.id,
                    batch = self.batch,
                    "out of memory; halving the micro-batch: {msg}"
                );
                Ok(BatchEnd::Halved)
            }
            Err(ChunkError::Oom(msg)) => Ok(BatchEnd::Failed {
                kind: FailureKind::Oom,
                message: format!("out of memory at micro-batch 1: {msg}"),
            }),
            Err(ChunkError::Fail(kind, message)) => Ok(BatchEnd::Failed { kind, message }),
        }
    }

    /// With features: those of a sampled batch.
    fn batch_features(
        &mut self,
        samples: &[fidshard_worker::Sample],
    ) -> Result<Option<fidshard_worker::features::FeatureRows>> {
        let Some(f) = &self.features else {
            return Ok(None);
        };
        let t = Instant::now();
        let rows = f.of_samples(samples)?;
        self.features_seconds += t.elapsed().as_secs_f64();
        Ok(Some(rows))
    }

    /// With features: those of the PNGs reused from an earlier attempt (else none).
    fn reused_features(
        &mut self,
        shard: &Shard,
        reused: &[crate::writer::Reused],
    ) -> Result<Vec<fidshard_worker::features::FeatureRows>> {
        let Some(f) = &self.features else {
            return Ok(Vec::new());
        };
        let t = Instant::now();
        let rows = f.of_reused(
            shard,
            reused,
            &self.samples_dir,
            self.num_samples,
            self.batch,
        )?;
        self.features_seconds += t.elapsed().as_secs_f64();
        Ok(rows)
    }

    fn queue(&self, job: WriteJob) -> Result<()> {
        self.writer
            .tx
            .send(job)
            .map_err(|_| anyhow!("PNG writer thread stopped"))
    }

    fn progress(&self, shard: &Shard, sampled: usize) {
        self.outbox.send(&FromWorker::Progress {
            shard: shard.id,
            sampled: sampled as u64,
            written: 0,
            total: shard.len(),
            batch: self.batch,
        });
    }

    /// `drain`: writes what is queued, then exits 0. `interrupted` is the shard it stopped and
    /// how many of its PNGs exist.
    fn drain(self, interrupted: Option<(Shard, usize)>) -> Exit {
        let Server {
            id,
            writer,
            producer,
            ..
        } = self;
        writer.finish();
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
        Exit::Complete
    }

    /// The coordinator is gone or sent what cannot be parsed: exit at once, waiting neither for
    /// the writer nor for the noise drawn ahead.
    fn abandon(self, code: Exit) -> Exit {
        std::mem::forget(self);
        code
    }
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
