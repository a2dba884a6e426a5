//! The torchrun habit under Slurm: `srun --ntasks-per-node=8` without one GPU per task starts
//! 8 coordinators on a node, and each one sees (and starts a worker on) every GPU of the node.
//! fidshard wants one task per node; it starts one worker per GPU itself.
use crate::job::devices::WorkerDevice;

/// A warning when this process is one of several Slurm tasks on its node and sees more than one
/// GPU: the other tasks of the node most likely see the same GPUs. `env` reads the environment.
pub(crate) fn warning(
    devices: &[WorkerDevice],
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    env("SLURM_LOCALID")?;
    let (var, tasks) = [
        "SLURM_NTASKS_PER_NODE",
        "SLURM_STEP_TASKS_PER_NODE",
        "SLURM_TASKS_PER_NODE",
    ]
    .into_iter()
    .find_map(|var| Some((var, tasks_on_this_node(&env(var)?)?)))?;
    let gpus = devices
        .iter()
        .filter(|d| matches!(d, WorkerDevice::Gpu(_)))
        .count();
    if tasks < 2 || gpus < 2 {
        return None;
    }
    let visible = env("CUDA_VISIBLE_DEVICES").map_or_else(
        || "CUDA_VISIBLE_DEVICES unset".to_string(),
        |v| format!("CUDA_VISIBLE_DEVICES={v}"),
    );
    Some(format!(
        "{tasks} Slurm tasks on this node ({var}) and this one sees {gpus} GPUs ({visible}): each \
         task is a coordinator that starts a worker on every GPU it sees, so the tasks share the \
         GPUs. Start one task per node (`srun --ntasks-per-node=1`, as scripts/slurm/ do): \
         fidshard starts one worker per GPU itself; or give each task its own GPU \
         (`--gpus-per-task=1`)"
    ))
}

/// The tasks of the first node in Slurm's notation: `8`, `8(x4)`, `2,1`.
fn tasks_on_this_node(value: &str) -> Option<u64> {
    let first = value.split(',').next()?;
    first.split('(').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn check(vars: &[(&str, &str)], gpus: usize) -> Option<String> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let devices: Vec<WorkerDevice> = (0..gpus)
            .map(|i| WorkerDevice::Gpu(i.to_string()))
            .collect();
        warning(&devices, |k| env.get(k).cloned())
    }

    #[test]
    fn several_tasks_of_a_node_that_see_all_its_gpus_are_warned_about() {
        let torchrun = [
            ("SLURM_LOCALID", "3"),
            ("SLURM_NTASKS_PER_NODE", "8"),
            ("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7"),
        ];
        let w = check(&torchrun, 8).expect("a warning");
        assert!(
            w.contains("8 Slurm tasks") && w.contains("sees 8 GPUs"),
            "{w}"
        );
        assert!(w.contains("--ntasks-per-node=1"), "{w}");
        // The step's layout when --ntasks-per-node was not given.
        let step = [
            ("SLURM_LOCALID", "0"),
            ("SLURM_STEP_TASKS_PER_NODE", "4(x2)"),
        ];
        assert!(check(&step, 4).is_some());
        // One GPU per task, one task per node, a batch script (no step), CPU workers: fine.
        assert!(check(&torchrun, 1).is_none());
        assert!(check(&[("SLURM_LOCALID", "0"), ("SLURM_NTASKS_PER_NODE", "1")], 8).is_none());
        assert!(check(&[("SLURM_NTASKS_PER_NODE", "8")], 8).is_none());
        assert!(check(&[], 8).is_none());
        let cpu = [WorkerDevice::Cpu, WorkerDevice::Cpu];
        assert!(warning(&cpu, |k| torchrun
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string()))
        .is_none());
    }
}
