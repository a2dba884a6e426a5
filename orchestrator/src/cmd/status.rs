//! `fidshard status TARGET [--json]`: where a job stands, whether its coordinator is running,
//! crashed, or long gone.
//!
//! A live coordinator (it holds `OUT/coordinator.lock`) is the authority: its `status.json`,
//! rewritten every second, is reported. Without one, the durable records in `state.sled` are
//! (a `status.json` left behind may be stale or written by a coordinator that crashed), and the
//! state is derived from them: complete, failed, interrupted or not started. The sled DB is read
//! while holding the job lock, so no coordinator can start in the middle of the read.
use crate::job::config::Job;
use crate::job::plan::plan;
use crate::outdir::lock::{JobLock, Probe};
use crate::outdir::snapshot::{self, format_utc, unix_now, JobState, Snapshot, MAX_ERRORS};
use crate::outdir::state::StateDb;
use crate::outdir::LOCK_FILE;
use crate::sys::time::format_duration;
use anyhow::{anyhow, Result};
use fidshard_core::Fatal;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    /// The job's YAML file, or its out dir; several give one table row each.
    #[arg(required = true)]
    targets: Vec<PathBuf>,
    /// Refresh every SECS seconds (default 2) until the job ends or Ctrl-C.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<f64>,
    /// Print one JSON object (the fields of OUT/status.json) instead of the summary.
    #[arg(long)]
    json: bool,
    /// For a complete job, read everything: every PNG against its recorded CRC-32 and against
    /// its image in samples.npz, every npz byte against the zip's CRC-32, the labels against
    /// the records. A damaged npz or PNG exits 1; nothing is written.
    #[arg(long)]
    verify: bool,
}

