//! Tests of `state`.
use super::*;
use crate::exit_code::code_of;
use fidshard_core::Exit;

pub(crate) const PLAN: PlanMeta = PlanMeta {
    num_samples: 25,
    shard_size: 10,
    image_size: 64,
};

pub(crate) fn fp(seed: &str) -> Fingerprint {
    let mut f = Fingerprint::default();
    f.insert("seed", seed);
    f.insert("steps", "250");
    f
}

pub(crate) fn done(shard: Shard) -> ShardRecord {
    ShardRecord {
        seconds: 0.0,
        features_crc32: None,
        shard,
        attempts: 1,
        crc32: shard.indices().map(|i| i as u32).collect(),
        labels: shard.indices().map(|i| i as i64 % 10).collect(),
        worker: "cpu:0".into(),
        finished_unix: 1,
    }
}

pub(crate) fn failed(shard: Shard) -> FailedRecord {
    FailedRecord {
        shard,
        attempts: 3,
        error: format!("worker died sampling {shard}"),
        failed_unix: 2,
    }
}

fn shards() -> Vec<Shard> {
    plan(PLAN.num_samples, PLAN.shard_size)
}

#[test]
fn check_or_init_stores_accepts_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    assert_eq!(db.meta().unwrap(), None);
    db.check_or_init(&fp("0"), PLAN, false).unwrap();
    assert_eq!(saved_fingerprint(dir.path()), Some(fp("0")));
    let meta = db.meta().unwrap().unwrap();
    assert_eq!(
        (meta.num_samples, meta.shard_size, meta.image_size),
        (25, 10, 64)
    );
    assert_eq!(meta.plan().len(), 3);
    db.check_or_init(&fp("0"), PLAN, false).unwrap();

    db.record_done(&done(shards()[0])).unwrap();
    let err = db.check_or_init(&fp("1"), PLAN, false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("different job: seed 0 -> 1;"), "{msg}");
    assert!(msg.contains("--restart"), "{msg}");
    let err = anyhow::Error::new(err);
    assert_eq!(code_of(&err), Exit::InvalidInput);
    match err.downcast::<StateError>().unwrap() {
        StateError::FingerprintChanged { changed, out_dir } => {
            assert_eq!(changed, vec![("seed".into(), "0".into(), "1".into())]);
            assert_eq!(out_dir, dir.path());
        }
        other => panic!("{other:?}"),
    }
    // Nothing was changed by the refusal.
    assert_eq!(db.done_records().unwrap().len(), 1);

    db.record_failed(&failed(shards()[1])).unwrap();
    db.add_retries(2).unwrap();
    check_saved_fingerprint(dir.path(), &fp("0")).unwrap();
    let err = check_saved_fingerprint(dir.path(), &fp("1")).unwrap_err();
    assert!(err.to_string().contains("seed 0 -> 1"), "{err}");
    db.check_or_init(&fp("1"), PLAN, true).unwrap();
    assert_eq!(db.meta().unwrap().unwrap().fingerprint, fp("1"));
    assert_eq!(saved_fingerprint(dir.path()), Some(fp("1")));
    check_saved_fingerprint(dir.path(), &fp("1")).unwrap();
    assert!(db.done_records().unwrap().is_empty());
    assert!(db.failed_records().unwrap().is_empty());
    assert_eq!(db.retries().unwrap(), 0);
}

#[test]
fn records_survive_reopening_and_done_clears_failed() {
    let dir = tempfile::tempdir().unwrap();
    let s = shards();
    {
        let db = StateDb::open(dir.path()).unwrap();
        db.check_or_init(&fp("0"), PLAN, false).unwrap();
        db.record_failed(&failed(s[0])).unwrap();
        db.record_failed(&failed(s[2])).unwrap();
        db.record_done(&done(s[1])).unwrap();
        assert_eq!(db.add_retries(3).unwrap(), 3);
        assert_eq!(db.add_retries(1).unwrap(), 4);
        // A retry of a failed shard that succeeds: done, no longer failed.
        db.record_done(&done(s[0])).unwrap();
    }
    let db = StateDb::open(dir.path()).unwrap();
    assert_eq!(db.done_records().unwrap(), vec![done(s[0]), done(s[1])]);
    assert_eq!(db.failed_records().unwrap(), vec![failed(s[2])]);
    assert_eq!(db.retries().unwrap(), 4);
    db.remove_done(s[0].id).unwrap();
    assert_eq!(db.done_records().unwrap(), vec![done(s[1])]);
}

