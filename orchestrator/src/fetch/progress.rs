//! What a download shows: a bar per file when stderr is a terminal, otherwise log lines with
//! bytes and rate (every [`LOG_EVERY`]), and, for `run`, the file and its bytes in
//! `OUT/status.json` so that `fidshard status` shows "fetching" while it lasts. The snapshot
//! that was there before is put back afterwards: fetching leaves the out dir as it found it.
use crate::outdir::snapshot::{self, Fetching, JobState, Snapshot};
use crate::sys::size::human;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const LOG_EVERY: Duration = Duration::from_secs(5);
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// `OUT/status.json` while `run` fetches.
pub(crate) struct StatusFile {
    out_dir: PathBuf,
    previous: Option<Snapshot>,
    written: Option<Instant>,
}

impl StatusFile {
    pub fn new(out_dir: PathBuf) -> StatusFile {
        let previous = snapshot::read(&out_dir);
        StatusFile {
            out_dir,
            previous,
            written: None,
        }
    }

    fn show(&mut self, f: &Current, force: bool) {
        if !force && self.written.is_some_and(|t| t.elapsed() < STATUS_EVERY) {
            return;
        }
        let mut s = self
            .previous
            .clone()
            .unwrap_or_else(|| Snapshot::empty(&self.out_dir, JobState::Running));
        s.state = JobState::Running;
        s.workers.clear();
        s.shards_running = 0;
        s.images_per_sec = 0.0;
        s.eta_seconds = None;
        s.note = None;
        s.coordinator_pid = Some(std::process::id());
        s.updated_unix = snapshot::unix_now();
        s.fetching = Some(Fetching {
            file: f.label.clone(),
            bytes_done: f.pos,
            bytes_total: f.total,
        });
        if let Err(e) = snapshot::write(&self.out_dir, &s) {
            tracing::warn!("cannot write status.json: {e}");
        }
        self.written = Some(Instant::now());
    }

    /// Puts the snapshot from before the download back (or removes the one it wrote).
    fn restore(self) {
        if self.written.is_none() {
            return;
        }
        let res = match &self.previous {
            Some(prev) => snapshot::write(&self.out_dir, prev),
            None => std::fs::remove_file(crate::outdir::OutDir::new(&self.out_dir).snapshot()),
        };
        if let Err(e) = res {
            tracing::warn!("cannot restore status.json: {e}");
        }
    }
}

struct Current {
    label: String,
    total: Option<u64>,
    /// Bytes on disk when this process started on the file.
    from: u64,
    pos: u64,
    started: Instant,
    logged: Instant,
}

impl Current {
    fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        (self.pos.saturating_sub(self.from)) as f64 / secs
    }
}

pub(crate) struct Reporter {
    terminal: bool,
    bar: Option<ProgressBar>,
    status: Option<StatusFile>,
    current: Option<Current>,
}

impl Reporter {
    pub fn new(status: Option<StatusFile>) -> Reporter {
        Reporter {
            terminal: std::io::stderr().is_terminal(),
            bar: None,
            status,
            current: None,
        }
    }

    /// A file starts (or resumes at `have` bytes).
    pub fn begin(&mut self, label: &str, total: Option<u64>, have: u64) {
        let now = Instant::now();
        let c = Current {
            label: label.to_string(),
            total,
            from: have,
            pos: have,
            started: now,
            logged: now,
        };
        if self.terminal {
            let b = ProgressBar::new(total.unwrap_or(0));
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_message(label.to_string());
            b.set_position(have);
            self.bar = Some(b);
        } else {
            tracing::info!(
                file = label,
                bytes = total,
                resume_from = have,
                "downloading"
            );
        }
        if let Some(s) = &mut self.status {
            s.show(&c, true);
        }
        self.current = Some(c);
    }

    /// The size became known (a URL's first answer).
    pub fn total(&mut self, total: u64) {
        if let Some(c) = &mut self.current {
            c.total = Some(total);
        }
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    /// `pos` bytes of the file are on disk.
    pub fn at(&mut self, pos: u64) {
        let Some(c) = &mut self.current else { return };
        c.pos = pos;
        if let Some(b) = &self.bar {
            b.set_position(pos);
        } else if c.logged.elapsed() >= LOG_EVERY {
            c.logged = Instant::now();
            let of = c
                .total
                .map(|t| format!(" of {}", human(t)))
                .unwrap_or_default();
            let pct = c
                .total
                .filter(|&t| t > 0)
                .map(|t| format!(" ({:.1}%)", 100.0 * pos as f64 / t as f64))
                .unwrap_or_default();
            tracing::info!(
                file = %c.label,
                bytes = pos,
                "downloading: {}{of}{pct} at {}/s",
                human(pos),
                human(c.rate() as u64)
            );
        }
        if let Some(s) = &mut self.status {
            s.show(c, false);
        }
    }

    /// The file is complete and verified (`ok`), or this process gave up on it.
    pub fn end(&mut self, ok: bool) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let Some(c) = self.current.take() else { return };
        if ok {
            tracing::info!(
                file = %c.label,
                bytes = c.pos,
                "downloaded {} in {:.1} s ({}/s), verified",
                human(c.pos),
                c.started.elapsed().as_secs_f64(),
                human(c.rate() as u64)
            );
        }
    }

    /// Done with downloading: the status snapshot is put back.
    pub fn finish(mut self) {
        self.end(false);
        if let Some(s) = self.status.take() {
            s.restore();
        }
    }
}
