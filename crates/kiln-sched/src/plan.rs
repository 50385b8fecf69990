//! One scheduling pass: who starts, who waits and why.

use std::collections::HashMap;

use serde::Serialize;

use crate::model::{JobRequest, Node, Placed, RunningJob, TaskRequest};
use crate::place::{totals, Free};
use crate::reason::{Missing, Place, Reason};

/// A job to start now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    pub key: u64,
    /// One entry per task, in the order of `JobRequest::tasks`.
    pub tasks: Vec<Placed>,
    /// Started ahead of a job that came first, under the backfill rule.
    pub backfilled: bool,
}

/// A job that keeps waiting, with the reason people are shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    pub key: u64,
    pub reason: Reason,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub start: Vec<Start>,
    /// Every job not started, in queue order.
    pub waiting: Vec<Waiting>,
}

/// The first blocked job's claim on the future.
struct Reservation<'j> {
    head: &'j JobRequest,
    /// When enough will have ended for it to start; None when that needs a
    /// job without a time bound to end.
    at: Option<u64>,
    /// What will be free at `at`, less what backfilled jobs still hold then.
    world: Free,
}

/// Queue order: higher priority first, then earlier submission.
fn in_queue_order(waiting: &[JobRequest]) -> Vec<&JobRequest> {
    let mut order: Vec<&JobRequest> = waiting.iter().collect();
    order.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.seq));
    order
}

pub fn schedule(nodes: &[Node], running: &[RunningJob], waiting: &[JobRequest], now: u64) -> Plan {
    let mut free = Free::new(nodes);
    // Holders of resources with their end times, for the reservation.
    let mut holders: Vec<(Option<u64>, Vec<Placed>)> = Vec::new();
    for r in running {
        for p in &r.tasks {
            free.take(nodes, p);
        }
        holders.push((r.ends_at, r.tasks.clone()));
    }

    let order = in_queue_order(waiting);
    let mut ahead_in_queue: HashMap<&str, usize> = HashMap::new();
    let mut plan = Plan::default();
    let mut reservation: Option<Reservation> = None;
    // Whether a job can ever run depends only on the shape of its tasks, and
    // a queue holds few shapes: each is searched once per pass.
    let mut never: HashMap<&[TaskRequest], Option<Reason>> = HashMap::new();
    // Free GPUs per wanted model, for pending reasons; valid until the next
    // start changes what is free.
    let mut free_of_type: HashMap<Option<&str>, u64> = HashMap::new();

    for job in order {
        let ahead = ahead_in_queue.entry(job.queue.as_str()).or_insert(0);
        let position = *ahead;
        let ends_at = job.max_duration_secs.map(|d| now.saturating_add(d));

        let never_why = never
            .entry(job.tasks.as_slice())
            .or_insert_with(|| never_fits(nodes, job));
        if let Some(why) = never_why.clone() {
            plan.waiting.push(Waiting {
                key: job.key,
                reason: why,
            });
            continue;
        }

        let Some(res) = &mut reservation else {
            // Nobody blocked yet: plain queue order.
            if let Some(tasks) = free.place(nodes, job) {
                free_of_type.clear();
                holders.push((ends_at, tasks.clone()));
                plan.start.push(Start {
                    key: job.key,
                    tasks,
                    backfilled: false,
                });
            } else {
                let reason = shortage(nodes, &free, job, &mut free_of_type, place(position, job));
                reservation = Some(reserve(nodes, &free, &holders, job));
                plan.waiting.push(Waiting {
                    key: job.key,
                    reason,
                });
                *ahead += 1;
            }
            continue;
        };

        // Behind a blocked job: start only without delaying it.
        let started = match ends_at {
            // Ends before the head could start: anything free will do.
            Some(end) if res.at.is_some_and(|at| end <= at) => free.place(nodes, job),
            // Still runs then: only if the head starts at `at` all the same.
            // The check replays the placement the pass at `at` will run on
            // the state it will see when every job runs to its bound. Jobs
            // that end early change that state, and placement is a
            // heuristic, so the head's start time is a bound under those
            // assumptions rather than a guarantee.
            Some(_) => backfill_beside(nodes, &mut free, res, job),
            None => None,
        };
        if let Some(tasks) = started {
            free_of_type.clear();
            holders.push((ends_at, tasks.clone()));
            plan.start.push(Start {
                key: job.key,
                tasks,
                backfilled: true,
            });
            continue;
        }
        let queue = place(position, job);
        let reason = if !free.fits(nodes, job) {
            shortage(nodes, &free, job, &mut free_of_type, queue)
        } else if ends_at.is_none() {
            Reason::BehindHead {
                head: res.head.label.clone(),
                queue,
            }
        } else {
            Reason::WouldDelay {
                head: res.head.label.clone(),
                queue,
            }
        };
        plan.waiting.push(Waiting {
            key: job.key,
            reason,
        });
        *ahead += 1;
    }
    plan
}

fn free_back(nodes: &[Node], free: &mut Free, tasks: &[Placed]) {
    for p in tasks {
        free.give(nodes, p);
    }
}