#[test]
fn a_second_open_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let _db = StateDb::open(dir.path()).unwrap();
    let err = StateDb::open(dir.path()).err().expect("busy");
    assert!(matches!(err, StateError::Busy { .. }), "{err:?}");
    assert_eq!(code_of(&err.into()), Exit::Locked);
}

#[test]
fn verify_done_names_shards_with_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let samples = crate::outdir::OutDir::new(dir.path()).samples();
    std::fs::create_dir_all(&samples).unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    let s = shards();
    for shard in &s {
        db.record_done(&done(*shard)).unwrap();
    }
    for i in 0..25 {
        if i != 13 {
            std::fs::write(samples.join(format!("{i:06}.png")), b"png").unwrap();
        }
    }
    assert_eq!(db.verify_done(&samples, 25).unwrap(), vec![1]);
    // A record of a longer job does not fit this one.
    assert_eq!(db.verify_done(&samples, 20).unwrap(), vec![1, 2]);
    assert_eq!(
        db.verify_done(&dir.path().join("nowhere"), 25).unwrap(),
        vec![0, 1, 2]
    );
}

#[test]
fn removes_only_stale_temporaries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(remove_stale_temps(&d.join("missing")).unwrap(), 0);
    for name in [
        "000001.png",
        ".000002.png.tmp.4242",
        ".status.json.tmp.1.0",
        "notes.tmp.txt",
        ".x.tmp.123",
    ] {
        std::fs::write(d.join(name), b"x").unwrap();
    }
    std::fs::create_dir(d.join(".dir.tmp.1")).unwrap();
    assert_eq!(remove_stale_temps(d).unwrap(), 2);
    let mut left: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![".dir.tmp.1", ".x.tmp.123", "000001.png", "notes.tmp.txt"]
    );
}

#[test]
fn restart_deletes_samples_npz_and_snapshot_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let lock = JobLock::acquire(out).unwrap();
    restart_out_dir(&lock).unwrap(); // nothing there yet
    std::fs::create_dir_all(crate::outdir::OutDir::new(out).samples()).unwrap();
    std::fs::write(
        crate::outdir::OutDir::new(out).samples().join("000000.png"),
        b"x",
    )
    .unwrap();
    std::fs::write(crate::outdir::OutDir::new(out).npz(), b"x").unwrap();
    std::fs::write(crate::outdir::OutDir::new(out).snapshot(), b"{}").unwrap();
    std::fs::write(out.join("job.log"), b"keep").unwrap();
    drop(StateDb::open(out).unwrap());
    restart_out_dir(&lock).unwrap();
    assert!(!crate::outdir::OutDir::new(out).samples().exists());
    // A user's file in samples/ survives a restart, and so does its folder.
    let samples = crate::outdir::OutDir::new(out).samples();
    std::fs::create_dir_all(&samples).unwrap();
    std::fs::write(samples.join("000001.png"), b"x").unwrap();
    std::fs::write(samples.join("notes.txt"), b"mine").unwrap();
    restart_out_dir(&lock).unwrap();
    assert!(samples.join("notes.txt").is_file());
    assert!(!samples.join("000001.png").exists());
    assert!(!crate::outdir::OutDir::new(out).npz().exists());
    assert!(!crate::outdir::OutDir::new(out).snapshot().exists());
    assert!(out.join("job.log").is_file());
    assert!(StateDb::exists(out));
    assert!(crate::outdir::OutDir::new(out).lock_file().is_file());
}

#[test]
fn recorded_labels_are_in_index_order_whatever_the_record_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path()).unwrap();
    db.check_or_init(&fp("0"), PLAN, false).unwrap();
    assert_eq!(db.recorded_labels().unwrap(), Recorded::default());
    for id in [2, 0, 1] {
        db.record_done(&done(shards()[id])).unwrap();
    }
    let r = db.recorded_labels().unwrap();
    assert_eq!(r.labels, (0..25).map(|i| i % 10).collect::<Vec<i64>>());
    assert_eq!(r.crc32, (0..25).collect::<Vec<u32>>());
    let mut records = vec![done(shards()[1]), done(shards()[0])];
    assert_eq!(Recorded::of(&mut records).labels[..3], [0, 1, 2]);
    assert_eq!(records[0].shard.id, 0, "sorted by first index");
}
