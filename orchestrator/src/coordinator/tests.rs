//! The event loop against scripted workers (fake.rs): a real job (the golden fixture's configs,
//! no weights loaded), a real state DB and out dir in a temp folder, short timeouts.
use super::fake::{FakeSpawner, Load, OnShard, Script, Seen};
use super::pool::QUARANTINE_AFTER;
use super::{Coordinator, Outcome};
use crate::job::config::Job;
use crate::job::devices::WorkerDevice;
use crate::job::plan::plan;
use crate::outdir::snapshot::{self, Snapshot, WorkerState};
use crate::outdir::state::StateDb;
use crate::sys::signals::{StopLevel, StopRequest};
use fidshard_core::protocol::FailureKind;
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SAMPLES: u64 = 12;
const STALL: Duration = Duration::from_millis(300);
const GRACE: Duration = Duration::from_millis(150);

/// The run keys of a test job (each test may pass its own).
const RUN_KEYS: &str = "shard_size: 3\nstall_timeout: 0.3\n\
                        retry: {attempts: 3, backoff: 0.05, backoff_max: 0.1}\n";

struct Fixture {
    _dir: tempfile::TempDir,
    out: PathBuf,
    job: Job,
    db: StateDb,
    shard_size: u64,
}

fn fixture(run_keys: &str, shard_size: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/golden");
    let out = dir.path().join("out");
    let yaml = format!(
        "model:\n  config: {g}/dit/config.json\n  checkpoint: {g}/dit/model.pt\n\
         vae: {g}/vae\nnum_classes: 10\nnum_samples: {SAMPLES}\nseed: 0\ncfg_scale: 4.0\n\
         steps: \"10\"\nlabels: random\nout_dir: {out}\n{run_keys}",
        g = golden.display(),
        out = out.display(),
    );
    assert!(yaml.contains(&format!("shard_size: {shard_size}\n")));
    let path = dir.path().join("job.yaml");
    std::fs::write(&path, yaml).unwrap();
    let job = Job::load(&path).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let db = StateDb::open(&out).unwrap();
    Fixture {
        _dir: dir,
        out,
        job,
        db,
        shard_size,
    }
}

impl Fixture {
    fn shards(&self) -> u64 {
        SAMPLES.div_ceil(self.shard_size)
    }

    fn run(&self, devices: usize, spawner: &mut FakeSpawner) -> Outcome {
        self.run_signalled(devices, spawner, &|| None)
    }

    /// [`Fixture::run`] with stop requests from `signals` (polled every tick).
    fn run_signalled(
        &self,
        devices: usize,
        spawner: &mut FakeSpawner,
        signals: &dyn Fn() -> Option<StopRequest>,
    ) -> Outcome {
        let c = Coordinator {
            job: &self.job,
            db: &self.db,
            devices: (0..devices)
                .map(|i| WorkerDevice::Gpu(i.to_string()))
                .collect(),
            grace: GRACE,
            samples_dir: self.out.join("samples"),
            log_dir: self.out.join("logs"),
            features: None,
        };
        let todo = plan(SAMPLES, self.shard_size);
        c.run_with(spawner, signals, todo, (0, 0), self.shards())
            .unwrap()
    }

    fn snapshot(&self) -> Snapshot {
        snapshot::read(&self.out).expect("status.json")
    }

    /// Each recorded shard once; returns attempts per shard id.
    fn done_attempts(&self) -> Vec<(u64, u32)> {
        let recs = self.db.done_records().unwrap();
        let mut ids: Vec<u64> = recs.iter().map(|r| r.shard.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), recs.len(), "a shard recorded twice");
        recs.iter().map(|r| (r.shard.id, r.attempts)).collect()
    }
}

/// Log entries of `worker` (all generations), in order.
fn seen(s: &FakeSpawner, worker: usize) -> Vec<(u64, Instant, Seen)> {
    let log = s.log.lock().unwrap();
    log.iter()
        .filter(|e| e.worker == worker)
        .map(|e| (e.gen, e.at, e.seen.clone()))
        .collect()
}

