//! Replays the benchmark's GPU queue (bench/peers.py `gpu`: one node of 4
//! GPUs, every job submitted at once) through kiln's policy and FIFO, in
//! milliseconds, so that a change to the policy can be judged on the
//! bench's own sequence before the bench is run. Reads `gpus duration_ms`
//! lines on stdin; the first argument is a launch delay in ms added to each
//! attempt (what the real hand-over costs).

use std::io::Read;

use kiln_sched::{Gpu, JobRequest, Node, TaskRequest, DEFAULT_QUEUE};
use kiln_sim::recipe::{SimJob, Workload};
use kiln_sim::sim::{run, Config, Policy};

fn main() -> anyhow::Result<()> {
    let delay: u64 = std::env::args().nth(1).map_or(Ok(0), |a| a.parse())?;
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let node = Node {
        name: "vm".into(),
        cpus: 64,
        memory_mb: 65536,
        gpus: (0..4)
            .map(|index| Gpu {
                index,
                model: "fake".into(),
                memory_mb: 0,
            })
            .collect(),
    };
    let mut jobs = Vec::new();
    let mut work_ms = 0;
    for (i, line) in text.lines().enumerate() {
        let mut f = line.split_whitespace();
        let (Some(g), Some(d)) = (f.next(), f.next()) else {
            continue;
        };
        let (g, d): (u32, u64) = (g.parse()?, d.parse()?);
        work_ms += u64::from(g) * d;
        jobs.push(SimJob {
            request: JobRequest {
                key: i as u64,
                seq: i as u64,
                label: format!("gpu{i}"),
                queue: DEFAULT_QUEUE.into(),
                user: "admin".into(),
                tasks: vec![TaskRequest {
                    id: "main-0".into(),
                    cpus: 1,
                    memory_mb: 10,
                    gpus: g,
                    gpu_type: None,
                }],
                ..Default::default()
            },
            arrival: 0,
            duration: d + delay,
        });
    }
    let work = Workload {
        jobs,
        queues: Vec::new(),
        stats: Default::default(),
    };
    let nodes = [node];
    for policy in [Policy::Fifo, Policy::Kiln] {
        let mut cfg = Config::new(policy);
        cfg.grace_secs = delay;
        // This replay's "seconds" are milliseconds: 5 minutes.
        cfg.drain_patience_secs = 300_000;
        let out = run(&nodes, &work, cfg);
        let makespan = out.jobs.iter().filter_map(|j| j.end).max().unwrap_or(0);
        println!(
            "{:>18}: makespan {:>6} ms, occupancy {:.1}%, preemptions {}, lost {:.1} GPU-s",
            policy.name(),
            makespan,
            100.0 * work_ms as f64 / (4.0 * makespan as f64),
            out.preemptions,
            out.lost_gpu_secs / 1000.0,
        );
    }
    Ok(())
}
