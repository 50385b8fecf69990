//! Property tests of queues, quotas, borrowing, opportunistic starts and
//! preemption, on a small simulator: jobs arrive over time, run a fixed
//! duration once started, and when preempted stop after a grace period and
//! wait again (same key and seq) to run their full duration anew.
//!
//! Nodes hold GPUs of one model each (the cluster has one or two models), so
//! whether a gang fits is decided exactly here by trying every assignment of
//! tasks to nodes; the scheduler's own placement is exact on such nodes for
//! gangs of up to three tasks.

mod ledger;

use std::collections::{BTreeMap, HashMap, HashSet};

use kiln_sched::quota::{borrowers, queue_index, with_default};
use kiln_sched::{
    model_matches, plan, Gpu, GpuQuota, Held, JobRequest, Node, Pass, Placed, Plan, Queue, Quota,
    Reason, RunningJob, TaskRequest, DEFAULT_QUEUE,
};
use proptest::prelude::*;

const MODELS: &[&str] = &["Tesla V100-SXM2-32GB", "NVIDIA A100-SXM4-80GB"];
const TYPES: &[&str] = &["v100", "A100"];
const USERS: &[&str] = &["u0", "u1", "u2", "u3"];
const NAMED: &[&str] = &["qa", "qb", "qc"];

/// Passes a simulation runs at most.
const STEPS: usize = 400;

/// The drain patience of these timelines (their clock steps whole seconds):
/// short enough that a job let waiting on others' opportunistic jobs still
/// settles well within `STEPS`.
const PATIENCE_MS: u64 = 20_000;

#[derive(Debug, Clone)]
struct SimJob {
    req: JobRequest,
    arrive: u64,
    /// How long it runs once started (within its max duration).
    duration: u64,
}

#[derive(Debug, Clone)]
struct Scenario {
    nodes: Vec<Node>,
    queues: Vec<Queue>,
    usage: HashMap<String, f64>,
    jobs: Vec<SimJob>,
    /// Time a preempted job takes to exit.
    grace: u64,
}

fn nodes() -> impl Strategy<Value = Vec<Node>> {
    proptest::collection::vec((2u32..33, 2_000u64..64_000, 0usize..5, 0usize..2), 1..=4).prop_map(
        |ns| {
            ns.into_iter()
                .enumerate()
                .map(|(i, (cpus, memory_mb, gpus, model))| Node {
                    name: format!("n{i}"),
                    cpus,
                    memory_mb,
                    gpus: (0..gpus)
                        .map(|g| Gpu {
                            index: g as u32,
                            model: MODELS[model].into(),
                            memory_mb: 16_000,
                        })
                        .collect(),
                })
                .collect()
        },
    )
}

