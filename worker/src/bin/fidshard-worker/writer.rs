//! The PNG writer thread: encodes each sample, writes it through temp + fsync + rename, and
//! keeps a CRC32 per file, so that encoding and fsync never stall sampling. One writer serves
//! both the shards of `serve` and the range of the `sample` task.
//!
//! Each assignment gets a run number, so that a shard that failed and was assigned again is
//! never mixed up with its earlier run; a failed write marks its run aborted and the sampling
//! thread stops that run at its next batch.
use fidshard_core::output::{encode_png, png_name, write_atomic};
use fidshard_worker::Sample;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

/// No run is being aborted.
pub(crate) const NO_RUN: u64 = u64::MAX;

pub(crate) enum WriteJob {
    Images {
        run: u64,
        shard: u64,
        samples: Vec<Sample>,
    },
    EndShard {
        run: u64,
        shard: u64,
        started: Instant,
    },
}

/// What the writer reports.
pub(crate) enum WriterEvent {
    /// Every PNG of the shard is written (fsynced and renamed).
    Done {
        shard: u64,
        crc32: Vec<u32>,
        labels: Vec<i64>,
        seconds: f64,
    },
    /// A PNG could not be encoded or written; the run is aborted.
    Failed { shard: u64, message: String },
}

pub(crate) struct Writer {
    pub tx: mpsc::SyncSender<WriteJob>,
    pub aborted: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<()>,
}

impl Writer {
    pub fn spawn(
        dir: PathBuf,
        side: u32,
        num_samples: u64,
        mut on_event: impl FnMut(WriterEvent) + Send + 'static,
    ) -> Writer {
        let (tx, rx) = mpsc::sync_channel::<WriteJob>(2);
        let aborted = Arc::new(AtomicU64::new(NO_RUN));
        let ab = aborted.clone();
        let handle = std::thread::spawn(move || {
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
                        if ab.load(Ordering::SeqCst) == run {
                            continue;
                        }
                        for s in samples {
                            let path = dir.join(png_name(s.index, num_samples));
                            let res = encode_png(&s.pixels, side).and_then(|bytes| {
                                fidshard_core::faults::maybe_io_error(&path)?;
                                write_atomic(&path, &bytes)?;
                                Ok(crc32fast::hash(&bytes))
                            });
                            match res {
                                Ok(c) => {
                                    crc.push(c);
                                    labels.push(s.label);
                                }
                                Err(e) => {
                                    ab.store(run, Ordering::SeqCst);
                                    on_event(WriterEvent::Failed {
                                        shard,
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
                        started,
                    } => {
                        if ab.load(Ordering::SeqCst) == run || current != run {
                            continue;
                        }
                        on_event(WriterEvent::Done {
                            shard,
                            crc32: std::mem::take(&mut crc),
                            labels: std::mem::take(&mut labels),
                            seconds: started.elapsed().as_secs_f64(),
                        });
                        current = NO_RUN;
                    }
                }
            }
        });
        Writer {
            tx,
            aborted,
            handle,
        }
    }

    /// Whether run `run` was aborted by a failed write.
    pub fn is_aborted(&self, run: u64) -> bool {
        self.aborted.load(Ordering::SeqCst) == run
    }

    /// Writes what is queued, then stops the thread.
    pub fn finish(self) {
        drop(self.tx);
        let _ = self.handle.join();
    }
}
