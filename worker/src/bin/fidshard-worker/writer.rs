//! The PNG writer thread: encodes each sample, writes it through temp + fsync + rename, and
//! keeps a CRC32 per file, so that encoding and fsync never stall sampling. One writer serves
//! both the shards of `serve` and the range of the `sample` task.
//!
//! Each assignment gets a run number, so that a shard that failed and was assigned again is
//! never mixed up with its earlier run; a failed write marks its run aborted and the sampling
//! thread stops that run at its next batch. A run's CRCs and labels are kept by index (the PNGs
//! reused from an earlier attempt arrive first, the sampled ones in any order) and reported in
//! index order when the shard ends.
use fidshard_core::output::{encode_png, png_name, write_atomic};
use fidshard_worker::Sample;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

/// No run is being aborted.
pub(crate) const NO_RUN: u64 = u64::MAX;

/// One PNG of a shard that needs no writing: its index, the CRC32 of its bytes, its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reused {
    pub index: u64,
    pub crc32: u32,
    pub label: i64,
}

pub(crate) enum WriteJob {
    /// A run begins: the PNGs of its shard that already exist and are reused as they are.
    Begin { run: u64, reused: Vec<Reused> },
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
            // index -> (crc32, label) of the current run.
            let mut files: BTreeMap<u64, (u32, i64)> = BTreeMap::new();
            let mut current = NO_RUN;
            for job in rx {
                match job {
                    WriteJob::Begin { run, reused } => {
                        current = run;
                        files = reused
                            .into_iter()
                            .map(|r| (r.index, (r.crc32, r.label)))
                            .collect();
                    }
                    WriteJob::Images {
                        run,
                        shard,
                        samples,
                    } => {
                        if run != current {
                            current = run;
                            files.clear();
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
                                    files.insert(s.index, (c, s.label));
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
                        let (crc32, labels) = std::mem::take(&mut files).into_values().unzip();
                        on_event(WriterEvent::Done {
                            shard,
                            crc32,
                            labels,
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
