//! `fidshard status TARGET [--json]`: where a job stands, whether its coordinator is running,
//! crashed, or long gone. The status is derived in outdir/status/; this verb resolves the
//! targets, prints the result (text, a table, or JSON) and repeats it under `--watch`.
use crate::job::config::Job;
use crate::outdir::snapshot::{format_utc, unix_now, JobState, PartitionRow, Snapshot};
use crate::outdir::state::StateDb;
use crate::outdir::status::{add_details, compute_job, verify_complete, Totals};
use crate::outdir::LOCK_FILE;
use crate::sys::text::escape_control as esc;
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
            table(&rows)
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
    let mut snap = compute_job(&out_dir, totals)?;
    add_details(&mut snap, &out_dir, job.as_ref());
    let npz = crate::outdir::OutDir::new(&out_dir).npz();
    if snap.state == JobState::Complete {
        snap.metrics = crate::evaluate::Report::read(&out_dir.join("metrics.json"))
            .filter(|r| r.is_of(&npz))
            .and_then(|r| serde_json::to_value(r).ok());
    }
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

/// The human-readable summary. Every text that comes from status.json or the out dir (host
/// names, devices, paths, messages) is printed with its control characters escaped.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut o = String::new();
    counts(&mut o, s);
    for p in &s.partitions {
        partition_line(&mut o, p);
    }
    for w in &s.workers {
        worker_line(&mut o, w);
    }
    progress(&mut o, s);
    result(&mut o, s);
    advice(&mut o, s);
    let age = (unix_now() - s.updated_unix).max(0.0);
    let _ = writeln!(
        o,
        "updated  {} ({} ago)",
        format_utc(s.updated_unix as u64),
        format_duration(age)
    );
    o
}

/// `job`, `state`, `samples` and `shards`.
fn counts(o: &mut String, s: &Snapshot) {
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
}

/// One partition of a job run on many nodes.
fn partition_line(o: &mut String, p: &PartitionRow) {
    let rate = if p.state == JobState::Running.as_str() {
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
        format_utc(p.updated_unix as u64)
    );
}

/// One worker of a running coordinator (or of its last snapshot).
fn worker_line(o: &mut String, w: &crate::outdir::snapshot::WorkerSnapshot) {
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

/// A download in progress, and the rate and ETA of a running job.
fn progress(o: &mut String, s: &Snapshot) {
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
}

/// What a complete job produced: the npz, the time it took, when it changed, each device's
/// rate.
fn result(o: &mut String, s: &Snapshot) {
    if let Some(npz) = &s.npz {
        let _ = writeln!(
            o,
            "npz      {} ({})",
            esc(&npz.path.display().to_string()),
            crate::sys::size::human(npz.bytes)
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
    let metrics = s
        .metrics
        .clone()
        .and_then(|v| serde_json::from_value::<crate::evaluate::Report>(v).ok());
    if let Some(m) = metrics {
        let _ = writeln!(o, "metrics  {} (metrics.json)", m.one_line());
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
    if let Some(line) = device_hours(&s.devices) {
        let _ = writeln!(o, "used     {line}");
    }
}

/// The device time the recorded shards took: GPU-hours (what a cluster account is charged) and
/// CPU worker-hours, each when there is any.
fn device_hours(devices: &[crate::outdir::snapshot::DeviceRate]) -> Option<String> {
    let hours = |gpu: bool| -> f64 {
        let on_gpu = |d: &&crate::outdir::snapshot::DeviceRate| d.device.contains("cuda");
        let secs: f64 = devices
            .iter()
            .filter(|d| on_gpu(d) == gpu)
            .map(|d| d.seconds)
            .sum();
        secs / 3600.0
    };
    let parts: Vec<String> = [
        (hours(true), "GPU-hours"),
        (hours(false), "CPU worker-hours"),
    ]
    .into_iter()
    .filter(|(h, _)| *h > 0.0)
    .map(|(h, what)| format!("{h:.2} {what}"))
    .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "{} (sampling time of the recorded shards)",
            parts.join(", ")
        )
    })
}

/// Retries, what to run next, YAML changes, missing ranges, errors and the note.
fn advice(o: &mut String, s: &Snapshot) {
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
}

/// One row per target: `fidshard status runs/*`.
fn table(rows: &[(String, Snapshot)]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<40} {:<12} {:>17} {:>12} {:>10}",
        "target", "state", "samples", "images/s", "retries"
    );
    for (target, s) in rows {
        let _ = writeln!(
            o,
            "{:<40} {:<12} {:>17} {:>12.2} {:>10}",
            target,
            s.state.as_str(),
            format!("{}/{}", s.samples_done, s.samples_total),
            s.images_per_sec,
            s.retries
        );
    }
    o
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