pub(crate) fn run(args: StatusArgs) -> Result<()> {
    if let Some(secs) = args.watch {
        if !secs.is_finite() || !(0.1..=3600.0).contains(&secs) {
            return Err(fidshard_core::input_error!(
                "--watch {secs}: expected 0.1 to 3600 seconds"
            ));
        }
        return watch(&args, secs);
    }
    let (text, err, _) = report(&args)?;
    crate::sys::out::print(&text);
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `--watch`: the report every `secs` seconds until every target is complete or failed. A bad
/// target fails at once (exit 2); a later error (a file replaced mid-write) is shown and the
/// watch goes on. Only a terminal gets the escapes that redraw the screen in place; a pipe, a
/// log file or `--json` gets one report after another.
fn watch(args: &StatusArgs, secs: f64) -> Result<()> {
    use std::io::IsTerminal as _;
    let redraw = std::io::stdout().is_terminal() && !args.json;
    let mut first = true;
    loop {
        let text = match report(args) {
            Ok((text, err, true)) => {
                crate::sys::out::print(&frame(&text, redraw, args.json));
                return err.map_or(Ok(()), Err);
            }
            Ok((text, _, false)) => text,
            Err(e) if first => return Err(e),
            Err(e) => format!(
                "{}\n",
                fidshard_core::error_line::error_line(&crate::sys::text::escape_control(&format!(
                    "{e:#}"
                )))
            ),
        };
        first = false;
        crate::sys::out::print(&frame(&text, redraw, args.json));
        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    }
}

/// One refresh of `--watch`: the screen cleared first on a terminal; else a blank line after
/// (none after a JSON line: one object per line).
fn frame(text: &str, redraw: bool, json: bool) -> String {
    if redraw {
        format!("\x1b[2J\x1b[H{text}")
    } else if json {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

/// The status text (or JSON) of every target, the error to exit with, and whether every
/// target has ended (complete or failed: `--watch` stops).
fn report(args: &StatusArgs) -> Result<(String, Option<anyhow::Error>, bool)> {
    let ended = |s: &Snapshot| matches!(s.state, JobState::Complete | JobState::Failed);
    if args.targets.len() > 1 {
        let mut rows = Vec::new();
        let mut damaged = Vec::new();
        for t in &args.targets {
            let (snap, err) = one(t, args.verify)?;
            if let Some(e) = err {
                damaged.push(format!("{}: {e:#}", t.display()));
            }
            rows.push((
                crate::sys::text::escape_control(&t.display().to_string()).into_owned(),
                snap,
            ));
        }
        let all_ended = rows.iter().all(|(_, s)| ended(s));
        let text = if args.json {
            let list: Vec<&Snapshot> = rows.iter().map(|(_, s)| s).collect();
            format!("{}\n", serde_json::to_string(&list)?)
        } else {
            crate::cmd::status_details::table(&rows)
        };
        let err = (!damaged.is_empty()).then(|| anyhow!("status --verify: {}", damaged.join("; ")));
        return Ok((text, err, all_ended));
    }
    let (snap, damaged) = one(&args.targets[0], args.verify)?;
    let text = if args.json {
        format!("{}\n", serde_json::to_string(&snap)?)
    } else {
        render(&snap)
    };
    let all_ended = ended(&snap);
    Ok((
        text,
        damaged.map(|e| e.context("status --verify")),
        all_ended,
    ))
}

/// The status of one target, with `--verify`'s error when its npz is damaged.
fn one(target: &Path, verify: bool) -> Result<(Snapshot, Option<anyhow::Error>)> {
    let (out_dir, totals) = resolve_target(target)?;
    let job = if target.is_file() {
        Job::load_without_weights(target).ok()
    } else {
        None
    };
    let mut snap = match crate::cmd::status_partitions::compute_partitioned(&out_dir, totals)? {
        Some(s) => s,
        None => compute(&out_dir, totals)?,
    };
    crate::cmd::status_details::add(&mut snap, &out_dir, job.as_ref(), target);
    let npz = crate::outdir::OutDir::new(&out_dir).npz();
    let damaged = if verify && snap.state == JobState::Complete {
        let res = verify_complete(&out_dir, snap.samples_total);
        snap.note = Some(match &res {
            Ok(secs) => format!("samples.npz and every PNG verified in {secs:.1} s"),
            Err(e) => format!(
                "damaged: {e:#}; `fidshard run` samples the bad PNGs again and assembles the npz again"
            ),
        });
        res.err()
    } else if verify && snap.state != JobState::Running && npz.is_file() {
        // An npz that the cheap check already refuses (cut short, another job's shape).
        Some(anyhow!(
            "{}: not this job's complete result (the job is {}): {}",
            npz.display(),
            snap.state.as_str(),
            snap.note
                .as_deref()
                .unwrap_or("its shards are not all recorded")
        ))
    } else {
        None
    };
    Ok((snap, damaged))
}

/// Reads a complete job in full: every PNG against the CRC-32 recorded for it, and every image
/// and label of the npz against the PNGs and the records (`npz::check_against_pngs`); returns
/// the seconds taken. Damage is an error (exit 1) naming the file and what is wrong. Opens no
/// file for writing.
fn verify_complete(out_dir: &Path, n: u64) -> Result<f64> {
    let started = std::time::Instant::now();
    let out = crate::outdir::OutDir::new(out_dir);
    let mut records = if crate::outdir::partitions::list(out_dir).is_empty() {
        whole_job_records(out_dir)?
    } else {
        partition_records(out_dir)?
    };
    records.sort_by_key(|r| r.shard.start);
    let crc: Vec<u32> = records
        .iter()
        .flat_map(|r| r.crc32.iter().copied())
        .collect();
    let labels: Vec<i64> = records
        .iter()
        .flat_map(|r| r.labels.iter().copied())
        .collect();
    if labels.len() as u64 != n || crc.len() as u64 != n {
        return Err(anyhow!(
            "{}: the records hold {} samples, the job {n}; `fidshard run` records the rest",
            out_dir.display(),
            labels.len()
        ));
    }
    let side = crate::npz::npz_image_side(&out.npz())?;
    let found = crate::npz::check_against_pngs(&out.npz(), &out.samples(), side, &labels, &crc);
    let mut damage = Vec::new();
    if let Some((_, first)) = found.bad_pngs.first() {
        damage.push(format!(
            "{} PNGs missing or not the recorded ones (first: {first})",
            found.bad_pngs.len()
        ));
    }
    if let Some(why) = &found.npz {
        damage.push(format!("{}: {why}", out.npz().display()));
    }
    if !damage.is_empty() {
        return Err(anyhow!(damage.join("; ")));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The records of a job run on one node (its `state.sled`, read under the job lock).
fn whole_job_records(out_dir: &Path) -> Result<Vec<crate::outdir::state::ShardRecord>> {
    match JobLock::probe(out_dir)? {
        Probe::Free(_guard) => {
            let db = StateDb::open(out_dir)?;
            Ok(db.done_records()?)
        }
        Probe::Held(h) => Err(fidshard_core::input_error!(
            "{}: a coordinator (pid {}) is running; verify after it finishes",
            out_dir.display(),
            h.pid
        )),
    }
}

/// The records that the partitions of one layout exported, when all N of them did.
fn partition_records(out_dir: &Path) -> Result<Vec<crate::outdir::state::ShardRecord>> {
    let parts = crate::outdir::partitions::list(out_dir);
    let mut layouts: Vec<u32> = parts.iter().map(|(p, _)| p.n).collect();
    layouts.dedup();
    for n in layouts {
        let dirs: Vec<&PathBuf> = parts
            .iter()
            .filter(|(p, _)| p.n == n)
            .map(|(_, d)| d)
            .collect();
        if dirs.len() != n as usize {
            continue;
        }
        let mut all = Vec::new();
        let mut every = true;
        for dir in dirs {
            match crate::outdir::partitions::exported(dir)? {
                Some(records) => all.extend(records),
                None => every = false,
            }
        }
        if every {
            return Ok(all);
        }
    }
    Err(anyhow!(
        "{}: no layout of partitions has exported the records of all its partitions",
        out_dir.display()
    ))
}

/// `(num_samples, shard_size)` from the job file, when the target is one: the totals to show
/// before any record exists.
pub(crate) type Totals = Option<(u64, u64)>;

/// The out dir a target names. A bad target is an input error (exit code 2).
fn resolve_target(target: &Path) -> Result<(PathBuf, Totals)> {
    if target.is_file() {
        let job = match Job::load_without_weights(target) {
            Ok(job) => job,
            // Weights not downloaded yet (a `run` may be fetching them): the out dir alone.
            Err(e) => match crate::fetch::out_dir_if_missing(target) {
                Some(out) => return Ok((out, None)),
                None => return Err(e),
            },
        };
        return Ok((
            job.out_dir,
            Some((job.settings.num_samples, job.run.shard_size)),
        ));
    }
    if target.is_dir() {
        if crate::outdir::OutDir::new(target).lock_file().exists()
            || StateDb::exists(target)
            || crate::outdir::OutDir::new(target).partitions().is_dir()
        {
            return Ok((target.to_path_buf(), None));
        }
        return Err(Fatal::input(anyhow!(
            "{}: not a fidshard out dir (no {LOCK_FILE} or state.sled); pass the job's YAML \
             file or its out_dir",
            target.display()
        ))
        .into());
    }
    Err(Fatal::input(anyhow!("{}: no such job file or out dir", target.display())).into())
}

/// The job's status: the live coordinator's snapshot, or one derived from the records.
pub(crate) fn compute(out_dir: &Path, totals: Totals) -> Result<Snapshot> {
    match JobLock::probe(out_dir)? {
        Probe::Held(holder) => Ok(from_live(out_dir, &holder, totals)),
        Probe::Free(guard) => {
            let snap = from_records(out_dir, totals);
            drop(guard);
            snap
        }
    }
}

fn from_live(out_dir: &Path, holder: &crate::outdir::lock::Holder, totals: Totals) -> Snapshot {
    match snapshot::read(out_dir) {
        Some(mut s) if s.coordinator_pid == Some(holder.pid) => {
            if s.state == JobState::NotStarted {
                s.state = JobState::Running;
            }
            s
        }
        // The coordinator is starting (hashing the checkpoint, loading models) and has not
        // written a snapshot yet; any status.json is a previous run's.
        previous => {
            let mut s = previous.unwrap_or_else(|| {
                let mut s = Snapshot::empty(out_dir, JobState::Running);
                set_totals(&mut s, totals);
                s
            });
            s.state = JobState::Running;
            s.workers.clear();
            s.shards_running = 0;
            s.images_per_sec = 0.0;
            s.eta_seconds = None;
            s.coordinator_pid = Some(holder.pid);
            s.out_dir = out_dir.to_path_buf();
            s.note = Some(format!(
                "coordinator pid {} (started {}) has not reported yet; counts are from before it \
                 started",
                holder.pid,
                format_utc(holder.started_unix)
            ));
            s
        }
    }
}

fn set_totals(s: &mut Snapshot, totals: Totals) {
    if let Some((n, shard_size)) = totals {
        s.samples_total = n;
        s.shards_total = plan(n, shard_size).len() as u64;
        s.shards_pending = s.shards_total;
    }
}

/// The status when no coordinator runs: from `state.sled` (falling back on the last
/// `status.json` if the DB cannot be opened, e.g. another user's read-only out dir).
fn from_records(out_dir: &Path, totals: Totals) -> Result<Snapshot> {
    let previous = snapshot::read(out_dir);
    let mut s = Snapshot::empty(out_dir, JobState::NotStarted);
    set_totals(&mut s, totals);
    if !StateDb::exists(out_dir) {
        return Ok(s);
    }
    let db = match StateDb::open(out_dir) {
        Ok(db) => db,
        Err(e) => {
            let Some(mut prev) = previous else {
                return Err(e.into());
            };
            if prev.state == JobState::Running {
                prev.state = JobState::Interrupted;
            }
            prev.workers.clear();
            prev.coordinator_pid = None;
            prev.note = Some(format!("from the last status.json: {e}"));
            return Ok(prev);
        }
    };
    let Some(meta) = db.meta()? else {
        return Ok(s);
    };
    let done = db.done_records()?;
    let failed = db.failed_records()?;
    // The coordinator may have reported retries it had not yet counted durably.
    let retries = db.retries()?;
    s.retries = retries.max(previous.as_ref().map_or(0, |p| p.retries));
    s.wall_seconds = previous.as_ref().and_then(|p| p.wall_seconds);
    drop(db);

    s.samples_total = meta.num_samples;
    s.set_records(meta.plan().len() as u64, &done, &failed);

    let mut errors: Vec<_> = failed.iter().collect();
    errors.sort_by_key(|r| r.failed_unix);
    s.last_errors = match &previous {
        Some(p) if !p.last_errors.is_empty() => p.last_errors.clone(),
        _ => errors
            .iter()
            .map(|r| format!("shard {}: {}", r.shard, r.error))
            .collect(),
    };
    let extra = s.last_errors.len().saturating_sub(MAX_ERRORS);
    s.last_errors.drain(..extra);

    // The last snapshot says running, but no coordinator holds the lock: it died.
    let crashed = previous.as_ref().map(|p| p.state) == Some(JobState::Running);
    // A run that was interrupted before finishing a shard is still a run that started.
    let was_running = matches!(
        previous.as_ref().map(|p| p.state),
        Some(JobState::Running | JobState::Interrupted)
    );
    let all_done = s.shards_done == s.shards_total;
    let npz = crate::outdir::OutDir::new(out_dir).npz();
    // The cheap check (zip directory, npy headers, sizes; milliseconds): an npz cut short or of
    // another job is not "complete". `--verify` reads every byte.
    let npz_ok = npz.is_file()
        && crate::outdir::provenance::check(out_dir, &done).is_ok()
        && crate::npz::npz_image_side(&npz)
            .and_then(|side| crate::npz::verify_npz(&npz, meta.num_samples, side))
            .is_ok();
    s.state = if all_done && npz_ok {
        JobState::Complete
    } else if s.shards_failed > 0 && s.shards_done + s.shards_failed == s.shards_total {
        JobState::Failed
    } else if s.shards_done > 0 || s.shards_failed > 0 || was_running {
        JobState::Interrupted
    } else {
        JobState::NotStarted
    };
    s.note = match s.state {
        JobState::Interrupted if crashed => Some(format!(
            "the coordinator{} stopped without finishing (crashed or killed); run the job again \
             to resume",
            previous
                .and_then(|p| p.coordinator_pid)
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default()
        )),
        JobState::Interrupted if all_done => Some(
            "every shard is done but samples.npz is missing or damaged; run the job again".into(),
        ),
        JobState::Interrupted => Some("run the job again to resume".into()),
        _ => None,
    };
    Ok(s)
}

/// The human-readable summary. Every text that comes from status.json or the out dir (host
/// names, devices, paths, messages) is printed with its control characters escaped.
pub(crate) fn render(s: &Snapshot) -> String {
    use crate::sys::text::escape_control as esc;
    let mut o = String::new();
    let pct = if s.samples_total > 0 {
        100.0 * s.samples_done as f64 / s.samples_total as f64
    } else {
        0.0
    };
    let pid = s
        .coordinator_pid
        .map(|p| format!(" (coordinator pid {p})"))
        .unwrap_or_default();
    let _ = writeln!(o, "job      {}", esc(&s.out_dir.display().to_string()));
    let _ = writeln!(o, "state    {}{pid}", s.state.as_str());
    let _ = writeln!(
        o,
        "samples  {}/{} ({pct:.1}%)",
        s.samples_done, s.samples_total
    );
    let _ = writeln!(
        o,
        "shards   {} done, {} running, {} pending, {} failed (of {})",
        s.shards_done, s.shards_running, s.shards_pending, s.shards_failed, s.shards_total
    );
    for p in &s.partitions {
        let rate = if p.state == "running" {
            format!(", {:.2} images/s", p.images_per_sec)
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "part {:<7} {:<12} {}/{} samples{rate}, host {}, devices {}, updated {}",
            esc(&p.partition),
            esc(&p.state),
            p.samples_done,
            p.samples_total,
            esc(p.host.as_deref().unwrap_or("?")),
            if p.devices.is_empty() {
                "-".to_string()
            } else {
                esc(&p.devices.join(",")).into_owned()
            },
            crate::outdir::snapshot::format_utc(p.updated_unix as u64)
        );
    }
    for w in &s.workers {
        let mut line = format!(
            "worker {:<2} {:<8} {:<11}",
            w.id,
            esc(&w.device),
            w.state.as_str()
        );
        if let Some(pid) = w.pid {
            let _ = write!(line, " pid {pid:<8}");
        }
        if let Some(shard) = &w.shard {
            let _ = write!(line, " shard {}", esc(&shard.to_string()));
        }
        if let Some((done, total)) = w.progress {
            let _ = write!(line, " {done}/{total}");
        }
        let _ = writeln!(o, "{}", line.trim_end());
    }
    if let Some(f) = &s.fetching {
        let _ = writeln!(o, "fetching {}", esc(&f.describe()));
    }
    if s.state == JobState::Running {
        let eta = s
            .eta_seconds
            .map(|e| format!(", ETA {}", format_duration(e)))
            .unwrap_or_default();
        let _ = writeln!(o, "rate     {:.2} images/s{eta}", s.images_per_sec);
    }
    if let Some(npz) = &s.npz {
        let _ = writeln!(
            o,
            "npz      {} ({})",
            esc(&npz.path.display().to_string()),
            crate::job::disk::human(npz.bytes)
        );
    }
    if let Some(wall) = s.wall_seconds {
        let _ = writeln!(
            o,
            "took     {} for the last run, {:.2} images/s",
            format_duration(wall),
            s.images_per_sec
        );
    }
    if let Some(t) = s.changed_unix {
        let _ = writeln!(
            o,
            "changed  {} (samples.npz written; later runs changed nothing)",
            format_utc(t as u64)
        );
    }
    for d in &s.devices {
        let _ = writeln!(
            o,
            "device   {:<12} {} samples, {:.2} images/s",
            esc(&d.device),
            d.samples,
            d.images_per_sec
        );
    }
    let _ = writeln!(o, "retries  {}", s.retries);
    if let Some(next) = &s.next {
        let _ = writeln!(o, "next     {}", esc(next));
    }
    for c in &s.config_changed {
        let _ = writeln!(
            o,
            "warning  the YAML no longer matches this out dir: {}",
            esc(c)
        );
    }
    if !s.missing_ranges.is_empty() {
        let ranges: Vec<String> = s
            .missing_ranges
            .iter()
            .map(|(a, b)| format!("[{a}..{b})"))
            .collect();
        let _ = writeln!(o, "missing  {}", ranges.join(", "));
    }
    for (i, e) in s.last_errors.iter().enumerate() {
        let label = if i == 0 { "errors" } else { "" };
        let _ = writeln!(o, "{label:<8} {}", esc(e));
    }
    if let Some(note) = &s.note {
        let _ = writeln!(o, "note     {}", esc(note));
    }
    let age = (unix_now() - s.updated_unix).max(0.0);
    let _ = writeln!(
        o,
        "updated  {} ({} ago)",
        format_utc(s.updated_unix as u64),
        format_duration(age)
    );
    o
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
