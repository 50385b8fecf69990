//! Turning trace pods into kiln jobs. The trace has no queues, users or
//! gangs; this module adds them by a fixed, seeded recipe so that every run
//! sees the same workload (docs/scheduling.md states it in words).

use std::collections::{BTreeMap, HashMap};

use kiln_sched::{Gpu, GpuQuota, JobRequest, Node, Queue, Quota, TaskRequest};

use crate::spec::{spec, Spec};
use crate::trace::{Times, TraceNode, TracePod};
use crate::{Error, Result};

/// The recipe's seed: every hash below mixes it in.
pub const SEED: u64 = 2023;
/// Users jobs are spread over, by hash of the pod name.
pub const USERS: u64 = 32;
/// Queues and their share of the cluster (GPUs, CPUs and memory alike); a
/// user belongs to queue `user % 4`, so each queue gets about a quarter of
/// the jobs whatever its share: the small queues borrow, the big ones lend.
pub const QUEUES: [(&str, u64); 4] = [
    ("team-a", 40),
    ("team-b", 30),
    ("team-c", 20),
    ("team-d", 10),
];
/// Percent of 8-GPU pods that become a gang of two 8-GPU tasks.
pub const GANG8_PERCENT: u64 = 50;
/// Percent of jobs that state a bound on their run time...
pub const BOUNDED_PERCENT: u64 = 30;
/// ...of this many times their real run time (users overestimate).
pub const BOUND_FACTOR: u64 = 2;

