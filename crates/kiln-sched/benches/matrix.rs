//! The clusters and queues of the pass benchmark: A100 nodes (64 CPUs,
//! 512 GiB, 8 GPUs) and a deterministic mix of 1/2/4/8-GPU jobs and
//! 2–16-node gangs, two thirds with a maxDuration. Running jobs' keys are
//! below 1,000,000 and waiting ones above.

#![allow(dead_code)]

use kiln_sched::{schedule, Gpu, JobRequest, Node, RunningJob, TaskRequest};

pub fn cluster(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| Node {
            name: format!("node{i}"),
            cpus: 64,
            memory_mb: 512 * 1024,
            gpus: (0..8)
                .map(|g| Gpu {
                    index: g,
                    model: "NVIDIA A100-SXM4-80GB".into(),
                    memory_mb: 81_920,
                })
                .collect(),
        })
        .collect()
}

/// A deterministic mix: 1, 2, 4, 8-GPU single-node jobs and 2–16-node gangs.
pub fn queue(n: usize) -> Vec<JobRequest> {
    (0..n)
        .map(|i| {
            let kind = (i * 7919) % 10;
            let (tasks, gpus) = match kind {
                0..=3 => (1, 1),
                4 | 5 => (1, 2),
                6 => (1, 4),
                7 | 8 => (1, 8),
                _ => (2 + (i % 15), 8),
            };
            JobRequest {
                key: i as u64,
                label: format!("u~j{i}"),
                queue: "default".into(),
                priority: 0,
                seq: i as u64,
                user: format!("u{}", i % 7),
                tasks: vec![
                    TaskRequest {
                        id: "main-0".into(),
                        cpus: 4 * gpus,
                        memory_mb: 32_768,
                        gpus,
                        gpu_type: None
                    };
                    tasks
                ],
                max_duration_secs: (i % 3 != 0).then_some(3600 + (i as u64 % 7200)),
                preemptible: true,
            }
        })
        .collect()
}

/// Starts the first jobs of the mix until `share` of the GPUs are taken,
/// each ending at a time of its own (so reservations and backfill work).
pub fn busy(nodes: &[Node], share: f64) -> Vec<RunningJob> {
    let total: usize = nodes.iter().map(|n| n.gpus.len()).sum();
    let want = (total as f64 * share) as usize;
    let plan = schedule(nodes, &[], &queue(nodes.len() * 8), 0);
    let mut taken = 0;
    plan.start
        .into_iter()
        .take_while(|s| {
            let g: usize = s.tasks.iter().map(|t| t.gpus.len()).sum();
            let keep = taken + g <= want;
            taken += g;
            keep
        })
        .map(|s| RunningJob {
            key: s.key,
            label: format!("u~r{}", s.key),
            seq: s.key,
            tasks: s.tasks,
            ends_at: Some(1000 + s.key % 5000),
            queue: "default".into(),
            user: format!("u{}", s.key % 7),
            started: 0,
            ..Default::default()
        })
        .collect()
}

pub struct Case {
    pub name: String,
    pub fill: &'static str,
    pub nodes: Vec<Node>,
    pub running: Vec<RunningJob>,
    pub waiting: Vec<JobRequest>,
}

/// Empty, half-busy and full clusters of 1k and 10k nodes, each with 10k
/// and 100k waiting jobs.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for n in [1_000, 10_000] {
        let nodes = cluster(n);
        for (fill, share) in [("empty", 0.0), ("half", 0.5), ("full", 1.0)] {
            let running = if share > 0.0 {
                busy(&nodes, share)
            } else {
                Vec::new()
            };
            for w in [10_000, 100_000] {
                let waiting = queue(w)
                    .into_iter()
                    .map(|mut j| {
                        j.key += 1_000_000;
                        j.seq += 1_000_000;
                        j
                    })
                    .collect();
                out.push(Case {
                    name: format!("{fill}-{n}nodes-{w}jobs"),
                    fill,
                    nodes: nodes.clone(),
                    running: running.clone(),
                    waiting,
                });
            }
        }
    }
    out
}
