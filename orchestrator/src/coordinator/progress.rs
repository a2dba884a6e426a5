//! Progress while a run samples, in images (every batch a worker reports moves it):
//! - in a terminal: a bar with images done, and images/s and ETA once there is data, and one
//!   line per worker under it (device, shard, images of the shard, batch size); log lines are
//!   printed above the bars, never onto them (sys/log.rs routes them through the bars);
//! - otherwise (cron, Slurm logs): a heartbeat line every `progress_interval` with done/total,
//!   images/s, ETA and each worker's state, as numbers in `--log-format json`; plus one line
//!   per finished shard.
use crate::job::plan::Shard;
use crate::outdir::snapshot::WorkerSnapshot;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

struct Bars {
    multi: MultiProgress,
    main: ProgressBar,
    workers: Vec<ProgressBar>,
}

pub(crate) struct Progress {
    bars: Option<Bars>,
    started: Instant,
    total: u64,
    /// Images done, those recorded before this run included.
    done: u64,
    /// Images sampled in this run (the rate's numerator).
    sampled: u64,
    interval: Duration,
    last_line: Instant,
}

impl Progress {
    pub fn new(total: u64, done_before: u64, interval: Duration) -> Progress {
        let force = std::env::var_os("FIDSHARD_PROGRESS_BAR").is_some();
        let bars = (force || std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let main = multi.add(ProgressBar::new(total));
            main.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {bar:40} {pos}/{len} images {msg}",
                )
                .expect("valid template"),
            );
            main.set_position(done_before);
            main.set_message("(starting workers)");
            crate::sys::log::route_through(Some(multi.clone()));
            Bars {
                multi,
                main,
                workers: Vec::new(),
            }
        });
        Progress {
            bars,
            started: Instant::now(),
            total,
            done: done_before,
            sampled: 0,
            interval,
            last_line: Instant::now(),
        }
    }

    /// `n` more images sampled (a batch).
    pub fn sampled(&mut self, n: u64) {
        self.sampled += n;
        self.done += n;
        if let Some(b) = &self.bars {
            b.main.inc(n);
        }
    }

    pub fn shard_done(&mut self, shard: &Shard, worker: &str, seconds: f64, done: u64, total: u64) {
        if self.bars.is_none() {
            tracing::info!(
                shard = %shard,
                worker,
                seconds = crate::sys::time::round1(seconds),
                shards_done = done,
                shards_total = total,
                "shard done"
            );
        }
    }

    /// `images/s, ETA` once there is data, else nothing.
    fn rate_text(&self) -> String {
        match self.eta(self.total.saturating_sub(self.done)) {
            Some(eta) => format!(
                "{:.2} images/s, ETA {}",
                self.rate(),
                crate::sys::time::format_duration(eta)
            ),
            None => "(measuring the rate)".into(),
        }
    }

    /// Called every tick with the workers' state: redraws the worker lines, or writes the
    /// heartbeat line when `progress_interval` has passed.
    pub fn tick(&mut self, workers: &[WorkerSnapshot]) {
        let msg = self.rate_text();
        if let Some(b) = &mut self.bars {
            b.main.set_message(msg);
            while b.workers.len() < workers.len() {
                let w = b.multi.add(ProgressBar::new_spinner());
                w.set_style(ProgressStyle::with_template("  {msg}").expect("valid template"));
                b.workers.push(w);
            }
            for (bar, w) in b.workers.iter().zip(workers) {
                bar.set_message(worker_line(w));
            }
            return;
        }
        if self.last_line.elapsed() < self.interval {
            return;
        }
        self.last_line = Instant::now();
        let rate = self.rate();
        let eta = self.eta(self.total.saturating_sub(self.done));
        let lines: Vec<String> = workers.iter().map(worker_line).collect();
        match eta {
            Some(eta) => tracing::info!(
                done = self.done,
                total = self.total,
                images_per_sec = (rate * 100.0).round() / 100.0,
                eta_seconds = eta.round(),
                workers = %lines.join("; "),
                "progress"
            ),
            None => tracing::info!(
                done = self.done,
                total = self.total,
                workers = %lines.join("; "),
                "progress"
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
        (self.sampled > 0 && r > 0.0).then(|| remaining as f64 / r)
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            for w in &b.workers {
                w.finish_and_clear();
            }
            b.main.finish_and_clear();
            crate::sys::log::route_through(None);
        }
    }
}

/// `worker 0 cuda:0 busy shard #3 [24..32) 6/8 batch 2`.
fn worker_line(w: &WorkerSnapshot) -> String {
    let mut s = format!("worker {} {} {}", w.id, w.device, w.state.as_str());
    if let Some(shard) = &w.shard {
        s += &format!(" shard {shard}");
    }
    if let Some((done, total)) = w.progress {
        s += &format!(" {done}/{total}");
    }
    if let Some(b) = w.batch {
        s += &format!(" batch {b}");
    }
    s
}