fn spawns(s: &FakeSpawner, worker: usize) -> usize {
    seen(s, worker)
        .iter()
        .filter(|(_, _, e)| *e == Seen::Spawned)
        .count()
}

fn assigned(s: &FakeSpawner, worker: usize, shard: u64) -> Vec<(u64, Instant, u32)> {
    seen(s, worker)
        .into_iter()
        .filter_map(|(gen, at, e)| match e {
            Seen::Assigned { shard: id, attempt } if id == shard => Some((gen, at, attempt)),
            _ => None,
        })
        .collect()
}

#[test]
fn crash_mid_shard_is_retried_on_a_respawned_worker_and_recorded_once() {
    let f = fixture(RUN_KEYS, 3);
    let mut s = FakeSpawner::new(|_, gen| match gen {
        1 => Script::good().next(OnShard::Crash),
        _ => Script::good(),
    });
    assert_eq!(f.run(1, &mut s), Outcome::Finished { failed: 0 });
    assert_eq!(spawns(&s, 0), 2);
    // Shard 0 died with the first process and was done by the second, on attempt 2.
    let a = assigned(&s, 0, 0);
    assert_eq!(
        a.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>(),
        [(1, 1), (2, 2)]
    );
    assert_eq!(f.done_attempts(), [(0, 2), (1, 1), (2, 1), (3, 1)]);
    let snap = f.snapshot();
    assert_eq!((snap.samples_done, snap.shards_done), (SAMPLES, 4));
    assert_eq!(snap.retries, 1);
    assert!(snap
        .last_errors
        .iter()
        .any(|e| e.contains("shard #0 [0..3) lost") && e.contains("SIGSEGV")));
}

#[test]
fn stalled_worker_gets_term_then_kill_after_the_grace_and_its_shard_is_retried() {
    let f = fixture(RUN_KEYS, 3);
    let mut s = FakeSpawner::new(|_, gen| match gen {
        1 => Script::good().next(OnShard::Hang),
        _ => Script::good(),
    });
    assert_eq!(f.run(1, &mut s), Outcome::Finished { failed: 0 });
    let first: Vec<(Instant, Seen)> = seen(&s, 0)
        .into_iter()
        .filter(|(gen, _, _)| *gen == 1)
        .map(|(_, at, e)| (at, e))
        .collect();
    let at = |want: &Seen| first.iter().find(|(_, e)| e == want).map(|(t, _)| *t);
    let assigned_at = at(&Seen::Assigned {
        shard: 0,
        attempt: 1,
    })
    .unwrap();
    let term = at(&Seen::Signalled(Signal::SIGTERM)).expect("SIGTERM");
    let kill = at(&Seen::Signalled(Signal::SIGKILL)).expect("SIGKILL");
    assert!(
        term.duration_since(assigned_at) >= STALL,
        "TERM before the stall timeout"
    );
    assert!(
        kill.duration_since(term) >= GRACE,
        "KILL before the grace period"
    );
    assert!(matches!(first.last(), Some((_, Seen::Exited(st))) if st.contains("SIGKILL")));
    assert_eq!(f.done_attempts()[0], (0, 2));
    assert!(f.snapshot().last_errors.iter().any(|e| e.contains("hung")));
}

