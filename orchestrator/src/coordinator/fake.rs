//! Scripted in-process workers for the event loop's tests: a [`FakeSpawner`] whose workers do
//! what their [`Script`] says (load for a while, finish, crash, hang, fail a shard), write empty
//! PNG files where a real worker writes images, and log what the coordinator did to them.
//! On `drain` a fake worker finishes its "batch in flight" (reports half its shard sampled) and
//! exits 0 without reporting the shard; a hung one ignores it.
use super::spawner::{Event, SpawnSpec, Spawner, WorkerHandle};
use anyhow::{bail, Result};
use fidshard_core::protocol::{FailureKind, FromWorker, ToWorker};
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// How a scripted worker starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Load {
    /// Says `ready` after this long.
    Ready(Duration),
    /// Reports a fatal load error and exits.
    Fatal,
    /// Exits before it is ready.
    Crash,
}

/// What a scripted worker does with an assigned shard.
#[derive(Clone, Copy, Debug)]
pub(crate) enum OnShard {
    /// Samples it, writes its files and reports it done after this long.
    Finish(Duration),
    /// Reports half of it sampled, then dies (SIGSEGV).
    Crash,
    /// Never says another word; ignores SIGTERM, dies on SIGKILL.
    Hang,
    /// Reports `shard_failed` of this kind and takes more work.
    Fail(FailureKind),
}

/// One worker process's behaviour.
#[derive(Clone, Debug)]
pub(crate) struct Script {
    pub load: Load,
    /// What it does with the 1st, 2nd, ... shard it gets; `then` for the rest.
    pub shards: Vec<OnShard>,
    pub then: OnShard,
    /// What it does with these shards, whenever it gets them (before `shards`).
    pub by_shard: Vec<(u64, OnShard)>,
    /// On `drain`, it finishes the shard in hand (reports it done) before it exits, like a
    /// worker whose last batch of the shard was still being written.
    pub finish_on_drain: bool,
}

impl Script {
    pub fn good() -> Script {
        Script {
            load: Load::Ready(Duration::from_millis(10)),
            shards: Vec::new(),
            then: OnShard::Finish(Duration::from_millis(20)),
            by_shard: Vec::new(),
            finish_on_drain: false,
        }
    }
    pub fn finish_on_drain(mut self) -> Script {
        self.finish_on_drain = true;
        self
    }
    pub fn loads(mut self, load: Load) -> Script {
        self.load = load;
        self
    }
    /// Its next shard (in assignment order) goes this way.
    pub fn next(mut self, on: OnShard) -> Script {
        self.shards.push(on);
        self
    }
    /// Every shard not scripted otherwise goes this way.
    pub fn then(mut self, on: OnShard) -> Script {
        self.then = on;
        self
    }
    /// Shard `id` goes this way whenever this worker gets it.
    pub fn on_shard(mut self, id: u64, on: OnShard) -> Script {
        self.by_shard.push((id, on));
        self
    }
}

/// What the coordinator did and the fake workers said, in order, with the time.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Seen {
    Spawned,
    Ready,
    Assigned { shard: u64, attempt: u32 },
    Drained,
    Signalled(Signal),
    Closed,
    Exited(String),
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub worker: usize,
    pub gen: u64,
    pub at: Instant,
    pub seen: Seen,
}

pub(crate) type Log = Arc<Mutex<Vec<Entry>>>;

/// Starts fake workers; `script(worker, gen)` says what each does (gen counts from 1).
pub(crate) struct FakeSpawner {
    script: Box<dyn FnMut(usize, u64) -> Script>,
    pub log: Log,
    /// Spawns that fail (like a missing worker binary) for these workers.
    pub refuse: Vec<usize>,
}

impl FakeSpawner {
    pub fn new(script: impl FnMut(usize, u64) -> Script + 'static) -> FakeSpawner {
        FakeSpawner {
            script: Box::new(script),
            log: Log::default(),
            refuse: Vec::new(),
        }
    }
}

