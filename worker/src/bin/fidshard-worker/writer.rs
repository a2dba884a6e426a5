//! The PNG writer thread: encodes each sample, writes it through temp + fsync + rename, and
//! keeps a CRC32 per file, so that encoding and fsync never stall sampling. One writer serves
//! both the shards of `serve` and the range of the `sample` task.
//!
//! Each assignment gets a run number, so that a shard that failed and was assigned again is
//! never mixed up with its earlier run; a failed write marks its run aborted and the sampling
//! thread stops that run at its next batch. A run's CRCs and labels are kept by index (the PNGs
//! reused from an earlier attempt arrive first, the sampled ones in any order) and reported in
//! index order when the shard ends.
//!
//! With the job's `evaluate:`, each image also comes with its Inception features (computed by
//! the sampling thread from the same pixels); when the shard ends the writer writes them as one
//! features file tied to the PNGs' CRC32s (fidshard-core's features.rs), durably, before it
//! reports the shard done.
use fidshard_core::features::{file_name, FeatureHeader, Features};
use fidshard_core::output::{encode_png, png_name, sync_parent, write_renamed};
use fidshard_core::protocol::FeaturesSpec;
use fidshard_worker::features::FeatureRows;
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
    /// A run begins: the PNGs of its shard that already exist and are reused as they are (and,
    /// with features, theirs, one per reused PNG in the same order).
    Begin {
        run: u64,
        reused: Vec<Reused>,
        features: Vec<FeatureRows>,
    },
    Images {
        run: u64,
        shard: u64,
        samples: Vec<Sample>,
        /// With features: the rows of `samples`, in their order.
        features: Option<FeatureRows>,
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
        /// The CRC32 of the shard's features file, when features are computed.
        features_crc32: Option<u32>,
    },
    /// A PNG could not be encoded or written; the run is aborted.
    Failed { shard: u64, message: String },
}

pub(crate) struct Writer {
    pub tx: mpsc::SyncSender<WriteJob>,
    aborted: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<()>,
}

impl Writer {
    pub fn spawn(
        dir: PathBuf,
        side: u32,
        num_samples: u64,
        features: Option<FeaturesSpec>,
        on_event: impl FnMut(WriterEvent) + Send + 'static,
    ) -> Writer {
        let (tx, rx) = mpsc::sync_channel::<WriteJob>(2);
        let aborted = Arc::new(AtomicU64::new(NO_RUN));
        let mut thread = WriterThread {
            dir,
            side,
            num_samples,
            aborted: aborted.clone(),
            on_event,
            files: BTreeMap::new(),
            features,
            feats: BTreeMap::new(),
            current: NO_RUN,
        };
        let handle = std::thread::spawn(move || {
            for job in rx {
                thread.job(job);
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

/// The writer thread's state: the run it is writing and what it wrote of it.
struct WriterThread<F> {
    dir: PathBuf,
    side: u32,
    num_samples: u64,
    aborted: Arc<AtomicU64>,
    on_event: F,
    /// index -> (crc32, label) of the current run.
    files: BTreeMap<u64, (u32, i64)>,
    /// Where the features go, when the job is evaluated.
    features: Option<FeaturesSpec>,
    /// index -> the features of the current run's images.
    feats: BTreeMap<u64, FeatureRows>,
    current: u64,
}

impl<F: FnMut(WriterEvent)> WriterThread<F> {
    fn job(&mut self, job: WriteJob) {
        match job {
            WriteJob::Begin {
                run,
                reused,
                features,
            } => {
                self.current = run;
                self.feats = reused.iter().map(|r| r.index).zip(features).collect();
                self.files = reused
                    .into_iter()
                    .map(|r| (r.index, (r.crc32, r.label)))
                    .collect();
            }
            WriteJob::Images {
                run,
                shard,
                samples,
                features,
            } => {
                if let Some(rows) = features {
                    let indices: Vec<u64> = samples.iter().map(|s| s.index).collect();
                    let per_image = rows.into_images(samples.len());
                    self.feats.extend(indices.into_iter().zip(per_image));
                }
                self.images(run, shard, samples)
            }
            WriteJob::EndShard {
                run,
                shard,
                started,
            } => self.end_shard(run, shard, started),
        }
    }

    /// Writes the PNGs of a batch; the first that fails aborts the run.
    fn images(&mut self, run: u64, shard: u64, samples: Vec<Sample>) {
        if run != self.current {
            self.current = run;
            self.files.clear();
            self.feats.clear();
        }
        if self.aborted.load(Ordering::SeqCst) == run {
            return;
        }
        for s in samples {
            let path = self.dir.join(png_name(s.index, self.num_samples));
            let res = encode_png(&s.pixels, self.side).and_then(|bytes| {
                fidshard_core::faults::maybe_io_error(&path)?;
                write_renamed(&path, &bytes)?;
                Ok(crc32fast::hash(&bytes))
            });
            match res {
                Ok(c) => {
                    self.files.insert(s.index, (c, s.label));
                }
                Err(e) => {
                    self.aborted.store(run, Ordering::SeqCst);
                    (self.on_event)(WriterEvent::Failed {
                        shard,
                        message: e.to_string(),
                    });
                    return;
                }
            }
        }
    }

    /// Reports the run's CRCs and labels in index order, unless it was aborted or replaced.
    fn end_shard(&mut self, run: u64, shard: u64, started: Instant) {
        if self.aborted.load(Ordering::SeqCst) == run || self.current != run {
            return;
        }
        // One folder fsync per shard makes its renames durable before it is reported done.
        let probe = self.dir.join(png_name(0, self.num_samples));
        if let Err(e) = sync_parent(&probe) {
            self.aborted.store(run, Ordering::SeqCst);
            (self.on_event)(WriterEvent::Failed {
                shard,
                message: format!("{}: {e}", self.dir.display()),
            });
            return;
        }
        let features_crc32 = match self.write_features() {
            Ok(crc) => crc,
            Err(message) => {
                self.aborted.store(run, Ordering::SeqCst);
                (self.on_event)(WriterEvent::Failed { shard, message });
                return;
            }
        };
        let (crc32, labels) = std::mem::take(&mut self.files).into_values().unzip();
        (self.on_event)(WriterEvent::Done {
            shard,
            crc32,
            labels,
            seconds: started.elapsed().as_secs_f64(),
            features_crc32,
        });
        self.current = NO_RUN;
    }

    /// With features: writes the run's features file (every image's rows, in index order, tied
    /// to the PNGs' CRC32s); returns its CRC32.
    fn write_features(&mut self) -> Result<Option<u32>, String> {
        let Some(spec) = &self.features else {
            return Ok(None);
        };
        let feats = std::mem::take(&mut self.feats);
        let (Some(&first), n) = (self.files.keys().next(), self.files.len()) else {
            return Ok(None);
        };
        let mut rows = FeatureRows::default();
        for index in self.files.keys() {
            let r = feats
                .get(index)
                .ok_or_else(|| format!("no Inception features for sample {index}"))?;
            rows.extend(r);
        }
        let path = spec.dir.join(file_name(first, n as u64));
        let file = Features {
            header: FeatureHeader {
                first,
                crc32: self.files.values().map(|&(c, _)| c).collect(),
                inception: spec.inception_sha256.clone(),
            },
            pool: rows.pool,
            spatial: rows.spatial,
            logits: rows.logits,
        };
        file.check_shape()?;
        file.write_with_crc(&path)
            .map(Some)
            .map_err(|e| format!("writing the Inception features: {e}"))
    }
}
