//! What both property suites share: the tasks they generate, and the check
//! they make after every pass (what runs fits the nodes).

use std::collections::HashSet;

use kiln_sched::{model_matches, JobRequest, Node, RunningJob, TaskRequest};
use proptest::prelude::*;

/// A task of 1–8 CPUs, up to 16 GB, fewer than `gpus` GPUs, and now and
/// then a GPU model it asks for (`v100` or `A100`).
pub fn task(gpus: u32) -> impl Strategy<Value = TaskRequest> {
    (
        1u32..9,
        100u64..16_000,
        0u32..gpus,
        proptest::option::weighted(0.3, 0usize..2),
    )
        .prop_map(|(cpus, memory_mb, gpus, ty)| TaskRequest {
            id: "main-0".into(),
            cpus,
            memory_mb,
            gpus,
            gpu_type: ty.map(|m| ["v100", "A100"][m].to_string()),
        })
}

/// No GPU given twice, no node's CPUs or memory exceeded, GPU models as
/// asked, every gang whole with each placement the shape of its task.
pub fn check_allocation<'a>(
    nodes: &[Node],
    running: &[RunningJob],
    request: impl Fn(u64) -> &'a JobRequest,
) -> Result<(), TestCaseError> {
    let mut cpus = vec![0u64; nodes.len()];
    let mut mem = vec![0u64; nodes.len()];
    let mut gpus: HashSet<(usize, u32)> = HashSet::new();
    for r in running {
        let req = request(r.key);
        prop_assert_eq!(r.tasks.len(), req.tasks.len(), "gang of {} is whole", r.key);
        for (p, t) in r.tasks.iter().zip(&req.tasks) {
            prop_assert!(p.node < nodes.len());
            prop_assert_eq!(
                (p.cpus, p.memory_mb, p.gpus.len() as u32),
                (t.cpus, t.memory_mb, t.gpus),
                "placement of {} has its task's shape",
                r.key
            );
            cpus[p.node] += u64::from(p.cpus);
            mem[p.node] += p.memory_mb;
            for g in &p.gpus {
                let gpu = nodes[p.node].gpus.iter().find(|x| x.index == *g);
                prop_assert!(gpu.is_some(), "GPU {} exists on node {}", g, p.node);
                if let Some(ty) = &t.gpu_type {
                    prop_assert!(
                        model_matches(&gpu.unwrap().model, ty),
                        "job {} wants {} and got {}",
                        r.key,
                        ty,
                        gpu.unwrap().model
                    );
                }
                prop_assert!(
                    gpus.insert((p.node, *g)),
                    "GPU {} on node {} given twice",
                    g,
                    p.node
                );
            }
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        prop_assert!(
            cpus[i] <= u64::from(n.cpus),
            "node {} CPUs {} > {}",
            i,
            cpus[i],
            n.cpus
        );
        prop_assert!(
            mem[i] <= n.memory_mb,
            "node {} memory {} > {}",
            i,
            mem[i],
            n.memory_mb
        );
    }
    Ok(())
}
