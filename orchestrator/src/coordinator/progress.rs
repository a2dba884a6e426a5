//! Progress reporting: a progress bar when stderr is a terminal, otherwise one log line per
//! finished shard (cron and Slurm logs). Also the images/s rate and ETA for `status`.
use crate::job::plan::Shard;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    /// Images sampled in this run (the rate's numerator).
    sampled: u64,
}

impl Progress {
    pub fn new(total: u64, done_before: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} images ({per_sec}, ETA {eta}) {msg}",
                )
                .expect("valid template"),
            );
            b.set_position(done_before);
            b
        });
        Progress {
            bar,
            started: Instant::now(),
            sampled: 0,
        }
    }

    pub fn sampled(&mut self, n: u64) {
        self.sampled += n;
    }

    pub fn shard_done(&mut self, shard: &Shard, worker: &str, seconds: f64, done: u64, total: u64) {
        match &self.bar {
            Some(b) => {
                b.inc(shard.len());
                b.set_message(format!("{done}/{total} shards"));
            }
            None => tracing::info!(
                shard = %shard,
                worker,
                seconds = crate::sys::time::round1(seconds),
                shards_done = done,
                shards_total = total,
                "shard done"
            ),
        }
    }

    pub fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.sampled as f64 / secs
        } else {
            0.0
        }
    }

    pub fn eta(&self, remaining: u64) -> Option<f64> {
        let r = self.rate();
        (r > 0.0).then(|| remaining as f64 / r)
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