/// FNV-1a over the seed, a salt and a name: stable across Rust versions and
/// machines, unlike std's hasher, so the recipe never changes under us.
pub fn hash(salt: &str, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in SEED
        .to_le_bytes()
        .iter()
        .chain(salt.as_bytes())
        .chain([0u8].iter())
        .chain(name.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A job of the simulation: kiln's request plus what only the simulator
/// knows (when it comes, how long it really runs).
#[derive(Debug, Clone)]
pub struct SimJob {
    pub request: JobRequest,
    pub arrival: u64,
    pub duration: u64,
}

/// What the recipe did, for the report: each count is a liberty taken with
/// the trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipeStats {
    pub pods: usize,
    /// Fractional-GPU pods given a whole GPU (kiln does not share GPUs).
    pub fractional: usize,
    /// Multi-model constraints whose models share a substring naming
    /// exactly them: kept exactly.
    pub spec_exact: usize,
    /// Multi-model constraints narrowed to their first model.
    pub spec_narrowed: usize,
    /// Pods that never ran in the trace: they run for as long as they were
    /// around.
    pub never_scheduled: usize,
    /// Pods without times that took them from the same pod in the reference
    /// list, or from a pod chosen by hash.
    pub times_by_name: usize,
    pub times_by_hash: usize,
    pub gangs_of_8x2: usize,
    /// Gangs made of 2- and 4-GPU pods of one arrival minute.
    pub gangs_grouped: usize,
    pub grouped_pods: usize,
    pub bounded: usize,
}

pub struct Workload {
    pub jobs: Vec<SimJob>,
    pub queues: Vec<Queue>,
    pub stats: RecipeStats,
}

/// kiln's nodes from the trace's, keeping every `every`-th node of each
/// shape (model, GPUs, CPUs, memory; at least one of each) so that a
/// smaller cluster keeps the big one's mix. CPUs are whole (milli / 1000,
/// rounded down: a node does not have a CPU it has only part of).
pub fn nodes(trace: &[TraceNode], every: usize) -> Vec<Node> {
    let every = every.max(1);
    let mut seen: HashMap<(&str, u32, u64, u64), usize> = HashMap::new();
    let mut out = Vec::new();
    for n in trace {
        let i = seen
            .entry((n.model.as_str(), n.gpus, n.cpu_milli, n.memory_mib))
            .or_insert(0);
        if (*i).is_multiple_of(every) {
            out.push(Node {
                name: n.name.clone(),
                cpus: u32::try_from(n.cpu_milli / 1000).unwrap_or(u32::MAX),
                memory_mb: n.memory_mib,
                gpus: (0..n.gpus)
                    .map(|index| Gpu {
                        index,
                        model: n.model.clone(),
                        memory_mb: 0,
                    })
                    .collect(),
            });
        }
        *i += 1;
    }
    out
}

/// The queues: each a share of everything the cluster has, any GPU model.
/// kiln adds `default` with the rounding remainder.
pub fn queues(nodes: &[Node]) -> Vec<Queue> {
    let cpus: u64 = nodes.iter().map(|n| u64::from(n.cpus)).sum();
    let mem: u64 = nodes.iter().map(|n| n.memory_mb).sum();
    let gpus: u64 = nodes.iter().map(|n| n.gpus.len() as u64).sum();
    QUEUES
        .iter()
        .map(|(name, pct)| Queue {
            name: (*name).to_owned(),
            quota: Quota {
                cpus: cpus * pct / 100,
                memory_mb: mem * pct / 100,
                gpus: vec![GpuQuota {
                    model: None,
                    count: gpus * pct / 100,
                }],
            },
            user_max_gpus: None,
        })
        .collect()
}

/// Pods without times take them from `reference`: the same pod by name
/// when it is there, else one chosen by hash of the name.
fn times_of(
    pod: &TracePod,
    reference: &HashMap<&str, Times>,
    refs: &[Times],
    stats: &mut RecipeStats,
) -> Result<Times> {
    if let Some(t) = pod.times {
        return Ok(t);
    }
    if let Some(t) = reference.get(pod.name.as_str()) {
        stats.times_by_name += 1;
        return Ok(*t);
    }
    if refs.is_empty() {
        return Err(Error::Input(format!(
            "pod {} has no times and there is no reference list",
            pod.name
        )));
    }
    stats.times_by_hash += 1;
    Ok(refs[(hash("times", &pod.name) % refs.len() as u64) as usize])
}

/// One pod's task, before gangs are formed.
struct Part {
    name: String,
    task: TaskRequest,
    times: Times,
}

/// The jobs of a pod list. `speedup` divides arrival times (run times stay):
/// the trace's load is far below its cluster's size, and this is how a run
/// asks for contention. `reference` gives times to pods that have none.
pub fn build(
    pods: &[TracePod],
    reference: &[TracePod],
    nodes: &[Node],
    speedup: f64,
) -> Result<Workload> {
    let mut stats = RecipeStats {
        pods: pods.len(),
        ..Default::default()
    };
    let mut models: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.gpus.iter().map(|g| g.model.clone()))
        .collect();
    models.sort();
    models.dedup();
    let by_name: HashMap<&str, Times> = reference
        .iter()
        .filter_map(|p| Some((p.name.as_str(), p.times?)))
        .collect();
    let refs: Vec<Times> = reference.iter().filter_map(|p| p.times).collect();

    let mut parts = Vec::with_capacity(pods.len());
    for pod in pods {
        let times = times_of(pod, &by_name, &refs, &mut stats)?;
        if times.scheduled.is_none() {
            stats.never_scheduled += 1;
        }
        if pod.num_gpu > 0 && pod.gpu_milli < 1000 {
            stats.fractional += 1;
        }
        let s = if pod.num_gpu > 0 {
            spec(&pod.gpu_spec, &models)
        } else {
            Spec::Any
        };
        match s {
            Spec::Shared(_) => stats.spec_exact += 1,
            Spec::Narrowed(_) => stats.spec_narrowed += 1,
            _ => {}
        }
        parts.push(Part {
            name: pod.name.clone(),
            task: TaskRequest {
                id: "worker-0".into(),
                cpus: u32::try_from(pod.cpu_milli.div_ceil(1000)).unwrap_or(u32::MAX),
                memory_mb: pod.memory_mib,
                gpus: pod.num_gpu,
                gpu_type: s.gpu_type(),
            },
            times,
        });
    }

    // Gangs of 2- and 4-GPU pods that arrived in the same trace minute, in
    // name order, up to 4 at a time.
    let mut minutes: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, p) in parts.iter().enumerate() {
        if matches!(p.task.gpus, 2 | 4) {
            minutes.entry(p.times.creation / 60).or_default().push(i);
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut grouped = vec![false; parts.len()];
    for (_, mut members) in minutes {
        members.sort_by(|a, b| parts[*a].name.cmp(&parts[*b].name));
        for chunk in members.chunks(4).filter(|c| c.len() >= 2) {
            chunk.iter().for_each(|i| grouped[*i] = true);
            stats.gangs_grouped += 1;
            stats.grouped_pods += chunk.len();
            groups.push(chunk.to_vec());
        }
    }
    for (i, p) in parts.iter().enumerate() {
        if !grouped[i] {
            let copies = if p.task.gpus == 8 && hash("gang8", &p.name) % 100 < GANG8_PERCENT {
                stats.gangs_of_8x2 += 1;
                2
            } else {
                1
            };
            groups.push(vec![i; copies]);
        }
    }

    let mut jobs: Vec<SimJob> = groups
        .iter()
        .map(|g| {
            let first = &parts[g[0]];
            let arrival = g
                .iter()
                .map(|i| parts[*i].times.creation)
                .max()
                .unwrap_or(0);
            let duration = g
                .iter()
                .map(|i| parts[*i].times.duration())
                .max()
                .unwrap_or(1);
            let user_n = hash("user", &first.name) % USERS;
            let queue = QUEUES[(user_n % QUEUES.len() as u64) as usize].0;
            let bounded = hash("bound", &first.name) % 100 < BOUNDED_PERCENT;
            stats.bounded += usize::from(bounded);
            let label = if g.len() > 1 && g[0] != g[1] {
                format!("{}+{}", first.name, g.len() - 1)
            } else {
                first.name.clone()
            };
            SimJob {
                request: JobRequest {
                    label,
                    queue: queue.to_owned(),
                    user: format!("user-{user_n:02}"),
                    tasks: g
                        .iter()
                        .enumerate()
                        .map(|(k, i)| TaskRequest {
                            id: format!("worker-{k}"),
                            ..parts[*i].task.clone()
                        })
                        .collect(),
                    max_duration_secs: bounded.then_some(duration * BOUND_FACTOR),
                    preemptible: true,
                    ..Default::default()
                },
                arrival: (arrival as f64 / speedup.max(1e-9)).round() as u64,
                duration,
            }
        })
        .collect();
    jobs.sort_by(|a, b| (a.arrival, &a.request.label).cmp(&(b.arrival, &b.request.label)));
    for (i, j) in jobs.iter_mut().enumerate() {
        j.request.key = i as u64;
        j.request.seq = i as u64;
    }
    Ok(Workload {
        queues: queues(nodes),
        jobs,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceNode;

    fn pod(name: &str, gpus: u32, milli: u32, spec: &str, creation: u64) -> TracePod {
        TracePod {
            name: name.into(),
            cpu_milli: 1500,
            memory_mib: 100,
            num_gpu: gpus,
            gpu_milli: milli,
            gpu_spec: spec
                .split('|')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            times: Some(Times {
                creation,
                scheduled: Some(creation + 5),
                deletion: creation + 65,
            }),
        }
    }

    fn cluster() -> Vec<Node> {
        let n = |name: &str, gpus, model: &str| TraceNode {
            name: name.into(),
            cpu_milli: 96000,
            memory_mib: 1 << 20,
            gpus,
            model: model.into(),
        };
        nodes(
            &[
                n("a", 8, "V100M16"),
                n("b", 8, "V100M32"),
                n("c", 2, "P100"),
                n("d", 2, "T4"),
            ],
            1,
        )
    }

    #[test]
    fn the_recipe_is_deterministic_and_does_what_it_says() {
        let nodes = cluster();
        let pods = vec![
            pod("p0", 1, 460, "", 0),
            pod("p1", 2, 1000, "", 120),
            pod("p2", 4, 1000, "", 150),
            pod("p3", 8, 1000, "V100M16|V100M32", 200),
            pod("p4", 0, 0, "", 100),
        ];
        let a = build(&pods, &[], &nodes, 2.0).unwrap_or_else(|e| panic!("{e}"));
        let b = build(&pods, &[], &nodes, 2.0).unwrap_or_else(|e| panic!("{e}"));
        let view = |w: &Workload| {
            w.jobs
                .iter()
                .map(|j| (j.request.clone(), j.arrival, j.duration))
                .collect::<Vec<_>>()
        };
        assert_eq!(view(&a), view(&b));
        assert_eq!(a.stats.fractional, 1);
        assert_eq!(a.stats.spec_exact, 1);
        // p1 and p2 came in minute 2: one gang of 2 tasks, arriving with
        // the later (150 s, halved by the speedup).
        assert_eq!(a.stats.gangs_grouped, 1);
        let gang = a
            .jobs
            .iter()
            .find(|j| j.request.tasks.len() == 2 && j.request.tasks[0].gpus == 2);
        assert_eq!(
            gang.map(|g| (g.arrival, g.request.tasks[1].gpus)),
            Some((75, 4))
        );
        // Whole CPUs, rounded up; keys and seqs in arrival order.
        assert!(a
            .jobs
            .iter()
            .all(|j| j.request.tasks.iter().all(|t| t.cpus == 2)));
        assert!(a
            .jobs
            .iter()
            .enumerate()
            .all(|(i, j)| j.request.key == i as u64 && j.request.seq == i as u64));
        assert!(a.jobs.windows(2).all(|w| w[0].arrival <= w[1].arrival));
        // Quotas: 40/30/20/10% of 20 GPUs.
        let q: Vec<u64> = a.queues.iter().map(|q| q.quota.gpu_count()).collect();
        assert_eq!(q, vec![8, 6, 4, 2]);
        assert_eq!(hash("user", "p0"), hash("user", "p0"));
        assert_ne!(hash("user", "p0"), hash("user", "p1"));
    }

    #[test]
    fn pods_without_times_borrow_them() {
        let nodes = cluster();
        let mut bare = pod("p9", 1, 1000, "", 0);
        bare.times = None;
        assert!(build(std::slice::from_ref(&bare), &[], &nodes, 1.0).is_err());
        let w = build(&[bare], &[pod("p9", 1, 1000, "", 500)], &nodes, 1.0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (w.jobs[0].arrival, w.jobs[0].duration, w.stats.times_by_name),
            (500, 60, 1)
        );
    }
}