#[test]
fn shard_failures_back_off_then_fail_for_good_after_the_attempts() {
    let f = fixture(RUN_KEYS, 3);
    let mut s =
        FakeSpawner::new(|_, _| Script::good().on_shard(1, OnShard::Fail(FailureKind::Oom)));
    assert_eq!(f.run(1, &mut s), Outcome::Finished { failed: 1 });
    // Three attempts, the retries after 0.05 s and then 0.1 s of backoff, on one worker.
    let a = assigned(&s, 0, 1);
    assert_eq!(
        a.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>(),
        [(1, 1), (1, 2), (1, 3)]
    );
    assert!(a[1].1.duration_since(a[0].1) >= Duration::from_millis(50));
    assert!(a[2].1.duration_since(a[1].1) >= Duration::from_millis(100));
    assert_eq!(
        spawns(&s, 0),
        1,
        "a shard failure does not restart the worker"
    );
    let failed = f.db.failed_records().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].shard.id, failed[0].attempts), (1, 3));
    assert!(
        failed[0].error.contains("out of memory"),
        "{}",
        failed[0].error
    );
    assert_eq!(f.db.retries().unwrap(), 2);
    assert_eq!(f.done_attempts(), [(0, 1), (2, 1), (3, 1)]);
    let snap = f.snapshot();
    assert_eq!(
        (snap.shards_failed, snap.missing_ranges.clone()),
        (1, vec![(3, 6)])
    );
}

#[test]
fn slow_loader_gets_no_shard_before_ready_and_is_not_stalled() {
    // One shard per sample; the slow worker loads for 0.35 s and then needs 0.2 s per shard:
    // more than the 0.5 s stall timeout together, each well below it.
    let keys = "shard_size: 1\nstall_timeout: 0.5\nretry: {attempts: 3, backoff: 0.05, backoff_max: 0.1}\n";
    let f = fixture(keys, 1);
    let mut s = FakeSpawner::new(|w, _| match w {
        0 => Script::good().then(OnShard::Finish(Duration::from_millis(60))),
        _ => Script::good()
            .loads(Load::Ready(Duration::from_millis(350)))
            .then(OnShard::Finish(Duration::from_millis(200))),
    });
    assert_eq!(f.run(2, &mut s), Outcome::Finished { failed: 0 });
    let slow = seen(&s, 1);
    let ready = slow
        .iter()
        .position(|(_, _, e)| *e == Seen::Ready)
        .expect("ready");
    let first_assign = slow
        .iter()
        .position(|(_, _, e)| matches!(e, Seen::Assigned { .. }))
        .expect("the slow worker got shards once ready");
    assert!(first_assign > ready, "assigned before ready: {slow:?}");
    for w in [0, 1] {
        assert_eq!(spawns(&s, w), 1);
        assert!(
            !seen(&s, w)
                .iter()
                .any(|(_, _, e)| matches!(e, Seen::Signalled(_))),
            "worker {w} was signalled"
        );
    }
    assert_eq!(f.done_attempts().len(), SAMPLES as usize);
    assert!(f.done_attempts().iter().all(|&(_, a)| a == 1));
}

#[test]
fn repeated_deaths_quarantine_the_device_and_the_others_carry_on() {
    // One shard per sample, so that work is left while worker 0 dies three times; five attempts,
    // so that no shard fails for good from three crashes.
    let keys = "shard_size: 1\nstall_timeout: 0.3\nretry: {attempts: 5, backoff: 0.02, backoff_max: 0.05}\n";
    let f = fixture(keys, 1);
    let mut s = FakeSpawner::new(|w, _| match w {
        0 => Script::good().then(OnShard::Crash),
        _ => Script::good().then(OnShard::Finish(Duration::from_millis(50))),
    });
    assert_eq!(f.run(2, &mut s), Outcome::Finished { failed: 0 });
    assert_eq!(spawns(&s, 0), QUARANTINE_AFTER as usize);
    assert_eq!(f.done_attempts().len(), SAMPLES as usize);
    let snap = f.snapshot();
    assert_eq!(snap.workers[0].state, WorkerState::Quarantined);
    assert_eq!(snap.workers[0].pid, None);
    assert!(snap
        .last_errors
        .iter()
        .any(|e| e.contains("gpu0 quarantined")));
}

