//! The scheduler's promises on small, readable cases.

use std::collections::HashMap;

use kiln_sched::{
    plan, schedule, Gpu, GpuQuota, JobRequest, Node, Pass, Placed, Queue, Quota, RunningJob,
    TaskRequest,
};

fn node(name: &str, cpus: u32, gpus: &[&str]) -> Node {
    Node {
        name: name.into(),
        cpus,
        memory_mb: 64 * 1024,
        gpus: gpus
            .iter()
            .enumerate()
            .map(|(i, m)| Gpu {
                index: i as u32,
                model: m.to_string(),
                memory_mb: 16 * 1024,
            })
            .collect(),
    }
}

fn four_gpus() -> Vec<Node> {
    vec![node("local", 16, &["Tesla V100"; 4])]
}

fn task(gpus: u32) -> TaskRequest {
    TaskRequest {
        id: "main-0".into(),
        cpus: 1,
        memory_mb: 1024,
        gpus,
        gpu_type: None,
    }
}

fn job(key: u64, tasks: Vec<TaskRequest>, max: Option<u64>) -> JobRequest {
    JobRequest {
        key,
        label: format!("alice~job{key}"),
        queue: "default".into(),
        priority: 0,
        seq: key,
        tasks,
        max_duration_secs: max,
        ..Default::default()
    }
}

fn running(key: u64, gpus: &[u32], ends_at: Option<u64>) -> RunningJob {
    RunningJob {
        key,
        label: format!("bob~run{key}"),
        queue: "default".into(),
        user: "bob".into(),
        seq: key,
        tasks: vec![Placed {
            node: 0,
            cpus: 1,
            memory_mb: 1024,
            gpus: gpus.to_vec(),
        }],
        ends_at,
        ..Default::default()
    }
}

#[test]
fn a_three_gpu_job_runs_while_a_two_gpu_job_waits_naming_gpus() {
    let nodes = four_gpus();
    let plan = schedule(
        &nodes,
        &[],
        &[job(1, vec![task(3)], None), job(2, vec![task(2)], None)],
        0,
    );
    assert_eq!(plan.start.len(), 1);
    assert_eq!(plan.start[0].key, 1);
    assert_eq!(plan.start[0].tasks[0].gpus, [0, 1, 2]);
    assert_eq!(plan.waiting.len(), 1);
    assert_eq!(
        plan.waiting[0].reason.to_string(),
        "needs 2 GPUs, 1 free; 0 jobs ahead in queue default"
    );

    // When the 3-GPU job ends, the 2-GPU job starts.
    let plan = schedule(&nodes, &[], &[job(2, vec![task(2)], None)], 10);
    assert_eq!(plan.start[0].tasks[0].gpus, [0, 1]);
}

#[test]
fn a_gang_never_starts_partially() {
    // 2×2 GPUs wanted, 3 free: nothing of it starts.
    let nodes = four_gpus();
    let plan = schedule(
        &nodes,
        &[running(9, &[0], None)],
        &[job(1, vec![task(2), task(2)], None)],
        0,
    );
    assert!(plan.start.is_empty());
    assert_eq!(
        plan.waiting[0].reason.to_string(),
        "needs 4 GPUs, 3 free; 0 jobs ahead in queue default"
    );
}

#[test]
fn queue_order_is_priority_then_submission() {
    let nodes = four_gpus();
    let mut low = job(1, vec![task(4)], None);
    low.priority = -1;
    let first = job(2, vec![task(4)], None);
    let second = job(3, vec![task(4)], None);
    let plan = schedule(&nodes, &[], &[low, second, first], 0);
    assert_eq!(plan.start[0].key, 2);
    let waiting: Vec<(u64, String)> = plan
        .waiting
        .iter()
        .map(|w| (w.key, w.reason.to_string()))
        .collect();
    assert_eq!(waiting[0].0, 3);
    assert!(
        waiting[0].1.ends_with("0 jobs ahead in queue default"),
        "{}",
        waiting[0].1
    );
    assert_eq!(waiting[1].0, 1);
    assert!(
        waiting[1].1.ends_with("1 job ahead in queue default"),
        "{}",
        waiting[1].1
    );
}

