//! Tests of `status`'s rendering and targets (the derivation is tested in outdir/status/).
use super::*;
use crate::exit_code::code_of;
use crate::job::plan::plan;
use crate::outdir::lock::JobLock;
use crate::outdir::snapshot::{WorkerSnapshot, WorkerState};
use crate::outdir::status::{compute, tests::out_dir_with};
use fidshard_core::Exit;

#[test]
fn renders_a_failed_job() {
    let dir = out_dir_with(&[0, 2], &[1]);
    let s = compute(dir.path(), None).unwrap();
    let text = render(&s);
    assert!(text.contains("state    failed\n"), "{text}");
    assert!(text.contains("samples  15/25 (60.0%)"), "{text}");
    assert!(text.contains("missing  [10..20)"), "{text}");
}

#[test]
fn renders_a_live_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let mut live = Snapshot::empty(dir.path(), JobState::Running);
    live.coordinator_pid = Some(std::process::id());
    live.samples_total = 25;
    live.samples_done = 12;
    live.images_per_sec = 3.5;
    live.eta_seconds = Some(3725.0);
    live.workers.push(WorkerSnapshot {
        id: 0,
        device: "cuda:0".into(),
        pid: Some(77),
        state: WorkerState::Busy,
        shard: Some(plan(25, 10)[1]),
        progress: Some((2, 10)),
        batch: Some(4),
    });
    let text = render(&live);
    assert!(text.contains("cuda:0"), "{text}");
    assert!(text.contains("shard #1 [10..20) 2/10"), "{text}");
    assert!(text.contains("3.50 images/s, ETA 1h 02m"), "{text}");
}

#[test]
fn renders_the_device_hours_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Snapshot::empty(dir.path(), JobState::Complete);
    let rate = |device: &str, seconds: f64| crate::outdir::snapshot::DeviceRate {
        device: device.into(),
        samples: 100,
        images_per_sec: 1.0,
        seconds,
    };
    s.devices = vec![rate("0 (cuda:0)", 5400.0), rate("1 (cuda:1)", 1800.0)];
    let text = render(&s);
    assert!(
        text.contains("used     2.00 GPU-hours (sampling time of the recorded shards)"),
        "{text}"
    );
    s.devices = vec![rate("0 (cpu)", 36.0)];
    assert!(
        render(&s).contains("used     0.01 CPU worker-hours"),
        "{}",
        render(&s)
    );
    s.devices.clear();
    assert!(!render(&s).contains("used "));
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