#[test]
fn a_worker_that_cannot_load_quarantines_at_once_and_the_last_device_fails_the_rest() {
    let f = fixture(RUN_KEYS, 3);
    let mut s = FakeSpawner::new(|_, _| Script::good().loads(Load::Fatal));
    assert_eq!(f.run(1, &mut s), Outcome::Finished { failed: 4 });
    assert_eq!(spawns(&s, 0), 1);
    let failed = f.db.failed_records().unwrap();
    assert_eq!(failed.len(), 4);
    assert!(failed
        .iter()
        .all(|r| r.error == "every device is quarantined"));
    assert_eq!(f.snapshot().workers[0].state, WorkerState::Quarantined);
}

#[test]
fn deaths_while_loading_and_failed_spawns_count_towards_quarantine() {
    let f = fixture(RUN_KEYS, 3);
    let mut s = FakeSpawner::new(|w, _| match w {
        0 => Script::good().loads(Load::Crash),
        _ => Script::good().then(OnShard::Finish(Duration::from_millis(100))),
    });
    s.refuse = vec![2];
    assert_eq!(f.run(3, &mut s), Outcome::Finished { failed: 0 });
    assert_eq!(spawns(&s, 0), QUARANTINE_AFTER as usize);
    assert_eq!(spawns(&s, 2), 0);
    let states: Vec<WorkerState> = f.snapshot().workers.iter().map(|w| w.state).collect();
    // Worker 1 did everything and was shut down at the end.
    assert_eq!(
        states,
        [
            WorkerState::Quarantined,
            WorkerState::Dead,
            WorkerState::Quarantined
        ]
    );
    assert!(seen(&s, 1).iter().any(|(_, _, e)| *e == Seen::Closed));
}

fn drain(signal: &'static str) -> Option<StopRequest> {
    Some(StopRequest {
        level: StopLevel::Drain,
        signal,
    })
}

/// How many shards the workers were assigned so far, per the fake spawner's log.
fn assigns(log: &super::fake::Log) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e.seen, Seen::Assigned { .. }))
        .count()
}

fn at(s: &FakeSpawner, worker: usize, want: &Seen) -> Option<Instant> {
    seen(s, worker)
        .into_iter()
        .find(|(_, _, e)| e == want)
        .map(|(_, t, _)| t)
}

#[test]
fn sigusr1_drains_the_workers_assigns_nothing_more_and_interrupts() {
    // Two loaded workers each sampling a shard; a third still loading. Shards take 2 s: the
    // drain comes while both are in flight.
    let f = fixture(RUN_KEYS, 3);
    let mut s = FakeSpawner::new(|w, _| match w {
        2 => Script::good().loads(Load::Ready(Duration::from_secs(5))),
        _ => Script::good().then(OnShard::Finish(Duration::from_secs(2))),
    });
    let log = s.log.clone();
    let signals = move || (assigns(&log) >= 2).then_some(()).and(drain("SIGUSR1"));
    let t = Instant::now();
    assert_eq!(f.run_signalled(3, &mut s, &signals), Outcome::Interrupted);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    for w in [0, 1] {
        let drained = at(&s, w, &Seen::Drained).expect("the worker was sent drain");
        let events = seen(&s, w);
        // It exits by itself: no signal, no assignment after the drain.
        assert!(
            !events
                .iter()
                .any(|(_, _, e)| matches!(e, Seen::Signalled(_))),
            "worker {w}: {events:?}"
        );
        assert!(
            !events
                .iter()
                .any(|(_, t, e)| matches!(e, Seen::Assigned { .. }) && *t > drained),
            "worker {w} was assigned a shard after the drain: {events:?}"
        );
        assert!(matches!(events.last(), Some((_, _, Seen::Exited(st))) if st.contains("code 0")));
        assert_eq!(spawns(&s, w), 1);
    }
    // The loading worker has nothing in flight: SIGTERM, no drain.
    assert!(at(&s, 2, &Seen::Drained).is_none());
    assert!(at(&s, 2, &Seen::Signalled(Signal::SIGTERM)).is_some());
    assert_eq!(assigns(&s.log), 2);
    // Nothing was finished, nothing failed: both shards run again on resume, uncounted.
    assert!(f.done_attempts().is_empty());
    assert!(f.db.failed_records().unwrap().is_empty());
    assert_eq!(f.db.retries().unwrap(), 0);
    let snap = f.snapshot();
    assert_eq!(snap.state, snapshot::JobState::Interrupted);
    assert!(snap.last_errors.is_empty(), "{:?}", snap.last_errors);
}