#[test]
fn gpu_type_is_honoured() {
    let nodes = vec![
        node("a", 8, &["Tesla V100", "Tesla V100"]),
        node("b", 8, &["NVIDIA A100-SXM4-80GB"; 2]),
    ];
    let mut t = task(2);
    t.gpu_type = Some("a100".into());
    let plan = schedule(&nodes, &[], &[job(1, vec![t.clone()], None)], 0);
    assert_eq!(plan.start[0].tasks[0].node, 1);
    t.gpus = 3;
    let plan = schedule(&nodes, &[], &[job(2, vec![t], None)], 0);
    // The task by its id, and counts that agree with their nouns.
    assert_eq!(
        plan.waiting[0].reason.to_string(),
        "can never run here: task main-0 needs 3 a100 GPUs, 1 CPU and 1024 MiB on one node, and no node has that much"
    );
}

#[test]
fn gpus_are_kept_adjacent() {
    let nodes = vec![node("n", 16, &["g"; 8])];
    // Free: 1, 3,4, 6,7 (0, 2, 5 busy). A 2-GPU task takes a tight adjacent pair.
    let busy = running(9, &[0, 2, 5], None);
    let plan = schedule(&nodes, &[busy], &[job(1, vec![task(2)], None)], 0);
    assert_eq!(plan.start[0].tasks[0].gpus, [3, 4]);
}

#[test]
fn backfill_only_when_it_cannot_delay_the_head() {
    let nodes = four_gpus();
    // 3 GPUs busy until t=100; the head wants all 4 and must wait until then.
    let busy = running(9, &[0, 1, 2], Some(100));
    let head = job(1, vec![task(4)], None);
    let short = job(2, vec![task(1)], Some(50)); // ends at 50 < 100: may go first
                                                 // Jobs that may not be preempted start ahead only with that promise.
    let pinned = |mut j: JobRequest| {
        j.preemptible = false;
        j
    };
    let long = pinned(job(3, vec![task(1)], Some(500))); // would still hold a GPU at 100
    let unbounded = pinned(job(4, vec![task(1)], None)); // no bound: never jumps

    let plan = schedule(
        &nodes,
        std::slice::from_ref(&busy),
        &[head.clone(), short.clone()],
        0,
    );
    assert_eq!(plan.start.len(), 1);
    assert_eq!(plan.start[0].key, 2);
    assert!(plan.start[0].backfilled);

    let plan = schedule(
        &nodes,
        std::slice::from_ref(&busy),
        &[head.clone(), long],
        0,
    );
    assert!(plan.start.is_empty());
    assert!(
        plan.waiting[1]
            .reason
            .to_string()
            .starts_with("would delay alice~job1"),
        "{}",
        plan.waiting[1].reason
    );

    let plan = schedule(&nodes, &[busy], &[head, unbounded], 0);
    assert!(plan.start.is_empty());
    assert!(
        plan.waiting[1]
            .reason
            .to_string()
            .starts_with("waiting behind alice~job1"),
        "{}",
        plan.waiting[1].reason
    );
}

#[test]
fn backfill_may_use_what_the_head_will_not_need() {
    // Two nodes; the head needs node a's 4 GPUs. A long job fits on node b.
    let nodes = vec![node("a", 16, &["g"; 4]), node("b", 16, &["g"; 2])];
    let busy = running(9, &[0, 1], Some(100));
    let head = job(1, vec![task(4)], None);
    let mut long = job(2, vec![task(2)], Some(10_000));
    long.tasks[0].cpus = 1;
    let plan = schedule(&nodes, &[busy], &[head, long], 0);
    assert_eq!(plan.start.len(), 1);
    assert_eq!(plan.start[0].key, 2);
    assert_eq!(plan.start[0].tasks[0].node, 1);
}

