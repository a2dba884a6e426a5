//! Tests of the status derivation.
use super::*;
use crate::outdir::snapshot::{WorkerSnapshot, WorkerState};
use crate::outdir::state::tests::{done, failed, fp, PLAN};

/// An out dir whose DB holds `done` / `failed` shards of the 25-sample, 3-shard plan.
pub(crate) fn out_dir_with(done_ids: &[u64], failed_ids: &[u64]) -> tempfile::TempDir {
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

/// Facts of the 3-shard plan: `done` and `failed` shards, the last snapshot, the npz.
fn facts(done: u64, failed: u64, previous: Option<(JobState, Option<u32>)>, npz_ok: bool) -> Facts {
    Facts {
        shards_total: 3,
        shards_done: done,
        shards_failed: failed,
        previous,
        npz_ok,
    }
}

#[test]
fn each_state_is_decided_from_typed_facts() {
    use PartitionState::*;
    assert_eq!(decide(&facts(0, 0, None, false)), NotStarted);
    assert_eq!(
        decide(&facts(0, 0, Some((JobState::NotStarted, None)), false)),
        NotStarted
    );
    assert_eq!(decide(&facts(1, 0, None, false)), Interrupted);
    // Interrupted before finishing a shard is still a run that started.
    assert_eq!(
        decide(&facts(0, 0, Some((JobState::Interrupted, Some(7))), false)),
        Interrupted
    );
    // The last snapshot says running, the lock is free: the coordinator died.
    assert_eq!(
        decide(&facts(1, 0, Some((JobState::Running, Some(7))), false)),
        Crashed { pid: Some(7) }
    );
    assert_eq!(
        decide(&facts(0, 0, Some((JobState::Running, None)), false)),
        Crashed { pid: None }
    );
    assert_eq!(decide(&facts(3, 0, None, false)), Unassembled);
    assert_eq!(decide(&facts(2, 1, None, false)), Failed { shards: 1 });
    assert_eq!(decide(&facts(1, 1, None, false)), Interrupted);
    assert_eq!(decide(&facts(3, 0, None, true)), Complete);
    // A crash after the npz was written changes nothing: complete is complete.
    assert_eq!(
        decide(&facts(3, 0, Some((JobState::Running, Some(7))), true)),
        Complete
    );
}

#[test]
fn each_state_has_its_name_job_state_and_note() {
    use PartitionState::*;
    let cases = [
        (NotStarted, "not_started", JobState::NotStarted),
        (Running { pid: Some(1) }, "running", JobState::Running),
        (Crashed { pid: Some(1) }, "crashed", JobState::Interrupted),
        (Interrupted, "interrupted", JobState::Interrupted),
        (Unassembled, "interrupted", JobState::Interrupted),
        (Failed { shards: 2 }, "failed", JobState::Failed),
        (Complete, "complete", JobState::Complete),
    ];
    for (state, name, job) in cases {
        assert_eq!(
            (state.as_str(), state.job_state()),
            (name, job),
            "{state:?}"
        );
    }
    let crashed = Crashed { pid: Some(42) }.note().unwrap();
    assert!(
        crashed.contains("(pid 42) stopped without finishing"),
        "{crashed}"
    );
    assert!(!Crashed { pid: None }.note().unwrap().contains("pid"));
    assert!(Unassembled.note().unwrap().contains("samples.npz"));
    assert_eq!(Complete.note(), None);
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
    let s = derive(dir.path(), None).unwrap();
    assert_eq!(s.state, PartitionState::NotStarted);
    assert_eq!(s.snapshot.state, JobState::NotStarted);
    assert_eq!(
        (
            s.snapshot.samples_done,
            s.snapshot.samples_total,
            s.snapshot.shards_total
        ),
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
    let s = derive(dir.path(), None).unwrap();
    assert_eq!(
        s.state,
        PartitionState::Crashed {
            pid: Some(4_194_303)
        }
    );
    assert_eq!(s.snapshot.state, JobState::Interrupted);
    assert!(s
        .snapshot
        .note
        .unwrap()
        .contains("pid 4194303) stopped without finishing"));

    // All shards done, npz not yet assembled.
    let dir = out_dir_with(&[0, 1, 2], &[]);
    let s = derive(dir.path(), None).unwrap();
    assert_eq!(s.state, PartitionState::Unassembled);
    assert_eq!(s.snapshot.state, JobState::Interrupted);
    assert_eq!(s.snapshot.samples_done, 25);
    assert!(s.snapshot.note.unwrap().contains("samples.npz"));
}

#[test]
fn failed_when_the_rest_is_done_and_complete_with_the_npz() {
    let dir = out_dir_with(&[0, 2], &[1]);
    let d = derive(dir.path(), None).unwrap();
    assert_eq!(d.state, PartitionState::Failed { shards: 1 });
    let s = d.snapshot;
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

    // Partly failed, partly pending: still resumable.
    let dir = out_dir_with(&[0], &[1]);
    assert_eq!(
        derive(dir.path(), None).unwrap().state,
        PartitionState::Interrupted
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
    let s = derive(dir.path(), Some((25, 10))).unwrap();
    assert_eq!(s.state, PartitionState::Complete);
    assert_eq!((s.snapshot.samples_done, s.snapshot.shards_done), (25, 3));
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
    let me = Some(std::process::id());
    let s = derive(dir.path(), None).unwrap();
    assert_eq!(s.state, PartitionState::Running { pid: me });
    let s = s.snapshot;
    assert_eq!(s.state, JobState::Running);
    assert_eq!(s.coordinator_pid, me);
    assert_eq!(s.samples_done, 10);
    assert!(s.note.unwrap().contains("has not reported yet"));

    let mut live = Snapshot::empty(dir.path(), JobState::Running);
    live.coordinator_pid = me;
    live.samples_total = 25;
    live.samples_done = 12;
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
    assert_eq!(compute(dir.path(), None).unwrap(), live);
    // Its final snapshot, written before it lets go of the lock, is reported as it is.
    live.state = JobState::Complete;
    snapshot::write(dir.path(), &live).unwrap();
    let s = derive(dir.path(), None).unwrap();
    assert_eq!((s.state, s.snapshot), (PartitionState::Complete, live));
    drop(lock);
}
