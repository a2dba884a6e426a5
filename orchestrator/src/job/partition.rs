//! Many nodes: a job split into N partitions, one coordinator each (a Slurm array task, an
//! `srun` task per node, a Kubernetes indexed-job pod). The scheduler is the distributed engine;
//! fidshard only decides which shards each partition owns and shares state through the out dir.
//!
//! The rule: of a plan of S shards, partition K of N owns the contiguous shards
//! `[floor(K*S/N), floor((K+1)*S/N))`, so the partitions differ by at most one shard and
//! together cover the plan exactly once.
use std::ops::Range;
use std::path::{Path, PathBuf};

/// `OUT/partitions`: one folder per partition of a job run on many nodes (`K-of-N`).
pub(crate) const PARTITIONS_DIR: &str = "partitions";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Partition {
    pub k: u32,
    pub n: u32,
}

/// What `run --partition` asks for: a fixed `K/N`, `slurm` (from the Slurm environment), or
/// `k8s[/N]` (K from a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`; N given, else from the
/// job file's `partitions: k8s/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requested {
    Fixed(Partition),
    Slurm,
    K8s(Option<u32>),
}

impl Requested {
    /// `K/N`, `slurm`, `k8s` or `k8s/N` (the clap value parser of `--partition`).
    pub fn parse(s: &str) -> Result<Requested, String> {
        match s.trim() {
            "slurm" => return Ok(Requested::Slurm),
            "k8s" => return Ok(Requested::K8s(None)),
            _ => {}
        }
        if let Some(n) = s.trim().strip_prefix("k8s/") {
            return parse_count(n).map(|n| Requested::K8s(Some(n)));
        }
        Partition::parse(s).map(Requested::Fixed).map_err(|e| {
            format!(
                "{e}, or `slurm` (from the Slurm array task or srun step), or `k8s/N` (K from a Kubernetes Indexed Job)"
            )
        })
    }
}

/// `partitions:` of a job file: the scheduler whose environment gives the partition when `run`
/// has no `--partition` (opt-in; without the key the job runs whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheduler {
    /// `partitions: slurm`.
    Slurm,
    /// `partitions: k8s/N`: N partitions, K from `JOB_COMPLETION_INDEX`.
    K8s(u32),
}

impl Scheduler {
    /// `slurm` or `k8s/N` (the value of `partitions:`; the error says what to write instead).
    pub fn parse(s: &str) -> Result<Scheduler, String> {
        match s.trim() {
            "slurm" => Ok(Scheduler::Slurm),
            "k8s" => Err("`k8s` needs the number of partitions: write `partitions: k8s/N` with N the Indexed Job's `completions`".into()),
            v => match v.strip_prefix("k8s/") {
                Some(n) => parse_count(n).map(Scheduler::K8s),
                None => Err(format!(
                    "`{v}` is not `slurm` or `k8s/N`; write `partitions: slurm` (a Slurm array task or srun step) or `partitions: k8s/N` (a Kubernetes Indexed Job of N completions), or remove the key (the whole job, or `run --partition K/N`)"
                )),
            },
        }
    }

    /// As written in a job file (`slurm`, `k8s/4`).
    pub fn as_yaml(self) -> String {
        match self {
            Scheduler::Slurm => "slurm".into(),
            Scheduler::K8s(n) => format!("k8s/{n}"),
        }
    }
}

/// The N of `k8s/N`: a number of partitions from 1 to 100000.
fn parse_count(n: &str) -> Result<u32, String> {
    match n.trim().parse::<u32>() {
        Ok(v) if (1..=100_000).contains(&v) => Ok(v),
        _ => Err(format!(
            "`k8s/{n}`: N must be a number of partitions from 1 to 100000 (the Indexed Job's `completions`)"
        )),
    }
}