#[test]
fn a_job_too_big_for_the_cluster_does_not_block_the_queue() {
    let nodes = four_gpus();
    let plan = schedule(
        &nodes,
        &[],
        &[job(1, vec![task(8)], None), job(2, vec![task(1)], None)],
        0,
    );
    assert_eq!(plan.start[0].key, 2);
    assert!(!plan.start[0].backfilled);
    assert!(
        plan.waiting[0]
            .reason
            .to_string()
            .contains("can never run here"),
        "{}",
        plan.waiting[0].reason
    );
}

#[test]
fn memory_and_cpu_shortages_are_named() {
    let nodes = vec![node("n", 4, &[])];
    let mut big = task(0);
    big.cpus = 3;
    let plan = schedule(
        &nodes,
        &[],
        &[job(1, vec![big.clone()], None), job(2, vec![big], None)],
        0,
    );
    assert_eq!(
        plan.waiting[0].reason.to_string(),
        "needs 3 CPUs, 1 free; 0 jobs ahead in queue default"
    );
}

#[test]
fn tasks_of_different_shapes_are_placed_where_best_fit_alone_fails() {
    // Best-fit puts the small-memory 2-GPU task on b (it fills b's GPUs
    // exactly), leaving the 600 MiB task nowhere: only b has the memory.
    // The one placement is the small one on a, the big one on b.
    let mut a = node("a", 8, &["T4"; 4]);
    a.memory_mb = 100;
    let mut b = node("b", 8, &["T4"; 2]);
    b.memory_mb = 1000;
    let nodes = vec![a, b];
    let small_mem = TaskRequest {
        id: "small-0".into(),
        cpus: 2,
        memory_mb: 0,
        gpus: 2,
        gpu_type: None,
    };
    let big_mem = TaskRequest {
        id: "big-0".into(),
        cpus: 1,
        memory_mb: 600,
        gpus: 2,
        gpu_type: None,
    };
    let plan = schedule(&nodes, &[], &[job(1, vec![small_mem, big_mem], None)], 0);
    assert_eq!(plan.start.len(), 1, "{plan:?}");
    let tasks = &plan.start[0].tasks;
    assert_eq!((tasks[0].node, tasks[1].node), (0, 1), "{tasks:?}");
}

fn queue(name: &str, gpus: u64, model: Option<&str>) -> Queue {
    Queue {
        name: name.into(),
        quota: Quota {
            cpus: 4,
            memory_mb: 4096,
            gpus: vec![GpuQuota {
                model: model.map(str::to_owned),
                count: gpus,
            }],
        },
        user_max_gpus: None,
    }
}

#[test]
fn a_reclaimed_borrower_does_not_take_back_what_was_reclaimed() {
    // vision is guaranteed 1 of 4 GPUs, default the other 3. alice's
    // 3-GPU vision job would borrow 2; bob's 3-GPU default job is within
    // default's quota. alice goes first by fair share, but only among jobs
    // that stay within their quota: were she first, she would start on what
    // bob needs, bob would reclaim it, and after her exit the same pass
    // would come round again, forever (tests/preemption.rs found it).
    let nodes = four_gpus();
    let queues = [queue("vision", 1, None)];
    let mut borrower = job(1, vec![task(3)], None);
    borrower.queue = "vision".into();
    borrower.user = "alice".into();
    let mut owner = job(2, vec![task(3)], None);
    owner.user = "bob".into();
    let usage: HashMap<String, f64> = [("bob".to_string(), 5.0)].into_iter().collect();
    let plan = plan(&Pass {
        nodes: &nodes,
        running: &[],
        waiting: &[borrower, owner],
        now: 0,
        queues: &queues,
        usage: &usage,
        now_ms: 0,
        drain_patience_ms: kiln_sched::DRAIN_PATIENCE_MS,
        draining: &HashMap::new(),
    });
    let started: Vec<u64> = plan.start.iter().map(|s| s.key).collect();
    assert_eq!(started, [2], "{plan:?}");
    assert!(plan.preempt.is_empty());
}

