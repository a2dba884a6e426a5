//! The fault-free reference runs: the npz of a job run once, without faults or interruptions,
//! that the tests of faults, preemption, resume and repair compare their npz with. A run costs
//! seconds to a minute, so each distinct job is run once per test binary and shared by every
//! test that asks for the same job (tests run in parallel threads: the others wait for it).
use super::{fidshard, stderr};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// One job's npz, filled by the first test that asks for it.
type Run = &'static OnceLock<Vec<u8>>;

/// The npz of a clean `fidshard run` of the job file `cfg`, run once per distinct job text.
/// The job is identified by the whole text of `cfg` (the same settings, to the byte), so the
/// text must not depend on the test's folder: its `out_dir` must be the relative `out`.
pub fn reference_npz(cfg: &Path) -> &'static [u8] {
    static RUNS: Mutex<BTreeMap<String, Run>> = Mutex::new(BTreeMap::new());
    let text = std::fs::read_to_string(cfg).unwrap();
    assert!(
        text.lines().any(|l| l == "out_dir: out"),
        "{}: a reference job needs `out_dir: out`",
        cfg.display()
    );
    // The map's lock is held only to find the job's cell; the run itself happens under the
    // cell's own once-lock, so different jobs' references run in parallel.
    let cell: Run = RUNS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(text.clone())
        .or_insert_with(|| Box::leak(Box::default()));
    cell.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        // The same file name too: the run sees exactly the job the test runs.
        let job = tmp.path().join(cfg.file_name().unwrap());
        std::fs::write(&job, &text).unwrap();
        let o = fidshard(&["run", job.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "reference run: {}", stderr(&o));
        std::fs::read(tmp.path().join("out/samples.npz")).unwrap()
    })
}