fn queues() -> impl Strategy<Value = Vec<Queue>> {
    let gpu_quota =
        (proptest::option::weighted(0.3, 0usize..2), 0u64..5).prop_map(|(m, count)| GpuQuota {
            model: m.map(|m| TYPES[m].to_string()),
            count,
        });
    let quota = (
        proptest::collection::vec(gpu_quota, 0..=2),
        0u64..40,
        0u64..80_000,
        proptest::option::weighted(0.2, 1u64..5),
    );
    (
        proptest::collection::vec(quota, 0..=3),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(qs, explicit_default)| {
            let n = qs.len();
            qs.into_iter()
                .enumerate()
                .map(|(i, (gpus, cpus, memory_mb, user_max_gpus))| Queue {
                    // Sometimes the admin sets default's quota too.
                    name: if explicit_default && i + 1 == n {
                        DEFAULT_QUEUE.into()
                    } else {
                        NAMED[i].into()
                    },
                    quota: Quota {
                        cpus,
                        memory_mb,
                        gpus,
                    },
                    user_max_gpus,
                })
                .collect()
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let job = (
        proptest::collection::vec(ledger::task(4), 1..=3),
        0u64..100,                                   // arrival
        1u64..200,                                   // duration
        proptest::option::weighted(0.5, 10u64..200), // max duration
        proptest::bool::weighted(0.8),               // preemptible
        -2i32..3,                                    // priority
        0usize..USERS.len(),
        0usize..4, // queue: one of the admin's, or default
    );
    (
        nodes(),
        queues(),
        proptest::collection::vec(proptest::option::weighted(0.6, 0.0f64..10.0), USERS.len()),
        proptest::collection::vec(job, 1..=12),
        1u64..30,
    )
        .prop_map(|(nodes, queues, usage, jobs, grace)| {
            let names: Vec<String> = queues
                .iter()
                .map(|q| q.name.clone())
                .chain([DEFAULT_QUEUE.to_string()])
                .collect();
            let usage = USERS
                .iter()
                .zip(usage)
                .filter_map(|(u, x)| x.map(|x| (u.to_string(), x)))
                .collect();
            let mut jobs: Vec<_> = jobs.into_iter().collect();
            jobs.sort_by_key(|j| j.1);
            let jobs = jobs
                .into_iter()
                .enumerate()
                .map(
                    |(i, (mut tasks, arrive, duration, max, preemptible, priority, user, q))| {
                        for (t, task) in tasks.iter_mut().enumerate() {
                            task.id = format!("main-{t}");
                        }
                        let key = i as u64 + 1;
                        SimJob {
                            req: JobRequest {
                                key,
                                label: format!("{}~j{key}", USERS[user]),
                                queue: names[q % names.len()].clone(),
                                user: USERS[user].into(),
                                priority,
                                seq: key,
                                tasks,
                                max_duration_secs: max,
                                preemptible,
                            },
                            arrive,
                            duration: max.map_or(duration, |m| duration.min(m)),
                        }
                    },
                )
                .collect();
            Scenario {
                nodes,
                queues,
                usage,
                jobs,
                grace,
            }
        })
}

/// What one pass saw and decided.
struct PassView<'a> {
    sc: &'a Scenario,
    now: u64,
    running: &'a [RunningJob],
    waiting: &'a [JobRequest],
    plan: &'a Plan,
}

/// How a simulation ended.
struct Outcome {
    /// No event was left: every job finished or waits on an empty cluster.
    settled: bool,
    finished: HashSet<u64>,
    /// The jobs still waiting, with their reasons in the last pass.
    left: Vec<(JobRequest, Reason)>,
}

struct Live {
    job: RunningJob,
    /// When it leaves: at its end, or when it exits after being preempted.
    exit_at: u64,
    /// When it would end by itself.
    done_at: u64,
}

/// Runs the scenario for at most `steps` passes; `check` sees every pass,
/// and every state after a pass is applied is checked for allocation.
fn simulate(
    sc: &Scenario,
    steps: usize,
    mut check: impl FnMut(&PassView) -> Result<(), TestCaseError>,
) -> Result<Outcome, TestCaseError> {
    let requests: HashMap<u64, &SimJob> = sc.jobs.iter().map(|j| (j.req.key, j)).collect();
    let mut arrivals: Vec<&SimJob> = sc.jobs.iter().collect();
    arrivals.reverse(); // pop() gives the earliest
    let mut waiting: Vec<JobRequest> = Vec::new();
    let mut live: Vec<Live> = Vec::new();
    let mut finished = HashSet::new();
    let mut now = 0u64;
    let mut last: Option<Plan>;
    let mut draining: HashMap<u64, u64> = HashMap::new();
    for _ in 0..steps {
        while arrivals.last().is_some_and(|j| j.arrive <= now) {
            waiting.push(arrivals.pop().unwrap().req.clone());
        }
        let running: Vec<RunningJob> = live.iter().map(|l| l.job.clone()).collect();
        let p = plan(&Pass {
            nodes: &sc.nodes,
            running: &running,
            waiting: &waiting,
            now,
            queues: &sc.queues,
            usage: &sc.usage,
            now_ms: now * 1000,
            drain_patience_ms: PATIENCE_MS,
            draining: &draining,
        });
        draining = p.draining_after(&draining);
        check(&PassView {
            sc,
            now,
            running: &running,
            waiting: &waiting,
            plan: &p,
        })?;
        // Every waiting job is started or waits, once.
        let mut seen: Vec<u64> = p
            .start
            .iter()
            .map(|s| s.key)
            .chain(p.waiting.iter().map(|w| w.key))
            .collect();
        seen.sort_unstable();
        let mut want: Vec<u64> = waiting.iter().map(|j| j.key).collect();
        want.sort_unstable();
        prop_assert_eq!(seen, want, "each waiting job started or waits, once");

        for s in &p.start {
            let j = requests[&s.key];
            live.push(Live {
                job: RunningJob {
                    key: s.key,
                    label: j.req.label.clone(),
                    tasks: s.tasks.clone(),
                    ends_at: j.req.max_duration_secs.map(|d| now + d),
                    queue: j.req.queue.clone(),
                    user: j.req.user.clone(),
                    priority: j.req.priority,
                    seq: j.req.seq,
                    preemptible: j.req.preemptible,
                    opportunistic: s.opportunistic,
                    stopping: false,
                    started: now * 1000,
                },
                exit_at: now + j.duration,
                done_at: now + j.duration,
            });
        }
        let started: HashSet<u64> = p.start.iter().map(|s| s.key).collect();
        waiting.retain(|j| !started.contains(&j.key));
        for v in &p.preempt {
            let l = live.iter_mut().find(|l| l.job.key == v.key);
            prop_assert!(l.is_some(), "victim {} runs", v.key);
            let l = l.unwrap();
            prop_assert!(!l.job.stopping, "victim {} is not already stopping", v.key);
            l.job.stopping = true;
            l.exit_at = l.exit_at.min(now + sc.grace);
        }
        let running: Vec<RunningJob> = live.iter().map(|l| l.job.clone()).collect();
        ledger::check_allocation(&sc.nodes, &running, |k| &requests[&k].req)?;
        last = Some(p);

        let next = live
            .iter()
            .map(|l| l.exit_at)
            .chain(arrivals.last().map(|j| j.arrive))
            .min();
        let Some(next) = next else {
            let p = last.unwrap();
            let reasons: HashMap<u64, &Reason> =
                p.waiting.iter().map(|w| (w.key, &w.reason)).collect();
            return Ok(Outcome {
                settled: true,
                finished,
                left: waiting
                    .iter()
                    .map(|j| (j.clone(), reasons[&j.key].clone()))
                    .collect(),
            });
        };
        prop_assert!(next >= now);
        now = next;
        let mut i = 0;
        while i < live.len() {
            if live[i].exit_at <= now {
                let l = live.swap_remove(i);
                if l.job.stopping && l.done_at > now {
                    // Preempted: waits again, to run its whole duration.
                    waiting.push(requests[&l.job.key].req.clone());
                } else {
                    finished.insert(l.job.key);
                }
            } else {
                i += 1;
            }
        }
    }
    Ok(Outcome {
        settled: false,
        finished,
        left: Vec::new(),
    })
}

/// What is free per node: CPUs, memory, and free GPUs per model.
#[derive(Debug, Clone)]
struct NodeFree {
    cpus: u64,
    memory_mb: u64,
    gpus: BTreeMap<String, u64>,
}

fn free_after(nodes: &[Node], held: impl IntoIterator<Item = Placed>) -> Vec<NodeFree> {
    let mut busy: HashSet<(usize, u32)> = HashSet::new();
    let mut free: Vec<NodeFree> = nodes
        .iter()
        .map(|n| NodeFree {
            cpus: u64::from(n.cpus),
            memory_mb: n.memory_mb,
            gpus: BTreeMap::new(),
        })
        .collect();
    for p in held {
        free[p.node].cpus -= u64::from(p.cpus);
        free[p.node].memory_mb -= p.memory_mb;
        busy.extend(p.gpus.iter().map(|g| (p.node, *g)));
    }
    for (i, n) in nodes.iter().enumerate() {
        for g in &n.gpus {
            if !busy.contains(&(i, g.index)) {
                *free[i].gpus.entry(g.model.clone()).or_insert(0) += 1;
            }
        }
    }
    free
}

/// Whether the tasks placed on one node fit what is free there. Nodes hold
/// one model each, so a count per model decides it.
fn node_holds(free: &NodeFree, tasks: &[&TaskRequest]) -> bool {
    let cpus: u64 = tasks.iter().map(|t| u64::from(t.cpus)).sum();
    let mem: u64 = tasks.iter().map(|t| t.memory_mb).sum();
    if cpus > free.cpus || mem > free.memory_mb {
        return false;
    }
    let mut left = free.gpus.clone();
    for t in tasks {
        if t.gpus == 0 {
            continue;
        }
        let slot = left.iter_mut().find(|(m, n)| {
            **n >= u64::from(t.gpus) && t.gpu_type.as_deref().is_none_or(|ty| model_matches(m, ty))
        });
        match slot {
            Some((_, n)) => *n -= u64::from(t.gpus),
            None => return false,
        }
    }
    true
}

/// Whether some assignment of the job's tasks to nodes fits `free` and
/// satisfies `ok` (given each task's node).
fn some_placement(
    free: &[NodeFree],
    job: &JobRequest,
    ok: &mut dyn FnMut(&[usize]) -> bool,
) -> bool {
    fn go(
        free: &[NodeFree],
        job: &JobRequest,
        at: &mut Vec<usize>,
        ok: &mut dyn FnMut(&[usize]) -> bool,
    ) -> bool {
        if at.len() == job.tasks.len() {
            let fits = (0..free.len()).all(|n| {
                let here: Vec<&TaskRequest> = job
                    .tasks
                    .iter()
                    .zip(at.iter())
                    .filter(|(_, a)| **a == n)
                    .map(|(t, _)| t)
                    .collect();
                node_holds(&free[n], &here)
            });
            return fits && ok(at);
        }
        for n in 0..free.len() {
            at.push(n);
            if go(free, job, at, ok) {
                return true;
            }
            at.pop();
        }
        false
    }
    go(free, job, &mut Vec::new(), ok)
}

fn fits(free: &[NodeFree], job: &JobRequest) -> bool {
    some_placement(free, job, &mut |_| true)
}

/// Whether the job can ever start on an empty cluster under its queue's
/// rules: it fits, stays within the per-user GPU limit, and if it may not
/// be preempted, some placement of it stays within its queue's quota.
///
/// Placement does not look at quotas: for such a job the scheduler tries
/// its best fit, then a placement on the models its quota names, which
/// misses placements that must mix models (A100:2 and V100:2, a gang of
/// 2+1 GPUs whose best fit takes three A100s). A job that may not be
/// preempted, in a queue whose quota names GPU models, is left out here.
fn can_ever_run(sc: &Scenario, job: &JobRequest) -> bool {
    let empty = free_after(&sc.nodes, []);
    let queues = with_default(&sc.nodes, &sc.queues);
    let q = &queues[queue_index(&queues, &job.queue)];
    let gpus: u64 = job.tasks.iter().map(|t| u64::from(t.gpus)).sum();
    if q.user_max_gpus.is_some_and(|m| gpus > 0 && gpus > m) {
        return false;
    }
    some_placement(&empty, job, &mut |at| {
        if job.preemptible {
            return true;
        }
        if q.quota
            .gpus
            .iter()
            .any(|e| e.model.is_some() && e.count > 0)
        {
            return false;
        }
        let mut held = Held::default();
        for (t, n) in job.tasks.iter().zip(at) {
            held.cpus += u64::from(t.cpus);
            held.memory_mb += t.memory_mb;
            if t.gpus > 0 {
                let model = sc.nodes[*n].gpus[0].model.clone();
                *held.gpus.entry(model).or_insert(0) += u64::from(t.gpus);
            }
        }
        q.quota.holds(&held)
    })
}

/// Whether the admin's quotas together promise more CPUs, memory or GPUs
/// than the cluster has.
fn overcommitted(sc: &Scenario) -> bool {
    let sum = |f: &dyn Fn(&Quota) -> u64| sc.queues.iter().map(|q| f(&q.quota)).sum::<u64>();
    sum(&|q| q.cpus) > sc.nodes.iter().map(|n| u64::from(n.cpus)).sum()
        || sum(&|q| q.memory_mb) > sc.nodes.iter().map(|n| n.memory_mb).sum()
        || sum(&|q| q.gpu_count()) > sc.nodes.iter().map(|n| n.gpus.len() as u64).sum()
}

fn standing(sc: &Scenario, user: &str, priority: i32, seq: u64) -> (f64, i32, u64) {
    (sc.usage.get(user).copied().unwrap_or(0.0), -priority, seq)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// 1. Never over-allocated, GPU models honoured, gangs whole, at every
    /// step, stopping victims included (checked inside `simulate`).
    #[test]
    fn never_over_allocates_while_preempting(sc in scenario()) {
        simulate(&sc, STEPS, |_| Ok(()))?;
    }

    /// 2. No deadlock or starvation: once no more jobs arrive, every job that
    /// can run on the empty cluster runs to completion, and a job that never
    /// fits waits with a reason that says so.
    #[test]
    fn every_job_that_can_run_finishes(sc in scenario()) {
        // Quotas that promise more than the cluster has cannot all be kept:
        // two queues within theirs may reclaim from each other. Only
        // quotas the cluster can keep are held to this.
        if overcommitted(&sc) {
            return Ok(());
        }
        let empty = free_after(&sc.nodes, []);
        let out = simulate(&sc, STEPS, |v| {
            for w in &v.plan.waiting {
                let job = v.waiting.iter().find(|j| j.key == w.key).unwrap();
                prop_assert_eq!(
                    w.reason.never_runs(),
                    !fits(&empty, job),
                    "job {} fits the empty cluster exactly when its reason allows waiting: {}",
                    w.key,
                    w.reason
                );
            }
            Ok(())
        })?;
        prop_assert!(out.settled, "still busy after {} passes", STEPS);
        for j in &sc.jobs {
            let key = j.req.key;
            if out.finished.contains(&key) {
                continue;
            }
            let (_, why) = out.left.iter().find(|(l, _)| l.key == key).unwrap();
            prop_assert!(
                !can_ever_run(&sc, &j.req),
                "job {} could run on the empty cluster but waits: {}",
                key,
                why
            );
        }
    }

    /// 3. Work conservation: after a pass that preempts nothing, no waiting
    /// preemptible job (without a per-user limit in its queue) fits what is
    /// left free after that pass's starts.
    #[test]
    fn idle_resources_are_used(sc in scenario()) {
        simulate(&sc, STEPS, |v| {
            // A job in `Preempting` or `Draining` has its placement set
            // aside for the rest of the pass (what victims free, and what
            // is free of it already), so what looks free here was not free
            // to the jobs behind it: such passes are skipped.
            if !v.plan.preempt.is_empty()
                || v.plan.waiting.iter().any(|w| {
                    matches!(w.reason, Reason::Preempting { .. } | Reason::Draining { .. })
                })
            {
                return Ok(());
            }
            let held = v
                .running
                .iter()
                .flat_map(|r| r.tasks.clone())
                .chain(v.plan.start.iter().flat_map(|s| s.tasks.clone()));
            let free = free_after(&v.sc.nodes, held);
            let queues = with_default(&v.sc.nodes, &v.sc.queues);
            for w in &v.plan.waiting {
                let job = v.waiting.iter().find(|j| j.key == w.key).unwrap();
                let limited = queues[queue_index(&queues, &job.queue)].user_max_gpus.is_some();
                if !job.preemptible || limited || w.reason.never_runs() {
                    continue;
                }
                prop_assert!(
                    !fits(&free, job),
                    "at {} job {} fits what is idle but waits: {}",
                    v.now,
                    w.key,
                    w.reason
                );
            }
            Ok(())
        })?;
    }

    /// 5. Jobs that may not be preempted are never preempted and never
    /// start on borrowed resources.
    #[test]
    fn non_preemptible_jobs_are_safe(sc in scenario()) {
        simulate(&sc, STEPS, |v| {
            for p in &v.plan.preempt {
                let r = v.running.iter().find(|r| r.key == p.key).unwrap();
                prop_assert!(r.preemptible, "non-preemptible job {} preempted", p.key);
            }
            for s in &v.plan.start {
                let job = v.waiting.iter().find(|j| j.key == s.key).unwrap();
                prop_assert!(
                    job.preemptible || !s.borrowing,
                    "non-preemptible job {} started borrowing",
                    s.key
                );
            }
            Ok(())
        })?;
    }

    /// 6. Never preempt for nothing: the job a victim is stopped for waits
    /// in `Preempting`; no job is preempted twice in a pass; and each victim
    /// is one the policy allows (a borrower from another queue, or an
    /// opportunistic start of lower standing).
    #[test]
    fn preemption_is_for_a_waiting_job(sc in scenario()) {
        simulate(&sc, STEPS, |v| {
            let mut seen = HashSet::new();
            for p in &v.plan.preempt {
                prop_assert!(seen.insert(p.key), "job {} preempted twice in a pass", p.key);
                let w = v.plan.waiting.iter().find(|w| w.key == p.for_key);
                prop_assert!(
                    w.is_some_and(|w| matches!(w.reason, Reason::Preempting { .. })),
                    "job {} preempted for {}, which is not waiting in Preempting: {:?}",
                    p.key,
                    p.for_key,
                    w
                );
                let r = v.running.iter().find(|r| r.key == p.key).unwrap();
                let j = v.waiting.iter().find(|j| j.key == p.for_key).unwrap();
                prop_assert!(!r.stopping);
                let queues = with_default(&v.sc.nodes, &v.sc.queues);
                let same_queue = queue_index(&queues, &r.queue) == queue_index(&queues, &j.queue);
                let borrows = borrowers(&v.sc.nodes, &queues, v.running)[&r.key];
                let lower = r.opportunistic
                    && standing(v.sc, &r.user, r.priority, r.seq)
                        .partial_cmp(&standing(v.sc, &j.user, j.priority, j.seq))
                        == Some(std::cmp::Ordering::Greater);
                if p.reclaim {
                    prop_assert!(borrows && !same_queue, "reclaim from {} that does not borrow from another queue", p.key);
                } else {
                    prop_assert!(lower, "job {} preempted for {} of no higher standing", p.key, p.for_key);
                }
            }
            Ok(())
        })?;
    }
}

// 4. The guarantee: a queue gets its quota back within one grace period.

#[derive(Debug, Clone)]
struct Guarantee {
    nodes: Vec<Node>,
    /// Queue qa's GPUs; qb has some of the rest, default the remainder.
    qa: u64,
    qb: u64,
    fillers: Vec<JobRequest>,
    usage: HashMap<String, f64>,
    /// Tasks of the qa job, as a fraction of qa's room (1..=room).
    want: usize,
    priority: i32,
    user: usize,
    preemptible: bool,
    grace: u64,
}

fn one_gpu_tasks(n: usize, cpus: u32, memory_mb: u64) -> Vec<TaskRequest> {
    (0..n)
        .map(|i| TaskRequest {
            id: format!("main-{i}"),
            cpus,
            memory_mb,
            gpus: 1,
            gpu_type: None,
        })
        .collect()
}

fn guarantee() -> impl Strategy<Value = Guarantee> {
    // Every GPU comes with 4 CPUs and 8000 MiB, and a task needs at most
    // that: CPU and memory never stand in the way of a free GPU, nor of a
    // quota (each queue's CPU and memory quota follows its GPUs).
    let nodes = proptest::collection::vec((1usize..=4, 0usize..2), 1..=4).prop_map(|ns| {
        ns.into_iter()
            .enumerate()
            .map(|(i, (gpus, model))| Node {
                name: format!("n{i}"),
                cpus: 4 * gpus as u32,
                memory_mb: 8_000 * gpus as u64,
                gpus: (0..gpus)
                    .map(|g| Gpu {
                        index: g as u32,
                        model: MODELS[model].into(),
                        memory_mb: 16_000,
                    })
                    .collect(),
            })
            .collect::<Vec<Node>>()
    });
    let filler = (
        1usize..=3,
        1u32..=4,
        100u64..=8_000,
        0usize..5, // queue: qa sometimes, mostly others
        -2i32..3,
        0usize..USERS.len(),
        proptest::bool::weighted(0.8),
    );
    (
        nodes,
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(filler, 1..=12),
        proptest::collection::vec(proptest::option::weighted(0.6, 0.0f64..10.0), USERS.len()),
        1usize..=16,
        -2i32..3,
        0usize..USERS.len(),
        proptest::bool::weighted(0.7),
        1u64..30,
    )
        .prop_map(
            |(nodes, qa, qb, fillers, usage, want, priority, user, preemptible, grace)| {
                let total: u64 = nodes.iter().map(|n| n.gpus.len() as u64).sum();
                let qa = 1 + qa % total;
                let qb = qb % (total - qa + 1);
                let fillers = fillers
                    .into_iter()
                    .enumerate()
                    .map(|(i, (n, cpus, mem, q, priority, user, preemptible))| {
                        let key = i as u64 + 1;
                        JobRequest {
                            key,
                            label: format!("{}~f{key}", USERS[user]),
                            queue: ["qa", "qb", "qb", DEFAULT_QUEUE, DEFAULT_QUEUE][q].into(),
                            user: USERS[user].into(),
                            priority,
                            seq: key,
                            tasks: one_gpu_tasks(n, cpus, mem),
                            max_duration_secs: None,
                            preemptible,
                        }
                    })
                    .collect();
                let usage = USERS
                    .iter()
                    .zip(usage)
                    .filter_map(|(u, x)| x.map(|x| (u.to_string(), x)))
                    .collect();
                Guarantee {
                    nodes,
                    qa,
                    qb,
                    fillers,
                    usage,
                    want,
                    priority,
                    user,
                    preemptible,
                    grace,
                }
            },
        )
}

fn queue_of(name: &str, gpus: u64) -> Queue {
    Queue {
        name: name.into(),
        quota: Quota {
            cpus: 4 * gpus,
            memory_mb: 8_000 * gpus,
            gpus: vec![GpuQuota {
                model: None,
                count: gpus,
            }],
        },
        user_max_gpus: None,
    }
}

fn running_of(job: &JobRequest, s: &kiln_sched::Start) -> RunningJob {
    RunningJob {
        key: job.key,
        label: job.label.clone(),
        tasks: s.tasks.clone(),
        ends_at: None,
        queue: job.queue.clone(),
        user: job.user.clone(),
        priority: job.priority,
        seq: job.seq,
        preemptible: job.preemptible,
        opportunistic: s.opportunistic,
        stopping: false,
        started: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// 4. A job of queue qa within qa's unused quota starts at once, or
    /// preemptions are issued for it; passes while the victims stop issue
    /// no more; and once they have exited, the next pass starts it.
    #[test]
    fn a_queue_gets_its_quota_back_within_one_grace(g in guarantee()) {
        let queues = vec![queue_of("qa", g.qa), queue_of("qb", g.qb)];
        let pass = |running: &[RunningJob], waiting: &[JobRequest], now: u64| {
            plan(&Pass {
                nodes: &g.nodes,
                running,
                waiting,
                now,
                queues: &queues,
                usage: &g.usage,
                now_ms: now * 1000,
                drain_patience_ms: PATIENCE_MS,
                draining: &HashMap::new(),
            })
        };
        // Fill the cluster: fillers start (borrowing, opportunistically),
        // and preempt one another with instant exits, until nothing moves.
        let mut running: Vec<RunningJob> = Vec::new();
        let mut waiting = g.fillers.clone();
        for _ in 0..20 {
            let p = pass(&running, &waiting, 0);
            if p.start.is_empty() && p.preempt.is_empty() {
                break;
            }
            for s in &p.start {
                let j = waiting.iter().find(|j| j.key == s.key).unwrap();
                running.push(running_of(j, s));
            }
            waiting.retain(|j| p.start.iter().all(|s| s.key != j.key));
            for v in &p.preempt {
                let i = running.iter().position(|r| r.key == v.key).unwrap();
                running.remove(i);
                waiting.push(g.fillers.iter().find(|f| f.key == v.key).unwrap().clone());
            }
        }
        // qa's use: everything its jobs hold (jobs of qa beyond its quota
        // borrow from others, yet they use qa's quota first).
        let used: u64 = running
            .iter()
            .filter(|r| r.queue == "qa")
            .map(|r| r.tasks.iter().map(|t| t.gpus.len() as u64).sum::<u64>())
            .sum();
        let room = g.qa.saturating_sub(used);
        if room == 0 {
            return Ok(());
        }
        let n = 1 + (g.want - 1) % room as usize;
        let job = JobRequest {
            key: 1000,
            label: format!("{}~qa-job", USERS[g.user]),
            queue: "qa".into(),
            user: USERS[g.user].into(),
            priority: g.priority,
            seq: 1000,
            tasks: one_gpu_tasks(n, 4, 8_000),
            max_duration_secs: None,
            preemptible: g.preemptible,
        };
        let waiting = vec![job.clone()];
        let now = 10;
        let p = pass(&running, &waiting, now);
        if p.start.iter().any(|s| s.key == job.key) {
            return Ok(());
        }
        prop_assert!(
            p.preempt.iter().any(|v| v.for_key == job.key),
            "qa job needs {} of qa's {} free GPUs of quota, neither started nor preempting: {:?}",
            n,
            room,
            p.waiting
        );
        for v in &p.preempt {
            running.iter_mut().find(|r| r.key == v.key).unwrap().stopping = true;
        }
        // While the victims stop: nobody else is preempted, it waits.
        let mid = pass(&running, &waiting, now + g.grace / 2);
        prop_assert!(mid.start.is_empty(), "started before its victims exited");
        prop_assert!(mid.preempt.is_empty(), "more victims while the first stop: {:?}", mid.preempt);
        prop_assert!(matches!(mid.waiting[0].reason, Reason::Preempting { .. }), "{}", mid.waiting[0].reason);
        // They exit; the next pass starts it.
        running.retain(|r| !r.stopping);
        let after = pass(&running, &waiting, now + g.grace);
        prop_assert!(
            after.start.iter().any(|s| s.key == job.key),
            "victims gone, qa job still waits: {}",
            after.waiting[0].reason
        );
    }
}
