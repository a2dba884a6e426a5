//! Tests of `status`.
use super::*;
use crate::exit_code::code_of;
use crate::outdir::snapshot::{WorkerSnapshot, WorkerState};
use crate::outdir::state::tests::{done, failed, fp, PLAN};
use fidshard_core::Exit;

/// An out dir whose DB holds `done` / `failed` shards of the 25-sample, 3-shard plan.
fn out_dir_with(done_ids: &[u64], failed_ids: &[u64]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shards = plan(PLAN.num_samples, PLAN.shard_size);
    // As a coordinator would leave it: lock file written, then released.
    drop(JobLock::acquire(dir.path()).unwrap());
    let db = StateDb::open(dir.path()).unwrap();
    db.check_or_init(&fp("0"), PLAN, false).unwrap();
    for &id in done_ids {
        db.record_done(&done(shards[id as usize])).unwrap();
    }
    for &id in failed_ids {
        db.record_failed(&failed(shards[id as usize])).unwrap();
    }
    db.add_retries(failed_ids.len() as u64 * 2).unwrap();
    dir
}

#[test]
fn not_started_without_a_db_or_without_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = compute(&dir.path().join("never-ran"), Some((25, 10))).unwrap();
    assert_eq!(s.state, JobState::NotStarted);
    assert_eq!(
        (s.samples_total, s.shards_total, s.shards_pending),
        (25, 3, 3)
    );
    assert!(
        !dir.path().join("never-ran").exists(),
        "status creates nothing"
    );

    let dir = out_dir_with(&[], &[]);
    let s = compute(dir.path(), None).unwrap();
    assert_eq!(s.state, JobState::NotStarted);
    assert_eq!(
        (s.samples_done, s.samples_total, s.shards_total),
        (0, 25, 3)
    );
}

#[test]
fn interrupted_with_partial_progress_or_after_a_crash() {
    let dir = out_dir_with(&[0], &[]);
    let s = compute(dir.path(), None).unwrap();
    assert_eq!(s.state, JobState::Interrupted);
    assert_eq!(
        (s.samples_done, s.shards_done, s.shards_pending),
        (10, 1, 2)
    );
    assert_eq!(s.coordinator_pid, None);

    // A snapshot says running but nobody holds the lock: the coordinator died.
    let dir = out_dir_with(&[], &[]);
    let mut snap = Snapshot::empty(dir.path(), JobState::Running);
    snap.coordinator_pid = Some(4_194_303);
    snapshot::write(dir.path(), &snap).unwrap();
    let s = compute(dir.path(), None).unwrap();
    assert_eq!(s.state, JobState::Interrupted);
    assert!(s
        .note
        .unwrap()
        .contains("pid 4194303) stopped without finishing"));

    // All shards done, npz not yet assembled.
    let dir = out_dir_with(&[0, 1, 2], &[]);
    let s = compute(dir.path(), None).unwrap();
    assert_eq!(s.state, JobState::Interrupted);
    assert_eq!(s.samples_done, 25);
    assert!(s.note.unwrap().contains("samples.npz"));
}