/// Starts `job` now only if the head still starts at its reserved time: the
/// check runs the same placement the pass at that time will run, on the state
/// it will see, so the promise holds exactly. Tries the plain placement first,
/// then one that keeps off what the head is expected to take.
fn backfill_beside(
    nodes: &[Node],
    free: &mut Free,
    res: &mut Reservation<'_>,
    job: &JobRequest,
) -> Option<Vec<Placed>> {
    // Both placements below are within what is free now: when the totals
    // already say no, skip copying the world (the common case in a full
    // cluster with a long queue).
    let (cpus, mem, gpus) = totals(job);
    if cpus > free.cpus || mem > free.memory_mb || gpus > free.gpus {
        return None;
    }
    let mut keep_off = res.world.clone();
    keep_off.place(nodes, res.head)?;
    let mut candidates = vec![free.place(nodes, job)];
    if let Some(tasks) = &candidates[0] {
        free_back(nodes, free, tasks);
    }
    candidates.push(free.intersect(&keep_off).place(nodes, job));
    for tasks in candidates.into_iter().flatten() {
        for p in &tasks {
            res.world.take(nodes, p);
        }
        if res.world.fits(nodes, res.head) {
            for p in &tasks {
                free.take(nodes, p);
            }
            return Some(tasks);
        }
        free_back(nodes, &mut res.world, &tasks);
    }
    None
}

/// Simulates jobs ending in order of their end times until `head` fits:
/// when, and what the world looks like then.
fn reserve<'j>(
    nodes: &[Node],
    free: &Free,
    holders: &[(Option<u64>, Vec<Placed>)],
    head: &'j JobRequest,
) -> Reservation<'j> {
    let mut world = free.clone();
    let mut ends: Vec<&(Option<u64>, Vec<Placed>)> = holders.iter().collect();
    // Bounded jobs end first, in time order; unbounded ones "at infinity".
    ends.sort_by_key(|(end, _)| end.unwrap_or(u64::MAX));
    let mut i = 0;
    while i < ends.len() {
        // Everything ending at the same moment is gone at that moment.
        let at = ends[i].0;
        while i < ends.len() && ends[i].0 == at {
            free_back(nodes, &mut world, &ends[i].1);
            i += 1;
        }
        if world.fits(nodes, head) {
            return Reservation { head, at, world };
        }
    }
    // Unreachable in practice: never_fits ruled out jobs an empty cluster
    // cannot hold. Promise nothing to anyone behind it.
    Reservation {
        head,
        at: None,
        world: Free::new(&[]),
    }
}

/// A job no amount of waiting can start: too big for every node, or for the
/// whole cluster.
fn never_fits(nodes: &[Node], job: &JobRequest) -> Option<Reason> {
    let mut empty = Free::new(nodes);
    // Only a search that proved there is no placement condemns a job; one
    // that ran out of budget leaves it waiting.
    if empty.could_place(nodes, job) != Some(false) {
        return None;
    }
    for t in &job.tasks {
        let fits_some_node = nodes.iter().any(|n| {
            u64::from(n.cpus) >= u64::from(t.cpus)
                && n.memory_mb >= t.memory_mb
                && n.gpus.iter().filter(|g| t.wants(g)).count() >= t.gpus as usize
        });
        if !fits_some_node {
            return Some(Reason::TaskTooBig {
                task: t.id.clone(),
                gpus: t.gpus,
                gpu_type: t.gpu_type.clone(),
                cpus: t.cpus,
                memory_mb: t.memory_mb,
            });
        }
    }
    let (cpus, memory_mb, gpus) = totals(job);
    Some(Reason::JobTooBig {
        gpus,
        cpus,
        memory_mb,
    })
}

/// What is missing now, in the words of a pending reason. `free_of_type`
/// caches free GPU counts per model between starts.
fn shortage<'j>(
    nodes: &[Node],
    free: &Free,
    job: &'j JobRequest,
    free_of_type: &mut HashMap<Option<&'j str>, u64>,
    queue: Place,
) -> Reason {
    let (cpus, mem, _) = totals(job);
    let mut missing = Vec::new();
    // GPUs per wanted model, so "needs 4 A100 GPUs, 2 free" is exact.
    let mut by_type: Vec<(Option<&str>, u64)> = Vec::new();
    for t in &job.tasks {
        if t.gpus == 0 {
            continue;
        }
        let key = t.gpu_type.as_deref();
        match by_type.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += u64::from(t.gpus),
            None => by_type.push((key, u64::from(t.gpus))),
        }
    }
    for (ty, need) in by_type {
        let have = *free_of_type.entry(ty).or_insert_with(|| {
            let probe = TaskRequest {
                id: String::new(),
                cpus: 0,
                memory_mb: 0,
                gpus: 0,
                gpu_type: ty.map(str::to_owned),
            };
            free.nodes
                .iter()
                .zip(nodes)
                .map(|(n, node)| {
                    n.gpu_free
                        .iter()
                        .zip(&node.gpus)
                        .filter(|(f, g)| **f && probe.wants(g))
                        .count() as u64
                })
                .sum()
        });
        if need > have {
            missing.push(Missing::Gpus {
                gpu_type: ty.map(str::to_owned),
                need,
                free: have,
            });
        }
    }
    if cpus > free.cpus {
        missing.push(Missing::Cpus {
            need: cpus,
            free: free.cpus,
        });
    }
    if mem > free.memory_mb {
        missing.push(Missing::Memory {
            need_mb: mem,
            free_mb: free.memory_mb,
        });
    }
    if missing.is_empty() {
        Reason::Scattered { queue }
    } else {
        Reason::Short { missing, queue }
    }
}

fn place(ahead: usize, job: &JobRequest) -> Place {
    Place {
        ahead,
        queue: job.queue.clone(),
    }
}