/// Where a partition came from, for the first log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// The whole job in one coordinator (no flag, no opt-in to Slurm partitioning).
    Whole,
    /// Partitioning from Slurm was asked for, but there is no array task or srun step of
    /// several tasks: the whole job.
    WholeNoSlurm,
    /// A Kubernetes Indexed Job: its index, N and where N came from.
    K8s(String),
    /// `--partition K/N`.
    Flag,
    /// A Slurm array task: the variables and their values.
    SlurmArray(String),
    /// An `srun` step with one task per node.
    Srun(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Whole => f.write_str(
                "the whole job, since neither --partition nor `partitions:` in the job file asks for a partition",
            ),
            Source::WholeNoSlurm => f.write_str(
                "the whole job: partitions from Slurm were asked for, but this is no Slurm array task or srun step of several tasks",
            ),
            Source::Flag => f.write_str("--partition"),
            Source::SlurmArray(v) => write!(f, "the Slurm array task ({v})"),
            Source::K8s(v) => write!(f, "the Kubernetes Indexed Job ({v})"),
            Source::Srun(v) => write!(f, "the srun step ({v})"),
        }
    }
}

impl Partition {
    pub const WHOLE: Partition = Partition { k: 0, n: 1 };

    /// `K/N` with `K < N`.
    pub fn parse(s: &str) -> Result<Partition, String> {
        let bad = || format!("`{s}` is not K/N with 0 <= K < N (e.g. 2/8)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k: u32 = k.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        if n == 0 || k >= n || n > 100_000 {
            return Err(bad());
        }
        Ok(Partition { k, n })
    }

    pub fn is_whole(self) -> bool {
        self.n == 1
    }

    /// `K-of-N`, the name of its folder under `OUT/partitions/`.
    pub fn tag(self) -> String {
        format!("{}-of-{}", self.k, self.n)
    }

    /// Where the coordinator of this partition keeps its state (DB, lock, status.json) in the
    /// out dir `out`: `out` itself for the whole job (the layout of a one-node run), else
    /// `out/partitions/K-of-N/` with the same names inside.
    pub fn state_dir(self, out: &Path) -> PathBuf {
        if self.is_whole() {
            out.to_path_buf()
        } else {
            out.join(PARTITIONS_DIR).join(self.tag())
        }
    }

    /// Parses a [`Partition::tag`].
    pub fn from_tag(tag: &str) -> Option<Partition> {
        let (k, n) = tag.split_once("-of-")?;
        Partition::parse(&format!("{k}/{n}")).ok()
    }

    /// The shard ids it owns in a plan of `shards` shards.
    pub fn shards(self, shards: u64) -> Range<u64> {
        let at = |k: u64| ((k as u128 * shards as u128) / self.n as u128) as u64;
        at(self.k as u64)..at(self.k as u64 + 1)
    }

    /// The sample indices `[a, b)` it owns in a job of `num_samples` in shards of `shard_size`.
    pub fn samples(self, num_samples: u64, shard_size: u64) -> (u64, u64) {
        let r = self.shards(num_samples.div_ceil(shard_size));
        (
            (r.start * shard_size).min(num_samples),
            (r.end * shard_size).min(num_samples),
        )
    }

    /// From the flag `K/N`; else, when asked for (`--partition slurm|k8s[/N]`, or `partitions:`
    /// in the job file: `yaml`), from the scheduler's environment: Slurm's array task, else its
    /// `srun` step; a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`; else the whole job. It is
    /// opt-in: a plain `run` inside an array task (a sweep, one job per task) runs its whole job,
    /// and `JOB_COMPLETION_INDEX` is read only when `k8s` is asked for.
    pub fn resolve(
        flag: Option<Requested>,
        yaml: Option<Scheduler>,
    ) -> Result<(Partition, Source), String> {
        Self::resolve_with(flag, yaml, &|k| std::env::var(k).ok())
    }

