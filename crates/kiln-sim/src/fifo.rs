//! The baseline: strict arrival order, and the first job that cannot start
//! blocks everyone behind it (no backfilling, no queues, no preemption).
//! Each task goes on the first node with room; a gang starts whole or not
//! at all. This is what a plain FIFO batch queue does, and what kiln's
//! policy must beat to be worth its complexity.

use kiln_sched::{JobRequest, Node, Placed};

use crate::ledger::Ledger;

/// The jobs to start now, in order: a prefix of `waiting` (sorted by
/// arrival). `ledger` is what is held now; it is not changed.
pub fn pass(nodes: &[Node], ledger: &Ledger, waiting: &[JobRequest]) -> Vec<(u64, Vec<Placed>)> {
    let mut world = ledger.clone();
    let mut starts = Vec::new();
    for job in waiting {
        match world.first_fit_all(nodes, job) {
            Some(tasks) => starts.push((job.key, tasks)),
            None => break,
        }
    }
    starts
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kiln_sched::{Gpu, TaskRequest};

    pub(crate) fn node(name: &str, gpus: u32) -> Node {
        Node {
            name: name.into(),
            cpus: 8,
            memory_mb: 1000,
            gpus: (0..gpus)
                .map(|index| Gpu {
                    index,
                    model: "T4".into(),
                    memory_mb: 0,
                })
                .collect(),
        }
    }

    pub(crate) fn job(key: u64, gpus: &[u32]) -> JobRequest {
        JobRequest {
            key,
            seq: key,
            label: format!("j{key}"),
            tasks: gpus
                .iter()
                .enumerate()
                .map(|(i, g)| TaskRequest {
                    id: format!("worker-{i}"),
                    cpus: 1,
                    memory_mb: 10,
                    gpus: *g,
                    gpu_type: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_head_blocks_everyone_behind_it() {
        let nodes = vec![node("a", 2)];
        let mut ledger = Ledger::new(&nodes);
        let holder = job(0, &[1]);
        assert!(ledger.first_fit_all(&nodes, &holder).is_some());
        // The head wants 2 GPUs, 1 is free: the 1-GPU job behind it waits.
        let starts = pass(&nodes, &ledger, &[job(1, &[2]), job(2, &[1])]);
        assert!(starts.is_empty());
        // Without the head, it starts on the free GPU.
        let starts = pass(&nodes, &ledger, &[job(2, &[1])]);
        assert_eq!(starts.len(), 1);
        assert_eq!(starts[0].1[0].gpus, vec![1]);
    }

    #[test]
    fn first_fit_and_gangs_start_whole_or_not_at_all() {
        let nodes = vec![node("a", 2), node("b", 4)];
        let ledger = Ledger::new(&nodes);
        // 1 GPU goes on a, which then has 1 left: the gang's 2-GPU task goes
        // to b and its 4-GPU task fits nowhere, so the gang and everyone
        // behind it wait.
        let starts = pass(
            &nodes,
            &ledger,
            &[job(0, &[1]), job(1, &[2, 4]), job(2, &[1])],
        );
        assert_eq!(starts.len(), 1, "{starts:?}");
        assert_eq!(starts[0].1[0].node, 0);
        let mut after = ledger.clone();
        assert!(after.first_fit_all(&nodes, &job(1, &[2, 4])).is_some());
        assert_eq!(after.allocated_gpus, 6);
        // A gang that does not fit leaves nothing booked.
        assert!(after.first_fit_all(&nodes, &job(3, &[1])).is_none());
        assert_eq!(after.allocated_gpus, 6);
    }
}