#[test]
fn a_job_that_may_not_be_preempted_runs_on_its_quota_s_model() {
    // Best fit puts one GPU on the lone V100; vision's quota is one A100.
    // Rather than wait forever "within quota" on an idle cluster, the job
    // takes an A100.
    let nodes = vec![
        node("a", 8, &["Tesla V100"]),
        node("b", 8, &["NVIDIA A100-SXM4-80GB"; 2]),
    ];
    let queues = [queue("vision", 1, Some("A100"))];
    let mut j = job(1, vec![task(1)], None);
    j.queue = "vision".into();
    j.preemptible = false;
    let plan = plan(&Pass {
        nodes: &nodes,
        running: &[],
        waiting: &[j],
        now: 0,
        queues: &queues,
        usage: &HashMap::new(),
        now_ms: 0,
        drain_patience_ms: kiln_sched::DRAIN_PATIENCE_MS,
        draining: &HashMap::new(),
    });
    assert_eq!(plan.start.len(), 1, "{plan:?}");
    assert_eq!(plan.start[0].tasks[0].node, 1);
    assert!(!plan.start[0].borrowing);
}

/// alice's 4-GPU job waits while her own later 3-GPU job, started on idle
/// GPUs, runs. When one GPU comes free, preempting the 3-GPU job would
/// throw away 3 GPUs × its run so far to save 1 idle GPU × about as long
/// again: she is let finish, and the free GPU is held for the 4-GPU job,
/// not given to the next small job. Past the patience, or for a job of
/// higher priority, the preemption comes at once.
#[test]
fn a_job_lets_its_own_standings_opportunistic_jobs_finish_when_that_wastes_less() {
    let nodes = four_gpus();
    let mut opportunistic = running(2, &[1, 2, 3], None);
    opportunistic.user = "alice".into();
    opportunistic.label = "alice~job2".into();
    opportunistic.opportunistic = true;
    opportunistic.started = 100_000;
    let mut head = job(1, vec![task(4)], None);
    head.user = "alice".into();
    let mut small = job(3, vec![task(1)], None);
    small.user = "alice".into();
    let none = HashMap::new();
    let after = |now_ms: u64, head: &JobRequest, draining: &HashMap<u64, u64>| {
        plan(&Pass {
            nodes: &nodes,
            running: std::slice::from_ref(&opportunistic),
            waiting: &[head.clone(), small.clone()],
            now: now_ms / 1000,
            queues: &[],
            usage: &HashMap::new(),
            now_ms,
            drain_patience_ms: 60_000,
            draining,
        })
    };
    let at = |now_ms: u64, head: &JobRequest| after(now_ms, head, &none);
    // 10 s in: 30 GPU-s lost against about 10 idle.
    let p = at(110_000, &head);
    assert!(p.preempt.is_empty() && p.start.is_empty(), "{p:?}");
    let why = p.waiting[0].reason.to_string();
    assert!(why.starts_with("letting alice~job2 finish"), "{why}");
    assert!(
        matches!(
            p.waiting[0].reason,
            kiln_sched::Reason::Draining {
                until_ms: 160_000,
                ..
            }
        ),
        "{:?}",
        p.waiting[0].reason
    );
    // The bound is carried to the next pass, and holds there even if the
    // victims looked younger then (an earlier bound is never put off).
    let carried = p.draining_after(&none);
    assert_eq!(carried.get(&1), Some(&160_000));
    let earlier: HashMap<u64, u64> = [(1, 130_000)].into_iter().collect();
    let p = after(131_000, &head, &earlier);
    assert_eq!(p.preempt.iter().map(|v| v.key).collect::<Vec<_>>(), [2]);
    // The patience is over: preempted.
    let p = at(160_000, &head);
    assert_eq!(p.preempt.iter().map(|v| v.key).collect::<Vec<_>>(), [2]);
    // A job of higher priority does not wait.
    let mut urgent = head.clone();
    urgent.priority = 10;
    let p = at(110_000, &urgent);
    assert_eq!(p.preempt.iter().map(|v| v.key).collect::<Vec<_>>(), [2]);
}
