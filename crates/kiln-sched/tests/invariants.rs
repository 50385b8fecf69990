//! Property tests of the scheduler's invariants: it never over-allocates, a
//! gang starts whole or not at all, and backfilling never delays the job at
//! the head of the queue.

mod ledger;

use std::collections::{HashMap, HashSet};

use kiln_sched::{schedule, Gpu, JobRequest, Node, RunningJob};
use proptest::prelude::*;

const MODELS: &[&str] = &["Tesla V100", "A100"];

fn nodes() -> impl Strategy<Value = Vec<Node>> {
    proptest::collection::vec(
        (
            1u32..33,
            1_000u64..64_000,
            proptest::collection::vec(0usize..2, 0..9),
        ),
        1..4,
    )
    .prop_map(|ns| {
        ns.into_iter()
            .enumerate()
            .map(|(i, (cpus, memory_mb, models))| Node {
                name: format!("n{i}"),
                cpus,
                memory_mb,
                gpus: models
                    .into_iter()
                    .enumerate()
                    .map(|(g, m)| Gpu {
                        index: g as u32,
                        model: MODELS[m].into(),
                        memory_mb: 16_000,
                    })
                    .collect(),
            })
            .collect()
    })
}

fn jobs(from: u64) -> impl Strategy<Value = Vec<JobRequest>> {
    proptest::collection::vec(
        (
            proptest::collection::vec(ledger::task(5), 1..4),
            -2i32..3,
            proptest::option::weighted(0.8, 1u64..1000),
            0usize..2,
        ),
        0..16,
    )
    .prop_map(move |js| {
        js.into_iter()
            .enumerate()
            .map(|(i, (tasks, priority, max, q))| JobRequest {
                key: from + i as u64,
                label: format!("u~j{}", from + i as u64),
                queue: ["default", "research"][q].into(),
                priority,
                seq: from + i as u64,
                tasks,
                max_duration_secs: max,
                ..Default::default()
            })
            .collect()
    })
}

/// Jobs started at `now` become running jobs that end after their max duration.
fn run(plan_starts: &[kiln_sched::Start], waiting: &[JobRequest], now: u64) -> Vec<RunningJob> {
    plan_starts
        .iter()
        .map(|s| {
            let j = waiting
                .iter()
                .find(|j| j.key == s.key)
                .expect("started job was waiting");
            RunningJob {
                key: s.key,
                preemptible: j.preemptible,
                queue: j.queue.clone(),
                user: j.user.clone(),
                label: j.label.clone(),
                seq: j.seq,
                priority: j.priority,
                opportunistic: s.opportunistic,
                tasks: s.tasks.clone(),
                ends_at: j.max_duration_secs.map(|d| now + d),
                ..Default::default()
            }
        })
        .collect()
}

/// Runs the system forward: every job runs exactly its max duration.
/// Returns each job's start time.
fn simulate(
    nodes: &[Node],
    mut running: Vec<RunningJob>,
    mut waiting: Vec<JobRequest>,
    requests: &HashMap<u64, JobRequest>,
) -> Result<HashMap<u64, u64>, TestCaseError> {
    let mut started = HashMap::new();
    let mut now = 0u64;
    for _ in 0..200 {
        let plan = schedule(nodes, &running, &waiting, now);
        let new = run(&plan.start, &waiting, now);
        for s in &plan.start {
            started.insert(s.key, now);
        }
        waiting.retain(|j| !started.contains_key(&j.key));
        running.extend(new);
        ledger::check_allocation(nodes, &running, |k| &requests[&k])?;
        let Some(next) = running
            .iter()
            .filter_map(|r| r.ends_at)
            .filter(|e| *e > now)
            .min()
        else {
            break;
        };
        now = next;
        running.retain(|r| r.ends_at.is_none_or(|e| e > now));
    }
    Ok(started)
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn every_job_is_started_or_waits_with_a_reason(nodes in nodes(), first in jobs(0)) {
        let plan = schedule(&nodes, &[], &first, 0);
        let mut seen: Vec<u64> = plan.start.iter().map(|s| s.key).chain(plan.waiting.iter().map(|w| w.key)).collect();
        seen.sort_unstable();
        let mut want: Vec<u64> = first.iter().map(|j| j.key).collect();
        want.sort_unstable();
        prop_assert_eq!(seen, want);
        prop_assert!(plan.waiting.iter().all(|w| !w.reason.to_string().is_empty()));
    }

    #[test]
    fn never_over_allocates_and_gangs_are_whole(nodes in nodes(), first in jobs(0), second in jobs(100)) {
        let requests: HashMap<u64, JobRequest> = first.iter().chain(&second).map(|j| (j.key, j.clone())).collect();
        let plan = schedule(&nodes, &[], &first, 0);
        let running = run(&plan.start, &first, 0);
        ledger::check_allocation(&nodes, &running, |k| &requests[&k])?;
        // A second pass on top of what runs.
        let plan = schedule(&nodes, &running, &second, 5);
        let mut all = running;
        all.extend(run(&plan.start, &second, 5));
        ledger::check_allocation(&nodes, &all, |k| &requests[&k])?;
    }

    #[test]
    fn backfill_never_delays_the_head_job(nodes in nodes(), busy in jobs(0), queue in jobs(100)) {
        // Jobs that may not be preempted start ahead of a blocked job only
        // with the promise not to delay it (opportunistic starts are
        // preempted instead: tests/preemption.rs).
        let pinned = |js: Vec<JobRequest>| -> Vec<JobRequest> {
            js.into_iter().map(|j| JobRequest { preemptible: false, ..j }).collect()
        };
        let (busy, queue) = (pinned(busy), pinned(queue));
        let requests: HashMap<u64, JobRequest> = busy.iter().chain(&queue).map(|j| (j.key, j.clone())).collect();
        let plan = schedule(&nodes, &[], &busy, 0);
        let running = run(&plan.start, &busy, 0);

        let plan = schedule(&nodes, &running, &queue, 0);
        // The head: the first job in queue order left waiting that can ever run.
        let mut order: Vec<&JobRequest> = queue.iter().collect();
        order.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.seq));
        let started: HashSet<u64> = plan.start.iter().map(|s| s.key).collect();
        let head = order.iter().find(|j| {
            !started.contains(&j.key)
                && plan.waiting.iter().any(|w| w.key == j.key && !w.reason.to_string().starts_with("can never run"))
        });
        let Some(head) = head else { return Ok(()) };

        // Alone: only the jobs started ahead of it in plain order.
        let mut ahead = running.clone();
        let plain: Vec<_> = plan.start.iter().filter(|s| !s.backfilled).cloned().collect();
        ahead.extend(run(&plain, &queue, 0));
        let alone = simulate(&nodes, ahead, vec![(*head).clone()], &requests)?;
        let with_all = simulate(&nodes, running, queue.clone(), &requests)?;
        if let Some(t_alone) = alone.get(&head.key) {
            let t_with = with_all.get(&head.key).copied();
            prop_assert!(t_with.is_some_and(|t| t <= *t_alone), "head {} started at {:?} with backfill, {} alone", head.key, t_with, t_alone);
        }
    }
}
