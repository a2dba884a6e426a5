//! A Kubernetes Indexed Job on one machine: three coordinators with the environment of its pods
//! (`JOB_COMPLETION_INDEX=0,1,2`), two with `--partition k8s/3` and one with `partitions: k8s/3`
//! in its job file, on one out dir; the npz the last of them assembles is byte-identical to a
//! one-coordinator run. And the refusals: `k8s` without N, an index outside the N partitions.
use crate::support::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The job of partitions.rs (the reference run is shared).
const JOB: &str = "num_samples: 96\nsteps: 2\nshard_size: 8\nbatch_size: 2\ndevices: {cpu: 1}\n";

fn pod(cfg: &Path, index: &str, partition: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fidshard"));
    cmd.args(["run", cfg.to_str().unwrap()]);
    if let Some(p) = partition {
        cmd.args(["--partition", p]);
    }
    cmd.env("FIDSHARD_LOG", "info")
        .env("JOB_COMPLETION_INDEX", index)
        .env_remove("FAILPOINTS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn three_indexed_job_pods_give_the_one_coordinator_npz() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(tmp.path(), JOBS[0], JOB);
    let want = reference_npz(&cfg);
    // The same job with N in the file: `partitions:` is no part of the fingerprint.
    let in_file = tmp.path().join("k8s-in-file.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&in_file, format!("{text}partitions: k8s/3\n")).unwrap();

    let pods = vec![
        pod(&cfg, "0", Some("k8s/3")),
        pod(&in_file, "1", None),
        pod(&cfg, "2", Some("k8s/3")),
    ];
    for (k, p) in pods.into_iter().enumerate() {
        let o = p.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "pod {k}: {err}");
        let first = err
            .lines()
            .find(|l| l.contains("fidshard run"))
            .unwrap_or("");
        let from = if k == 1 {
            "`partitions: k8s/3` in the job file".to_string()
        } else {
            "--partition k8s/3".to_string()
        };
        assert!(
            first.contains(&format!(
                "the Kubernetes Indexed Job (JOB_COMPLETION_INDEX={k}, N=3 from {from})"
            )),
            "pod {k}: {first}"
        );
        assert!(
            first.contains(&format!("partition={k}/3")),
            "pod {k}: {first}"
        );
    }
    assert!(npz(&tmp.path().join("out")) == want, "the npz differs");
    let s = status_json(&cfg);
    assert_eq!(s["state"], "complete", "{s}");
    assert_eq!(s["partitions"].as_array().map(Vec::len), Some(3), "{s}");
}

#[test]
fn k8s_without_n_or_with_an_index_outside_n_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(tmp.path(), JOBS[0], JOB);
    let run = |partition: &str, index: &str| {
        fidshard_env(
            &["run", cfg.to_str().unwrap(), "--partition", partition],
            &[("JOB_COMPLETION_INDEX", index)],
        )
    };
    let o = run("k8s", "0");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let line = one_error_line(&o);
    assert!(line.contains(cfg.to_str().unwrap()), "{line}");
    assert!(line.contains("pass --partition k8s/N"), "{line}");
    let o = run("k8s/3", "3");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let line = one_error_line(&o);
    assert!(
        line.contains("JOB_COMPLETION_INDEX=3 is outside the 3 partitions of --partition k8s/3"),
        "{line}"
    );
    // Nothing was sampled or claimed.
    assert!(!tmp.path().join("out/samples").exists());
}