impl Spawner for FakeSpawner {
    fn spawn(
        &mut self,
        spec: SpawnSpec<'_>,
        events: UnboundedSender<Event>,
    ) -> Result<Box<dyn WorkerHandle>> {
        if self.refuse.contains(&spec.worker) {
            bail!("cannot start a worker process (scripted)");
        }
        let script = (self.script)(spec.worker, spec.gen);
        let w = Shared {
            worker: spec.worker,
            gen: spec.gen,
            events,
            log: self.log.clone(),
            state: Arc::new(Mutex::new(State::default())),
        };
        w.note(Seen::Spawned);
        Ok(Box::new(FakeWorker {
            w,
            script,
            assigned: 0,
        }))
    }
}

#[derive(Default)]
struct State {
    ready: bool,
    exited: bool,
    /// Stuck in a shard: SIGTERM does not reach it (nor `drain`).
    hung: bool,
    /// The shard being sampled (id, size), until it is reported done.
    current: Option<(u64, u64)>,
    /// Drained with `finish_on_drain`: exit once the shard in hand is reported done.
    exit_when_done: bool,
    samples: Option<(PathBuf, u64)>,
    /// The job's seed, label mode and classes: a fake worker reports the job's labels.
    labels: Option<(u64, fidshard_core::labels::LabelMode, i64)>,
}

/// What a fake worker's timer tasks share with its handle.
#[derive(Clone)]
struct Shared {
    worker: usize,
    gen: u64,
    events: UnboundedSender<Event>,
    log: Log,
    state: Arc<Mutex<State>>,
}

impl Shared {
    fn note(&self, seen: Seen) {
        self.log.lock().unwrap().push(Entry {
            worker: self.worker,
            gen: self.gen,
            at: Instant::now(),
            seen,
        });
    }

    fn alive(&self) -> bool {
        !self.state.lock().unwrap().exited
    }

    /// Sends a message, unless the process is gone.
    fn say(&self, msg: FromWorker) {
        if self.alive() {
            let (worker, gen) = (self.worker, self.gen);
            let _ = self.events.send(Event::Msg { worker, gen, msg });
        }
    }

    /// The process ends (once): its last event.
    fn exit(&self, status: &str) {
        if std::mem::replace(&mut self.state.lock().unwrap().exited, true) {
            return;
        }
        self.note(Seen::Exited(status.to_string()));
        let (worker, gen, status) = (self.worker, self.gen, status.to_string());
        let _ = self.events.send(Event::Exited {
            worker,
            gen,
            status,
        });
    }

    /// Runs `f` after `d` on the loop's runtime.
    fn after(&self, d: Duration, f: impl FnOnce(&Shared) + Send + 'static) {
        let w = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            f(&w);
        });
    }
}

struct FakeWorker {
    w: Shared,
    script: Script,
    assigned: usize,
}

impl FakeWorker {
    fn start(&mut self) {
        match self.script.load {
            Load::Ready(d) => self.w.after(d, move |w| {
                if w.alive() {
                    w.state.lock().unwrap().ready = true;
                    w.note(Seen::Ready);
                }
                let pid = 1000 + w.worker as u32;
                let (device, load_seconds) = ("cpu".to_string(), d.as_secs_f64());
                w.say(FromWorker::Ready {
                    pid,
                    device,
                    load_seconds,
                });
            }),
            Load::Fatal => self.w.after(Duration::ZERO, |w| {
                w.say(FromWorker::Fatal {
                    kind: FailureKind::Load,
                    message: "scripted load failure".into(),
                });
                w.exit("exited with code 3");
            }),
            Load::Crash => self
                .w
                .after(Duration::ZERO, |w| w.exit("killed by signal 11 (SIGSEGV)")),
        }
    }