#[test]
fn a_worker_that_does_not_drain_gets_sigterm_after_the_grace_then_sigkill() {
    let f = fixture(RUN_KEYS, 3);
    let mut s = FakeSpawner::new(|_, _| Script::good().then(OnShard::Hang));
    let log = s.log.clone();
    let signals = move || (assigns(&log) >= 1).then_some(()).and(drain("SIGUSR1"));
    assert_eq!(f.run_signalled(1, &mut s, &signals), Outcome::Interrupted);
    let drained = at(&s, 0, &Seen::Drained).expect("drain");
    let term = at(&s, 0, &Seen::Signalled(Signal::SIGTERM)).expect("SIGTERM");
    let kill = at(&s, 0, &Seen::Signalled(Signal::SIGKILL)).expect("SIGKILL");
    assert!(
        term.duration_since(drained) >= GRACE,
        "SIGTERM before the grace"
    );
    assert!(
        kill.duration_since(term) >= GRACE,
        "SIGKILL before the grace"
    );
    assert_eq!(assigns(&s.log), 1);
    assert!(f.done_attempts().is_empty());
}

#[test]
fn sigterm_during_a_drain_escalates_at_once() {
    let f = fixture(RUN_KEYS, 3);
    let mut s = FakeSpawner::new(|_, _| Script::good().then(OnShard::Hang));
    let log = s.log.clone();
    let signals = move || {
        let drained_at = log
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.seen == Seen::Drained)
            .map(|e| e.at);
        match drained_at {
            Some(t) if t.elapsed() >= Duration::from_millis(20) => Some(StopRequest {
                level: StopLevel::Terminate,
                signal: "SIGTERM",
            }),
            _ if assigns(&log) >= 1 => drain("SIGUSR1"),
            _ => None,
        }
    };
    assert_eq!(f.run_signalled(1, &mut s, &signals), Outcome::Interrupted);
    let drained = at(&s, 0, &Seen::Drained).expect("drain");
    let term = at(&s, 0, &Seen::Signalled(Signal::SIGTERM)).expect("SIGTERM");
    let kill = at(&s, 0, &Seen::Signalled(Signal::SIGKILL)).expect("SIGKILL");
    assert!(
        term.duration_since(drained) < GRACE,
        "SIGTERM waited for the drain's grace"
    );
    assert!(
        kill.duration_since(term) >= GRACE,
        "SIGKILL before the grace"
    );
}

#[test]
fn a_shard_that_completes_while_draining_is_recorded() {
    // Like a worker whose writer still had the shard's last PNGs queued: on `drain` it finishes
    // the shard (reports it done) and then exits, within the grace.
    let f = fixture(RUN_KEYS, 3);
    let mut s = FakeSpawner::new(|_, _| {
        Script::good()
            .then(OnShard::Finish(Duration::from_millis(120)))
            .finish_on_drain()
    });
    let log = s.log.clone();
    let signals = move || (assigns(&log) >= 1).then_some(()).and(drain("SIGUSR1"));
    assert_eq!(f.run_signalled(1, &mut s, &signals), Outcome::Interrupted);
    assert!(at(&s, 0, &Seen::Drained).is_some());
    assert!(at(&s, 0, &Seen::Signalled(Signal::SIGTERM)).is_none());
    assert_eq!(assigns(&s.log), 1);
    assert_eq!(f.done_attempts(), [(0, 1)]);
    assert_eq!(f.snapshot().shards_done, 1);
}