    fn resolve_with(
        flag: Option<Requested>,
        yaml: Option<Scheduler>,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Partition, Source), String> {
        let k8s = |n: u32, from: String| {
            Self::from_k8s(n, &from, get)
                .map_err(|e| format!("partition from the Kubernetes Indexed Job: {e}"))
        };
        let slurm = match (flag, yaml) {
            (Some(Requested::Fixed(p)), _) => return Ok((p, Source::Flag)),
            (Some(Requested::K8s(Some(n))), _) => return k8s(n, format!("--partition k8s/{n}")),
            (Some(Requested::K8s(None)), Some(Scheduler::K8s(n))) => {
                return k8s(n, format!("`partitions: k8s/{n}` in the job file"))
            }
            (Some(Requested::K8s(None)), _) => return Err(
                "--partition k8s needs the number of partitions: pass --partition k8s/N, or write `partitions: k8s/N` in the job file (N = the Indexed Job's `completions`)".into(),
            ),
            (None, Some(Scheduler::K8s(n))) => {
                return k8s(n, format!("`partitions: k8s/{n}` in the job file"))
            }
            (Some(Requested::Slurm), _) | (None, Some(Scheduler::Slurm)) => true,
            (None, None) => false,
        };
        if !slurm {
            return Ok((Partition::WHOLE, Source::Whole));
        }
        match Self::from_env(get) {
            Ok((p, Source::Whole)) => Ok((p, Source::WholeNoSlurm)),
            Ok(found) => Ok(found),
            Err(e) => Err(format!("partitions from the Slurm environment: {e}")),
        }
    }

    /// Partition `JOB_COMPLETION_INDEX` of `n` (`from`: where `n` came from, for the messages).
    fn from_k8s(
        n: u32,
        from: &str,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Partition, Source), String> {
        let v = get("JOB_COMPLETION_INDEX").ok_or_else(|| {
            format!(
                "JOB_COMPLETION_INDEX is not set, so this is not a pod of an Indexed Job (`completionMode: Indexed`, as in scripts/k8s/indexed-job.yaml); run it in one, pass --partition K/N, or drop {from} for the whole job"
            )
        })?;
        let k: u64 = v
            .trim()
            .parse()
            .map_err(|_| format!("JOB_COMPLETION_INDEX={v} is not a number"))?;
        if k >= u64::from(n) {
            return Err(format!(
                "JOB_COMPLETION_INDEX={k} is outside the {n} partitions of {from} (indices 0 to {}); set the Indexed Job's `completions` to N",
                n - 1
            ));
        }
        let p = Partition { k: k as u32, n };
        Ok((
            p,
            Source::K8s(format!("JOB_COMPLETION_INDEX={k}, N={n} from {from}")),
        ))
    }

    /// A partition must own at least one shard: `N` above the plan's shard count is refused
    /// with the plan's numbers.
    pub fn check_plan(self, num_samples: u64, shard_size: u64) -> Result<(), String> {
        let shards = num_samples.div_ceil(shard_size);
        if u64::from(self.n) <= shards {
            return Ok(());
        }
        Err(format!(
            "partition {self}: the plan has {shards} shard{} ({num_samples} samples in shards of {shard_size}), so {} of {} partitions would own no shard; use at most {shards} partitions (`fidshard plan JOB.yaml --partitions {shards}`), or a smaller shard_size",
            if shards == 1 { "" } else { "s" },
            u64::from(self.n) - shards,
            self.n
        ))
    }

    fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<(Partition, Source), String> {
        let num = |k: &str| -> Result<Option<u64>, String> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| format!("{k}={v} is not a number")),
            }
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let count = match num("SLURM_ARRAY_TASK_COUNT")? {
                Some(c) => c,
                None => match num("SLURM_ARRAY_TASK_MAX")? {
                    Some(max) => max + 1 - min,
                    None => {
                        return Err("SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX; pass --partition K/N".into())
                    }
                },
            };
            if id < min || id - min >= count {
                return Err(format!(
                    "SLURM_ARRAY_TASK_ID={id} is outside the array (MIN={min}, COUNT={count}); use a contiguous array such as --array=0-{}, or pass --partition K/N",
                    count.saturating_sub(1)
                ));
            }
            let p = Partition::parse(&format!("{}/{count}", id - min))?;
            let vars = format!("SLURM_ARRAY_TASK_ID={id}, MIN={min}, COUNT={count}");
            return Ok((p, Source::SlurmArray(vars)));
        }
        // Inside an `srun` step (not the batch script itself, where SLURM_PROCID is 0 too).
        let in_step = get("SLURM_STEP_ID")
            .is_some_and(|s| s.trim().parse::<u32>().is_ok_and(|v| v < 0xFFFF_FF00));
        if in_step {
            if let (Some(rank), Some(tasks)) = (num("SLURM_PROCID")?, num("SLURM_NTASKS")?) {
                if tasks > 1 {
                    let p = Partition::parse(&format!("{rank}/{tasks}"))?;
                    let vars = format!("SLURM_PROCID={rank}, SLURM_NTASKS={tasks}");
                    return Ok((p, Source::Srun(vars)));
                }
            }
        }
        Ok((Partition::WHOLE, Source::Whole))
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_balanced_and_cover_the_plan_once() {
        for n in 1..=9u32 {
            for total in [0u64, 1, 5, 7, 100, 782, 10_000_000] {
                let ranges: Vec<_> = (0..n).map(|k| Partition { k, n }.shards(total)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges.last().unwrap().end, total);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let sizes: Vec<u64> = ranges.iter().map(|r| r.end - r.start).collect();
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(hi - lo <= 1, "{n} {total} {sizes:?}");
            }
        }
    }

    #[test]
    fn parses_flags_tags_and_the_environment() {
        assert_eq!(Partition::parse("2/8"), Ok(Partition { k: 2, n: 8 }));
        for bad in ["8/8", "1/0", "x/2", "3", "-1/2"] {
            assert!(Partition::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Partition::from_tag("1-of-3"),
            Some(Partition { k: 1, n: 3 })
        );
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let (p, s) = Partition::from_env(&env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "5"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
        ]))
        .unwrap();
        assert_eq!(
            (p, matches!(s, Source::SlurmArray(_))),
            (Partition { k: 2, n: 3 }, true)
        );
        let (p, _) = Partition::from_env(&env(&[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]))
        .unwrap();
        assert_eq!(p, Partition { k: 1, n: 4 });
        // srun step: rank / tasks; the batch script alone (no step id) is the whole job.
        let (p, s) = Partition::from_env(&env(&[
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
        ]))
        .unwrap();
        assert_eq!(
            (p, matches!(s, Source::Srun(_))),
            (Partition { k: 1, n: 2 }, true)
        );
        let (p, s) =
            Partition::from_env(&env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8")])).unwrap();
        assert_eq!((p, s), (Partition::WHOLE, Source::Whole));
        assert!(Partition::from_env(&env(&[("SLURM_ARRAY_TASK_ID", "x")])).is_err());
    }

    #[test]
    fn the_flag_takes_k_n_or_slurm_and_a_partition_needs_a_shard() {
        assert_eq!(Requested::parse("slurm"), Ok(Requested::Slurm));
        assert_eq!(
            Requested::parse("1/4"),
            Ok(Requested::Fixed(Partition { k: 1, n: 4 }))
        );
        assert!(Requested::parse("slurm/2").unwrap_err().contains("`slurm`"));
        // Neither the flag nor the file: the whole job, whatever the environment says.
        assert_eq!(
            Partition::resolve(None, None),
            Ok((Partition::WHOLE, Source::Whole))
        );
        let p = Partition { k: 1, n: 3 };
        assert_eq!(
            Partition::resolve(Some(Requested::Fixed(p)), Some(Scheduler::Slurm))
                .unwrap()
                .0,
            p
        );
        assert!(p.check_plan(12, 4).is_ok());
        let err = Partition { k: 0, n: 4 }.check_plan(12, 4).unwrap_err();
        assert!(
            err.contains("3 shards (12 samples in shards of 4)"),
            "{err}"
        );
        assert!(err.contains("1 of 4 partitions"), "{err}");
    }

    #[test]
    fn k8s_takes_k_from_the_completion_index_and_n_from_the_flag_or_the_file() {
        assert_eq!(Requested::parse("k8s"), Ok(Requested::K8s(None)));
        assert_eq!(Requested::parse("k8s/4"), Ok(Requested::K8s(Some(4))));
        assert!(Requested::parse("k8s/0")
            .unwrap_err()
            .contains("1 to 100000"));
        assert!(Requested::parse("2/x").unwrap_err().contains("`k8s/N`"));
        assert_eq!(Scheduler::parse("k8s/3"), Ok(Scheduler::K8s(3)));
        assert_eq!(Scheduler::parse(" slurm "), Ok(Scheduler::Slurm));
        assert!(Scheduler::parse("k8s").unwrap_err().contains("k8s/N"));
        assert!(Scheduler::parse("1/4")
            .unwrap_err()
            .contains("`slurm` or `k8s/N`"));
        assert_eq!(Scheduler::K8s(3).as_yaml(), "k8s/3");

        let pod =
            |v: &'static str| move |k: &str| (k == "JOB_COMPLETION_INDEX").then(|| v.to_string());
        let (p, s) =
            Partition::resolve_with(Some(Requested::K8s(Some(3))), None, &pod("2")).unwrap();
        assert_eq!(p, Partition { k: 2, n: 3 });
        assert_eq!(
            s.to_string(),
            "the Kubernetes Indexed Job (JOB_COMPLETION_INDEX=2, N=3 from --partition k8s/3)"
        );
        // N from the job file, with the flag or without it; the flag's N wins.
        let yaml = Some(Scheduler::K8s(4));
        for flag in [None, Some(Requested::K8s(None))] {
            let (p, s) = Partition::resolve_with(flag, yaml, &pod("1")).unwrap();
            assert_eq!(p, Partition { k: 1, n: 4 });
            assert!(
                s.to_string()
                    .contains("`partitions: k8s/4` in the job file"),
                "{s}"
            );
        }
        let (p, _) =
            Partition::resolve_with(Some(Requested::K8s(Some(2))), yaml, &pod("1")).unwrap();
        assert_eq!(p, Partition { k: 1, n: 2 });
        // A fixed flag wins over the file, and never reads the index.
        let (p, s) = Partition::resolve_with(
            Some(Requested::Fixed(Partition { k: 0, n: 2 })),
            yaml,
            &pod("x"),
        )
        .unwrap();
        assert_eq!((p, s), (Partition { k: 0, n: 2 }, Source::Flag));
        // Opt-in: the index alone (or with `partitions: slurm`) is not read.
        assert_eq!(
            Partition::resolve_with(None, None, &pod("1")),
            Ok((Partition::WHOLE, Source::Whole))
        );
        assert_eq!(
            Partition::resolve_with(None, Some(Scheduler::Slurm), &pod("1")),
            Ok((Partition::WHOLE, Source::WholeNoSlurm))
        );
    }

    #[test]
    fn k8s_errors_name_the_variable_and_both_values() {
        let pod =
            |v: &'static str| move |k: &str| (k == "JOB_COMPLETION_INDEX").then(|| v.to_string());
        let no_n =
            Partition::resolve_with(Some(Requested::K8s(None)), None, &pod("0")).unwrap_err();
        assert!(no_n.contains("--partition k8s/N"), "{no_n}");
        assert!(no_n.contains("`partitions: k8s/N`"), "{no_n}");
        let slurm_yaml = Partition::resolve_with(
            Some(Requested::K8s(None)),
            Some(Scheduler::Slurm),
            &pod("0"),
        );
        assert!(slurm_yaml.is_err());
        let out =
            Partition::resolve_with(Some(Requested::K8s(Some(3))), None, &pod("3")).unwrap_err();
        assert!(
            out.contains("JOB_COMPLETION_INDEX=3 is outside the 3 partitions of --partition k8s/3"),
            "{out}"
        );
        assert!(out.contains("`completions`"), "{out}");
        let nan = Partition::resolve_with(None, Some(Scheduler::K8s(2)), &pod("a")).unwrap_err();
        assert!(
            nan.contains("JOB_COMPLETION_INDEX=a is not a number"),
            "{nan}"
        );
        let unset = Partition::resolve_with(None, Some(Scheduler::K8s(2)), &|_| None).unwrap_err();
        assert!(unset.contains("JOB_COMPLETION_INDEX is not set"), "{unset}");
        assert!(unset.contains("`completionMode: Indexed`"), "{unset}");
    }
}