#[test]
fn failed_when_the_rest_is_done_and_complete_with_the_npz() {
    let dir = out_dir_with(&[0, 2], &[1]);
    let s = compute(dir.path(), None).unwrap();
    assert_eq!(s.state, JobState::Failed);
    assert_eq!(
        (s.shards_done, s.shards_failed, s.shards_pending),
        (2, 1, 0)
    );
    assert_eq!(s.samples_done, 15);
    assert_eq!(s.missing_ranges, vec![(10, 20)]);
    assert_eq!(s.retries, 2);
    assert_eq!(s.last_errors.len(), 1);
    assert!(s.last_errors[0].contains("worker died"));
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["state"], "failed");
    assert_eq!(v["samples_total"], 25);
    let text = render(&s);
    assert!(text.contains("state    failed\n"), "{text}");
    assert!(text.contains("samples  15/25 (60.0%)"), "{text}");
    assert!(text.contains("missing  [10..20)"), "{text}");

    // Partly failed, partly pending: still resumable.
    let dir = out_dir_with(&[0], &[1]);
    assert_eq!(
        compute(dir.path(), None).unwrap().state,
        JobState::Interrupted
    );

    let dir = out_dir_with(&[0, 1, 2], &[]);
    // Something that is not the job's npz is no proof of completion.
    std::fs::write(crate::outdir::OutDir::new(dir.path()).npz(), b"npz").unwrap();
    let s = compute(dir.path(), Some((25, 10))).unwrap();
    assert_eq!(s.state, JobState::Interrupted);
    assert!(s.note.unwrap().contains("damaged"));
    // A real one of 25 images is.
    let npz = crate::outdir::OutDir::new(dir.path()).npz();
    let mut w = crate::npz::NpzWriter::create(&npz, 25, 2, 2).unwrap();
    for _ in 0..25 {
        w.push_image(&[7u8; 12]).unwrap();
    }
    w.finish(&[0; 25]).unwrap();
    // ... once it is recorded as assembled from this job's records (outdir/provenance.rs).
    assert_eq!(
        compute(dir.path(), Some((25, 10))).unwrap().state,
        JobState::Interrupted
    );
    let records = StateDb::open(dir.path()).unwrap().done_records().unwrap();
    crate::outdir::provenance::record(dir.path(), &records).unwrap();
    let s = compute(dir.path(), Some((25, 10))).unwrap();
    assert_eq!(s.state, JobState::Complete);
    assert_eq!((s.samples_done, s.shards_done), (25, 3));
    // The lock is free again after status.
    drop(JobLock::acquire(dir.path()).unwrap());
}

#[test]
fn a_live_coordinator_reports_its_snapshot() {
    let dir = out_dir_with(&[0], &[]);
    let lock = JobLock::acquire(dir.path()).unwrap();
    // Its snapshot is not written yet; the previous one is stale.
    let mut old = Snapshot::empty(dir.path(), JobState::Interrupted);
    old.samples_done = 10;
    old.coordinator_pid = Some(1);
    snapshot::write(dir.path(), &old).unwrap();
    let s = compute(dir.path(), None).unwrap();
    assert_eq!(s.state, JobState::Running);
    assert_eq!(s.coordinator_pid, Some(std::process::id()));
    assert_eq!(s.samples_done, 10);
    assert!(s.note.unwrap().contains("has not reported yet"));

    let mut live = Snapshot::empty(dir.path(), JobState::Running);
    live.coordinator_pid = Some(std::process::id());
    live.samples_total = 25;
    live.samples_done = 12;
    live.images_per_sec = 3.5;
    live.eta_seconds = Some(3725.0);
    live.updated_unix = 1_700_000_000.5; // exact in JSON, see snapshot's tests
    live.workers.push(WorkerSnapshot {
        id: 0,
        device: "cuda:0".into(),
        pid: Some(77),
        state: WorkerState::Busy,
        shard: Some(plan(25, 10)[1]),
        progress: Some((2, 10)),
        batch: Some(4),
    });
    snapshot::write(dir.path(), &live).unwrap();
    let s = compute(dir.path(), None).unwrap();
    assert_eq!(s, live);
    let text = render(&s);
    assert!(text.contains("cuda:0"), "{text}");
    assert!(text.contains("shard #1 [10..20) 2/10"), "{text}");
    assert!(text.contains("3.50 images/s, ETA 1h 02m"), "{text}");
    drop(lock);
}

#[test]
fn bad_targets_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    for target in [dir.path().to_path_buf(), dir.path().join("nope.yaml")] {
        let err = resolve_target(&target).unwrap_err();
        assert_eq!(code_of(&err), Exit::InvalidInput, "{err:#}");
    }
    std::fs::write(dir.path().join("bad.yaml"), "num_samples: [").unwrap();
    let err = resolve_target(&dir.path().join("bad.yaml")).unwrap_err();
    assert_eq!(code_of(&err), Exit::InvalidInput);
    let out = dir.path().join("out");
    drop(JobLock::acquire(&out).unwrap());
    assert_eq!(resolve_target(&out).unwrap().0, out);
}

#[test]
fn formats_durations() {
    assert_eq!(format_duration(42.4), "42s");
    assert_eq!(format_duration(303.0), "5m 03s");
    assert_eq!(format_duration(3725.0), "1h 02m");
}
