//! `fidshard worker`: the long-lived process the coordinator spawns per device (hidden
//! subcommand). It loads the model and VAE once, then samples the shards it is assigned; a
//! separate thread encodes and writes the PNGs so that encoding never stalls sampling. See
//! protocol.rs for the messages.
use crate::protocol::{line, FailureKind, FromWorker, ToWorker};
use anyhow::{anyhow, Context, Result};
use fidshard_worker::output::{encode_png, png_name, write_atomic};
use fidshard_worker::{Engine, Sample, Timings};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// No run is being aborted.
const NO_RUN: u64 = u64::MAX;

/// Work for the PNG writer. `run` numbers each assignment, so that a shard that failed and
/// was assigned again is never mixed up with its earlier run.
enum WriteJob {
    Images {
        run: u64,
        shard: u64,
        samples: Vec<Sample>,
    },
    EndShard {
        run: u64,
        shard: u64,
        total: u64,
        started: Instant,
    },
}

/// Exits when the parent dies: SIGKILL on parent death, and a check that the parent we were
/// started by is still the parent (it may have died before the prctl).
fn bind_to_parent() {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
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
                Err(e) => tracing::error!("bad message from the coordinator: {e}: {l}"),
            }
        }
        // End of input: the coordinator is gone or wants us gone. Never outlive it.
        tracing::info!("stdin closed; exiting");
        std::process::exit(0);
    });

    let Ok(ToWorker::Init {
        settings,
        samples_dir,
    }) = rx.recv()
    else {
        return Err(anyhow!("worker {id}: the first message was not `init`"));
    };
    fidshard_worker::precision::configure(settings.precision);
    let start = Instant::now();
    let num_samples = settings.num_samples;
    let loaded = crate::faults::maybe_load_failure()
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
    outbox.send(&FromWorker::Ready {
        pid: std::process::id(),
        device: format!("{device:?}"),
        load_seconds: start.elapsed().as_secs_f64(),
    });
    tracing::info!(worker = id, ?device, "ready");

    let aborted = Arc::new(AtomicU64::new(NO_RUN));
    let mut run_seq = 0u64;
    let (wtx, wrx) = mpsc::sync_channel::<WriteJob>(2);
    let writer = {
        let outbox = outbox.clone();
        let aborted = aborted.clone();
        let side = engine.image_size() as u32;
        std::thread::spawn(move || {
            writer_loop(wrx, outbox, aborted, samples_dir, side, num_samples)
        })
    };

    let mut batch = engine.settings().batch_size.max(1);
    for msg in rx {
        match msg {
            ToWorker::Assign { shard, attempt } => {
                tracing::info!(worker = id, %shard, attempt, "sampling shard");
                crate::faults::maybe_crash(id);
                run_seq += 1;
                let run = run_seq;
                let started = Instant::now();
                let indices: Vec<u64> = shard.indices().collect();
                let mut sampled = 0usize;
                let mut timings = Timings::default();
                while sampled < indices.len() {
                    if aborted.load(Ordering::SeqCst) == run {
                        break;
                    }
                    let chunk = &indices[sampled..(sampled + batch).min(indices.len())];
                    crate::faults::maybe_slow();
                    let poisoned = crate::faults::maybe_poison(shard.id).map_err(ChunkError::Other);
                    match poisoned.and_then(|_| sample_chunk(&engine, chunk, &mut timings)) {
                        Ok(samples) => {
                            sampled += chunk.len();
                            if wtx
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
                                sampled: sampled as u64,
                                written: 0,
                                total: shard.len(),
                                batch,
                            });
                        }
                        Err(ChunkError::Oom(msg)) if batch > 1 => {
                            batch = (batch / 2).max(1);
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
                        Err(ChunkError::Other(msg)) => {
                            outbox.send(&FromWorker::ShardFailed {
                                shard: shard.id,
                                kind: FailureKind::Other,
                                message: msg,
                            });
                            break;
                        }
                    }
                }
                if sampled == indices.len() {
                    let _ = wtx.send(WriteJob::EndShard {
                        run,
                        shard: shard.id,
                        total: shard.len(),
                        started,
                    });
                }
            }
            ToWorker::Shutdown => break,
            ToWorker::Init { .. } => tracing::warn!("ignoring a second init"),
        }
    }
    drop(wtx);
    let _ = writer.join();
    Ok(())
}

enum ChunkError {
    Oom(String),
    Other(String),
}

/// Samples and decodes one micro-batch; libtorch errors surface as panics in tch's infallible
/// API, so they are caught here and classified (CUDA out-of-memory vs anything else).
fn sample_chunk(
    engine: &Engine,
    chunk: &[u64],
    t: &mut Timings,
) -> Result<Vec<Sample>, ChunkError> {
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::faults::maybe_oom(chunk.len())?;
        let (labels, latents) = engine.sample_latents(chunk, t);
        let images = engine.decode(&latents, t);
        fidshard_worker::engine::to_samples(chunk, &labels, &images).map_err(|e| e.to_string())
    }));
    let msg = match res {
        Ok(Ok(samples)) => return Ok(samples),
        Ok(Err(msg)) => msg,
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "libtorch panicked".into()),
    };
    if msg.contains("out of memory") {
        Err(ChunkError::Oom(
            msg.lines().next().unwrap_or_default().to_string(),
        ))
    } else {
        Err(ChunkError::Other(
            msg.lines().next().unwrap_or_default().to_string(),
        ))
    }
}

fn writer_loop(
    rx: mpsc::Receiver<WriteJob>,
    outbox: Outbox,
    aborted: Arc<AtomicU64>,
    dir: PathBuf,
    side: u32,
    num_samples: u64,
) {
    let mut crc: Vec<u32> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    let mut current = NO_RUN;
    for job in rx {
        match job {
            WriteJob::Images {
                run,
                shard,
                samples,
            } => {
                if run != current {
                    current = run;
                    crc.clear();
                    labels.clear();
                }
                if aborted.load(Ordering::SeqCst) == run {
                    continue;
                }
                for s in samples {
                    let path = dir.join(png_name(s.index, num_samples));
                    let res = encode_png(&s.pixels, side).and_then(|bytes| {
                        crate::faults::maybe_io_error(&path)?;
                        write_atomic(&path, &bytes)?;
                        Ok(crc32fast::hash(&bytes))
                    });
                    match res {
                        Ok(c) => {
                            crc.push(c);
                            labels.push(s.label);
                        }
                        Err(e) => {
                            aborted.store(run, Ordering::SeqCst);
                            outbox.send(&FromWorker::ShardFailed {
                                shard,
                                kind: FailureKind::Io,
                                message: e.to_string(),
                            });
                            break;
                        }
                    }
                }
            }
            WriteJob::EndShard {
                run,
                shard,
                total,
                started,
            } => {
                if aborted.load(Ordering::SeqCst) == run || current != run {
                    continue;
                }
                debug_assert_eq!(crc.len() as u64, total);
                outbox.send(&FromWorker::ShardDone {
                    shard,
                    crc32: std::mem::take(&mut crc),
                    labels: std::mem::take(&mut labels),
                    seconds: started.elapsed().as_secs_f64(),
                });
                current = NO_RUN;
            }
        }
    }
}
