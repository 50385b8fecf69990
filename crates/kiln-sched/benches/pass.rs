//! One scheduling pass as the cluster and the queue grow: the growth curve
//! issue 8 asks for (target: 100k waiting jobs on 1k nodes in under 100 ms).
//! The running jobs' keys are below 1,000,000 and the waiting ones above, so
//! 10k nodes (80k running jobs) stay apart from 100k waiting ones.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kiln_sched::{schedule, Gpu, JobRequest, Node, RunningJob, TaskRequest};

fn cluster(n: usize) -> Vec<Node> {
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
fn queue(n: usize) -> Vec<JobRequest> {
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

/// Fills the cluster with the first jobs of the queue, as a busy cluster is.
fn busy(nodes: &[Node], jobs: &[JobRequest]) -> Vec<RunningJob> {
    let plan = schedule(nodes, &[], jobs, 0);
    plan.start
        .into_iter()
        .map(|s| RunningJob {
            key: s.key,
            tasks: s.tasks,
            ends_at: Some(1000 + s.key % 5000),
            ..Default::default()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("pass");
    g.sample_size(10);
    // Every pair of 10 → 10k nodes and 10 → 100k waiting jobs
    // (bench/run writes them into docs/benchmarks.md as one table).
    for nodes in [10, 100, 1_000, 10_000] {
        let cl = cluster(nodes);
        let running = busy(&cl, &queue(nodes * 8));
        for waiting in [10, 1_000, 10_000, 100_000] {
            let q: Vec<JobRequest> = queue(waiting)
                .into_iter()
                .map(|mut j| {
                    j.key += 1_000_000;
                    j
                })
                .collect();
            g.bench_with_input(
                BenchmarkId::from_parameter(format!("{nodes}nodes-{waiting}jobs")),
                &(),
                |b, _| b.iter(|| schedule(black_box(&cl), black_box(&running), black_box(&q), 10)),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
