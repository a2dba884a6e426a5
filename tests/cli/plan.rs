//! `fidshard plan`: the tail of idle GPUs it warns about, the `shard_size` it suggests, and
//! `--devices N` (planning for a GPU node from a machine without GPUs).
use crate::support::*;

fn plan(cfg: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["plan", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = fidshard(&all);
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    (o.status.code(), text)
}

#[test]
fn plan_warns_when_the_last_shards_leave_gpus_idle_and_suggests_a_shard_size() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 50000\nshard_size: 1000\nbatch_size: 25\n",
    );
    // 50 shards over 32 GPUs: 1.56 waves, 14 GPUs idle in the second.
    let (code, text) = plan(&cfg, &["--devices", "32"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("worker 31 on gpu 31:"), "{text}");
    assert!(
        text.contains("warning: 50 shards over 32 workers is 1.56 waves: in the last one 14 of 32 workers sit idle"),
        "{text}"
    );
    // The largest multiple of batch_size with at least 8 shards per GPU and 95 % busy.
    assert!(
        text.contains("`shard_size: 175` gives 286 shards, 8.94 waves"),
        "{text}"
    );
    // 4 nodes x 8 GPUs: 12 or 13 shards per node.
    let (code, text) = plan(&cfg, &["--partitions", "4", "--devices", "8"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(
            "warning: up to 13 shards per partition (4 partitions) over 8 workers is 1.62 waves"
        ),
        "{text}"
    );
    assert!(text.contains("`shard_size: "), "{text}");
    // Many shards per GPU: no warning.
    let cfg = job_with(
        tmp.path(),
        JOBS[0],
        "num_samples: 50000\nshard_size: 64\nbatch_size: 16\n",
    );
    let (code, text) = plan(&cfg, &["--devices", "8"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("warning"), "{text}");
    assert!(
        text.contains("worker 7 on gpu 7: about 97 shard(s)"),
        "{text}"
    );
    // Out of range.
    let (code, text) = plan(&cfg, &["--devices", "0"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--devices 0: expected 1 to"), "{text}");
}