    fn work(&mut self, shard: fidshard_core::shard::Shard) {
        let scripted = self.script.by_shard.iter().find(|(id, _)| *id == shard.id);
        let on = match scripted {
            Some((_, on)) => *on,
            None => self
                .script
                .shards
                .get(self.assigned)
                .copied()
                .unwrap_or(self.script.then),
        };
        self.assigned += 1;
        let (id, n) = (shard.id, shard.len());
        let progress = move |sampled| FromWorker::Progress {
            shard: id,
            sampled,
            written: 0,
            total: n,
            batch: 4,
        };
        match on {
            OnShard::Finish(d) => {
                self.w.state.lock().unwrap().current = Some((id, n));
                self.w.after(d, move |w| {
                    let Some((dir, total)) = w.state.lock().unwrap().samples.clone() else {
                        return;
                    };
                    let Some((seed, mode, classes)) = w.state.lock().unwrap().labels else {
                        return;
                    };
                    if !w.alive() {
                        return;
                    }
                    w.state.lock().unwrap().current = None;
                    for i in shard.indices() {
                        let name = fidshard_core::output::png_name(i, total);
                        std::fs::write(dir.join(name), b"").expect("write a fake PNG");
                    }
                    w.say(progress(n));
                    w.say(FromWorker::ShardDone {
                        shard: id,
                        crc32: vec![0; n as usize],
                        labels: shard
                            .indices()
                            .map(|i| fidshard_core::labels::label_of(seed, i, mode, classes))
                            .collect(),
                        seconds: d.as_secs_f64(),
                        features_crc32: None,
                    });
                    if w.state.lock().unwrap().exit_when_done {
                        w.exit("exited with code 0");
                    }
                })
            }
            OnShard::Crash => self.w.after(Duration::from_millis(5), move |w| {
                w.say(progress(n / 2));
                w.exit("killed by signal 11 (SIGSEGV)");
            }),
            OnShard::Hang => self.w.state.lock().unwrap().hung = true,
            OnShard::Fail(kind) => self.w.after(Duration::from_millis(5), move |w| {
                w.say(FromWorker::ShardFailed {
                    shard: id,
                    kind,
                    message: "scripted failure".into(),
                })
            }),
        }
    }
}

impl WorkerHandle for FakeWorker {
    fn pid(&self) -> u32 {
        1000 + self.w.worker as u32
    }

    fn send(&mut self, msg: &ToWorker) {
        if !self.w.alive() {
            return;
        }
        match msg {
            ToWorker::Init {
                settings,
                samples_dir,
                ..
            } => {
                std::fs::create_dir_all(samples_dir).expect("create the samples folder");
                let mut state = self.w.state.lock().unwrap();
                state.samples = Some((samples_dir.clone(), settings.num_samples));
                state.labels = Some((settings.seed, settings.labels, settings.dit.num_classes));
                drop(state);
                self.start();
            }
            ToWorker::Assign { shard, attempt } => {
                self.w.note(Seen::Assigned {
                    shard: shard.id,
                    attempt: *attempt,
                });
                self.work(*shard);
            }
            ToWorker::Drain => {
                self.w.note(Seen::Drained);
                let (hung, current) = {
                    let st = self.w.state.lock().unwrap();
                    (st.hung, st.current)
                };
                if hung {
                    return;
                }
                if self.script.finish_on_drain && current.is_some() {
                    self.w.state.lock().unwrap().exit_when_done = true;
                    return;
                }
                // The batch in flight: half the shard, then exit without reporting it.
                self.w.after(Duration::from_millis(5), move |w| {
                    if let Some((shard, n)) = current {
                        w.say(FromWorker::Progress {
                            shard,
                            sampled: n / 2,
                            written: 0,
                            total: n,
                            batch: 4,
                        });
                    }
                    w.exit("exited with code 0");
                });
            }
            ToWorker::Shutdown => {}
        }
    }

    fn close(&mut self) {
        if self.w.alive() {
            self.w.note(Seen::Closed);
        }
        self.w.exit("exited with code 0");
    }

    fn signal(&self, sig: Signal) {
        if !self.w.alive() {
            return;
        }
        self.w.note(Seen::Signalled(sig));
        let hung = self.w.state.lock().unwrap().hung;
        if sig == Signal::SIGKILL || !hung {
            self.w.exit(&format!(
                "killed by signal {} ({})",
                sig as i32,
                sig.as_str()
            ));
        }
    }
}
