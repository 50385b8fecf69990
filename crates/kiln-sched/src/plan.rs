//! One scheduling pass: who starts, who is preempted, who waits and why.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::model::{
    model_matches, JobRequest, Node, Placed, Queue, Quota, RunningJob, TaskRequest,
};
use crate::place::{totals, Free, PASS_SEARCH_BUDGET};
use crate::preempt::{drain_until, find_victims, Candidate};
use crate::quota::{borrowers, queue_index, queue_use, with_default, Held, QueueUse};
use crate::reason::{Missing, Place, Reason, Share};

/// A job to start now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    pub key: u64,
    /// One entry per task, in the order of `JobRequest::tasks`.
    pub tasks: Vec<Placed>,
    /// Started ahead of a blocked job with the promise not to delay it
    /// (EASY backfilling: it ends in time, or leaves the head its room).
    pub backfilled: bool,
    /// Started ahead of a blocked job without that promise: a job of higher
    /// standing may preempt it.
    pub opportunistic: bool,
    /// Takes its queue past its quota, on resources others do not use: the
    /// owners may take them back.
    pub borrowing: bool,
}

/// A running job to stop so that a waiting one can start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preempt {
    pub key: u64,
    pub label: String,
    /// The waiting job that needs its resources.
    pub for_key: u64,
    pub for_label: String,
    /// The waiting job's queue takes back its quota; otherwise the victim
    /// had started ahead of a job of higher standing.
    pub reclaim: bool,
}

/// A job that keeps waiting, with the reason people are shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    pub key: u64,
    pub reason: Reason,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub start: Vec<Start>,
    pub preempt: Vec<Preempt>,
    /// Every job not started, in queue order.
    pub waiting: Vec<Waiting>,
    /// Every queue's use before this pass's starts.
    pub queues: Vec<QueueUse>,
}

impl Plan {
    /// What the next pass gets as `Pass::draining`: the bound of every job
    /// this pass let wait for others to finish, never later than the bound
    /// `before` it had. A job that stops waiting that way (it starts,
    /// preempts, or waits for something else) loses its bound, so it may
    /// let others finish again later, under a new one.
    pub fn draining_after(&self, before: &HashMap<u64, u64>) -> HashMap<u64, u64> {
        self.waiting
            .iter()
            .filter_map(|w| match w.reason {
                Reason::Draining { until_ms, .. } => Some((
                    w.key,
                    before.get(&w.key).map_or(until_ms, |b| until_ms.min(*b)),
                )),
                _ => None,
            })
            .collect()
    }
}

/// Everything one pass looks at.
#[derive(Debug, Clone, Copy)]
pub struct Pass<'a> {
    pub nodes: &'a [Node],
    pub running: &'a [RunningJob],
    pub waiting: &'a [JobRequest],
    /// Seconds, the clock of `ends_at` and `max_duration_secs`.
    pub now: u64,
    /// The admin's queues; `default` is added with the rest unless given.
    pub queues: &'a [Queue],
    /// Each user's decayed usage (see `fair`); absent is 0.
    pub usage: &'a HashMap<String, f64>,
    /// Milliseconds, the clock of `RunningJob::started`.
    pub now_ms: u64,
    /// How long at most a job lets opportunistic jobs of its own standing
    /// finish instead of preempting them (`preempt::drain_until`);
    /// [`crate::DRAIN_PATIENCE_MS`] unless a simulation scales time.
    pub drain_patience_ms: u64,
    /// Jobs the last pass let wait for others to finish (`Reason::Draining`)
    /// and until when: the bound holds across passes.
    pub draining: &'a HashMap<u64, u64>,
}

/// Preemption searches per pass: each copies what is free, so a long queue
/// of blocked jobs must not make a pass slow.
const PREEMPT_TRIES: usize = 16;

/// The first blocked job's claim on the future.
struct Reservation<'j> {
    head: &'j JobRequest,
    /// When enough will have ended for it to start; None when that needs a
    /// job without a time bound to end.
    at: Option<u64>,
    /// What will be free at `at`, less what backfilled jobs still hold then.
    world: Free,
}

/// One pass with a single queue that owns everything: the plain case.
pub fn schedule(nodes: &[Node], running: &[RunningJob], waiting: &[JobRequest], now: u64) -> Plan {
    plan(&Pass {
        nodes,
        running,
        waiting,
        now,
        queues: &[],
        usage: &HashMap::new(),
        now_ms: now.saturating_mul(1000),
        drain_patience_ms: crate::preempt::DRAIN_PATIENCE_MS,
        draining: &HashMap::new(),
    })
}

/// Standing among jobs: lower usage first (fair share), then higher
/// priority, then earlier submission.
fn standing(usage: &HashMap<String, f64>, user: &str, priority: i32, seq: u64) -> (f64, i32, u64) {
    (usage.get(user).copied().unwrap_or(0.0), -priority, seq)
}

fn cmp_standing(a: &(f64, i32, u64), b: &(f64, i32, u64)) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
}

/// A job's shape: jobs of one shape fit or fail alike.
type Shape = Vec<(u32, u64, u32, Option<String>)>;

fn shape(job: &JobRequest) -> Shape {
    job.tasks
        .iter()
        .map(|t| (t.cpus, t.memory_mb, t.gpus, t.gpu_type.clone()))
        .collect()
}

pub fn plan(pass: &Pass<'_>) -> Plan {
    let Pass {
        nodes,
        running,
        waiting,
        now,
        usage,
        ..
    } = *pass;
    let queues = with_default(nodes, pass.queues);
    let qi = |name: &str| queue_index(&queues, name);
    let borrowing = borrowers(nodes, &queues, running);
    let uses = queue_use(nodes, &queues, running);
    // Per queue, what its jobs hold within the quota; per queue and user,
    // the GPUs running.
    let mut own: Vec<Held> = vec![Held::default(); queues.len()];
    let mut user_gpus: HashMap<(usize, &str), u64> = HashMap::new();
    let mut free = Free::new(nodes);
    let mut holders: Vec<(Option<u64>, Vec<Placed>)> = Vec::new();
    for r in running {
        for p in &r.tasks {
            free.take(nodes, p);
        }
        let held = Held::of(nodes, &r.tasks);
        let q = qi(&r.queue);
        *user_gpus.entry((q, r.user.as_str())).or_insert(0) += held.gpu_count();
        if !borrowing.get(&r.key).copied().unwrap_or(true) {
            own[q].add(&held);
        }
        let ends = if r.stopping { Some(now) } else { r.ends_at };
        holders.push((ends, r.tasks.clone()));
    }

    // Jobs that would stay within their queue's quota, beside what it holds,
    // go first; jobs that would borrow follow; then fair share, priority,
    // age. Were a would-be borrower first, it would take what another queue
    // reclaimed from it as soon as that came free, and be reclaimed again,
    // forever. A quota as large as the cluster lends nothing to borrow: a
    // job beyond it only waits for room, in its place.
    let cluster = Quota {
        cpus: nodes.iter().map(|n| u64::from(n.cpus)).sum(),
        memory_mb: nodes.iter().map(|n| n.memory_mb).sum(),
        gpus: vec![],
    };
    let cluster_gpus: u64 = nodes.iter().map(|n| n.gpus.len() as u64).sum();
    // GPUs a queue's quota can actually give: an entry naming a model the
    // cluster has fewer of (or none) gives no more than there are. Counted
    // without models, a queue whose quota names absent GPUs sorted its
    // borrowers among jobs within quota, ahead of the owners reclaiming
    // from them (and the liveness property found them taking turns).
    // The cluster's GPUs by model, counted once: a pass over 10,000 nodes
    // must not walk every GPU for every quota entry.
    let mut by_model: HashMap<&str, u64> = HashMap::new();
    for g in nodes.iter().flat_map(|n| &n.gpus) {
        *by_model.entry(g.model.as_str()).or_insert(0) += 1;
    }
    let usable_gpus: Vec<u64> = queues
        .iter()
        .map(|q| {
            q.quota
                .gpus
                .iter()
                .map(|e| {
                    let there: u64 = match e.model.as_deref() {
                        None => cluster_gpus,
                        Some(m) => by_model
                            .iter()
                            .filter(|(model, _)| model_matches(model, m))
                            .map(|(_, n)| n)
                            .sum(),
                    };
                    e.count.min(there)
                })
                .sum()
        })
        .collect();
    let mut order: Vec<(bool, (f64, i32, u64), &JobRequest)> = waiting
        .iter()
        .map(|j| {
            let (q, (cpus, mem, gpus)) = (qi(&j.queue), totals(j));
            let (quota, own) = (&queues[q].quota, &own[q]);
            let borrows = |has: u64, need: u64, quota: u64, all: u64| {
                need > 0 && has + need > quota && quota < all
            };
            let over = borrows(own.gpu_count(), gpus, usable_gpus[q], cluster_gpus)
                || borrows(own.cpus, cpus, quota.cpus, cluster.cpus)
                || borrows(own.memory_mb, mem, quota.memory_mb, cluster.memory_mb);
            (over, standing(usage, &j.user, j.priority, j.seq), j)
        })
        .collect();
    order.sort_by(|a, b| a.0.cmp(&b.0).then(cmp_standing(&a.1, &b.1)));
    // Whether a queue's quota leaves others anything to lend it.
    let lends: Vec<bool> = queues
        .iter()
        .enumerate()
        .map(|(i, q)| {
            q.quota.cpus < cluster.cpus
                || q.quota.memory_mb < cluster.memory_mb
                || usable_gpus[i] < cluster_gpus
        })
        .collect();

    let mut ahead_in_queue: HashMap<&str, usize> = HashMap::new();
    let mut plan = Plan {
        queues: uses.clone(),
        ..Default::default()
    };
    let mut reservation: Option<Reservation> = None;
    // Whether a job can ever run depends only on the shape of its tasks, and
    // a queue holds few shapes: each is searched once per pass.
    let mut never: HashMap<&[TaskRequest], Option<Reason>> = HashMap::new();
    // Free only shrinks during a pass: a shape that found no room now will
    // not find it later in the same pass.
    let mut no_room: HashSet<Shape> = HashSet::new();
    // Free GPUs per wanted model, for pending reasons; valid until the next
    // start changes what is free.
    let mut free_of_type: HashMap<Option<&str>, u64> = HashMap::new();
    let mut claimed: HashSet<u64> = HashSet::new();
    let mut tries = PREEMPT_TRIES;
    // Running jobs that could ever be anyone's victims in this pass:
    // stopping ones, and those that may be preempted and borrow or started
    // opportunistically. Usually none, and then no search runs at all.
    let pool: Vec<&RunningJob> = running
        .iter()
        .filter(|r| {
            r.stopping
                || (r.preemptible
                    && (r.opportunistic || borrowing.get(&r.key).copied().unwrap_or(true)))
        })
        .collect();
    let mut no_victims: HashSet<(Shape, usize)> = HashSet::new();
    let mut search_left = PASS_SEARCH_BUDGET;

    // Whether a job borrows GPUs is known only once it is placed: a job
    // sorted among those within quota that turns out to borrow because its
    // quota names models it did not get goes to the borrowers' round
    // instead, so that it never takes what an owner is reclaiming before
    // the owner.
    let (first, mut borrowers_round): (Vec<_>, Vec<_>) = order.into_iter().partition(|o| !o.0);
    let mut deferred = Vec::new();
    let mut round: std::collections::VecDeque<_> = first.into();
    let mut second_round = false;
    loop {
        let Some((_, my_standing, job)) = round.pop_front() else {
            if second_round {
                break;
            }
            second_round = true;
            borrowers_round.append(&mut deferred);
            borrowers_round.sort_by(|a, b| cmp_standing(&a.1, &b.1));
            round = std::mem::take(&mut borrowers_round).into();
            continue;
        };
        let ahead = ahead_in_queue.entry(job.queue.as_str()).or_insert(0);
        let position = *ahead;
        let q = qi(&job.queue);
        // A lab without queues of its own has nothing to say about shares.
        let share = Some(q)
            .filter(|_| !pass.queues.is_empty())
            .and_then(|q| Share::of(&uses[q]));
        let place_in = |share: &Option<Share>| Place {
            ahead: position,
            queue: job.queue.clone(),
            share: share.clone(),
        };
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
        let need_gpus = totals(job).2;
        {
            if let Some(max) = queues[q].user_max_gpus {
                let has = user_gpus.get(&(q, job.user.as_str())).copied().unwrap_or(0);
                if need_gpus > 0 && has + need_gpus > max {
                    plan.waiting.push(Waiting {
                        key: job.key,
                        reason: Reason::UserLimit {
                            user: job.user.clone(),
                            limit: max,
                            running: has,
                            need: need_gpus,
                            queue: place_in(&None),
                        },
                    });
                    *ahead += 1;
                    continue;
                }
            }
        }
        let within = |held: &Held| {
            let mut next = own[q].clone();
            next.add(held);
            queues[q].quota.holds(&next)
        };

        // Within its quota by GPU count (so sorted among such jobs), yet
        // borrowing once placed, because its quota names models it did not
        // get.
        let borrows_by_model = |tasks: &[Placed]| {
            let mut next = own[q].clone();
            next.add(&Held::of(nodes, tasks));
            let gpus_only = Held {
                gpus: next.gpus.clone(),
                ..Held::default()
            };
            next.gpu_count() <= usable_gpus[q] && !queues[q].quota.holds(&gpus_only)
        };
        let job_shape = shape(job);
        let placed = if no_room.contains(&job_shape) {
            None
        } else {
            let p = free.place_within(nodes, job, &mut search_left);
            if p.is_none() {
                no_room.insert(job_shape);
            }
            p
        };
        if let Some(mut tasks) = placed {
            if !second_round && lends[q] && job.preemptible && borrows_by_model(&tasks) {
                match on_quota_models(nodes, &mut free, &queues[q].quota, job, &tasks) {
                    Some(t) => tasks = t,
                    None => {
                        free_back(nodes, &mut free, &tasks);
                        deferred.push((true, my_standing, job));
                        continue;
                    }
                }
            }
            if !job.preemptible && !within(&Held::of(nodes, &tasks)) {
                if let Some(t) = on_quota_models(nodes, &mut free, &queues[q].quota, job, &tasks) {
                    tasks = t;
                }
            }
            let outcome = if !job.preemptible && !within(&Held::of(nodes, &tasks)) {
                free_back(nodes, &mut free, &tasks);
                Err(Reason::OverQuota {
                    need: need_gpus,
                    queue: place_in(&share),
                })
            } else if let Some(res) = &mut reservation {
                let allowed = |t: &[Placed]| job.preemptible || within(&Held::of(nodes, t));
                behind_head(nodes, &mut free, res, job, tasks, ends_at, &allowed).map_err(|head| {
                    match (head, ends_at) {
                        (head, None) => Reason::BehindHead {
                            head,
                            queue: place_in(&share),
                        },
                        (head, Some(_)) => Reason::WouldDelay {
                            head,
                            queue: place_in(&share),
                        },
                    }
                })
            } else {
                Ok((tasks, false, false))
            };
            match outcome {
                Ok((tasks, backfilled, opportunistic)) => {
                    free_of_type.clear();
                    let held = Held::of(nodes, &tasks);
                    let borrowing = !within(&held);
                    *user_gpus.entry((q, job.user.as_str())).or_insert(0) += held.gpu_count();
                    if !borrowing {
                        own[q].add(&held);
                    }
                    holders.push((ends_at, tasks.clone()));
                    plan.start.push(Start {
                        key: job.key,
                        tasks,
                        backfilled,
                        opportunistic,
                        borrowing,
                    });
                }
                Err(reason) => {
                    plan.waiting.push(Waiting {
                        key: job.key,
                        reason,
                    });
                    *ahead += 1;
                }
            }
            continue;
        }

        // No room now: take it from jobs of lower standing, or back from
        // queues that borrow it.
        let no_victims_key = (shape(job), q);
        if tries > 0 && !pool.is_empty() && !no_victims.contains(&no_victims_key) {
            let candidates: Vec<Candidate> = pool
                .iter()
                .copied()
                .filter(|r| !claimed.contains(&r.key))
                .filter_map(|r| {
                    if r.stopping {
                        return Some(Candidate::stopping(r));
                    }
                    if !r.preemptible {
                        return None;
                    }
                    let borrows = borrowing.get(&r.key).copied().unwrap_or(true);
                    let lower = r.opportunistic
                        && cmp_standing(&standing(usage, &r.user, r.priority, r.seq), &my_standing)
                            == Ordering::Greater
                        && (qi(&r.queue) == q || borrows);
                    let reclaim = borrows && qi(&r.queue) != q;
                    (lower || reclaim).then(|| Candidate::victim(r, reclaim && !lower))
                })
                .collect();
            if candidates.is_empty() {
                // Victims only get claimed in a pass, and later jobs of the
                // same shape and queue stand lower: they have none either.
                // (A search that found none is not remembered: that would
                // leave the pass's tries to other shapes, and in the trace
                // simulation doubled the preemptions and the GPUs held idle
                // for them.)
                no_victims.insert(no_victims_key);
            } else {
                tries -= 1;
                if let Some((victims, tasks)) = find_victims(nodes, &free, job, &candidates) {
                    let held = Held::of(nodes, &tasks);
                    let in_quota = within(&held);
                    // Taking quota back is for jobs within their own; nor
                    // may a job that cannot be preempted run beyond it.
                    let allowed =
                        in_quota || (job.preemptible && victims.iter().all(|v| !v.reclaim_only));
                    // Victims below it by age alone, in its own queue, may
                    // be let finish (taking quota back never waits).
                    let by_age_only = victims.iter().all(|v| {
                        v.job.stopping
                            || (!v.reclaim_only && qi(&v.job.queue) == q && {
                                let theirs =
                                    standing(usage, &v.job.user, v.job.priority, v.job.seq);
                                theirs.0 == my_standing.0 && theirs.1 == my_standing.1
                            })
                    });
                    let drain = by_age_only
                        .then(|| {
                            let before = pass.draining.get(&job.key).copied();
                            drain_until(&victims, job, pass.now_ms, pass.drain_patience_ms, before)
                        })
                        .flatten();
                    if allowed {
                        for v in &victims {
                            claimed.insert(v.job.key);
                            if !v.job.stopping && drain.is_none() {
                                plan.preempt.push(Preempt {
                                    key: v.job.key,
                                    label: v.job.label.clone(),
                                    for_key: job.key,
                                    for_label: job.label.clone(),
                                    reclaim: v.reclaim_only,
                                });
                            }
                        }
                        // Hold what is free of its placement for it.
                        for p in &tasks {
                            free.take(nodes, p);
                        }
                        free_of_type.clear();
                        no_room.clear();
                        let jobs = victims.iter().map(|v| v.job.label.clone()).collect();
                        plan.waiting.push(Waiting {
                            key: job.key,
                            reason: match drain {
                                Some(until_ms) => Reason::Draining {
                                    jobs,
                                    until_ms,
                                    queue: place_in(&share),
                                },
                                None => Reason::Preempting {
                                    jobs,
                                    queue: place_in(&share),
                                },
                            },
                        });
                        *ahead += 1;
                        continue;
                    }
                }
            }
        }

        // Blocked for room, whatever its quota: the first such job holds
        // the reservation.
        if reservation.is_none() {
            reservation = Some(reserve(nodes, &free, &holders, job));
        }
        let reason = shortage(nodes, &free, job, &mut free_of_type, place_in(&share));
        plan.waiting.push(Waiting {
            key: job.key,
            reason,
        });
        *ahead += 1;
    }
    plan
}

/// A job that fits what is free, behind a blocked head: it starts with a
/// promise not to delay the head (backfilled), or without one when it may
/// be preempted (opportunistic); otherwise it gives `tasks` back and waits,
/// `Err` naming the head. `Ok` is (placement, backfilled, opportunistic).
///
/// `allowed` says whether a placement may be used: a job that cannot be
/// preempted must stay within its quota wherever backfilling puts it.
fn behind_head(
    nodes: &[Node],
    free: &mut Free,
    res: &mut Reservation<'_>,
    job: &JobRequest,
    tasks: Vec<Placed>,
    ends_at: Option<u64>,
    allowed: &dyn Fn(&[Placed]) -> bool,
) -> Result<(Vec<Placed>, bool, bool), String> {
    if ends_at.is_some_and(|end| res.at.is_some_and(|at| end <= at)) {
        // Ends before the head could start: anything free will do.
        return Ok((tasks, true, false));
    }
    free_back(nodes, free, &tasks);
    if ends_at.is_some() {
        // Still runs then: only if the head starts at `at` all the same.
        // The check replays the placement the pass at `at` will run on the
        // state it will see when every job runs to its bound; jobs that end
        // early change that state, and placement is a heuristic, so the
        // head's start time is a bound under those assumptions.
        if let Some(t) = backfill_beside(nodes, free, res, job, allowed) {
            return Ok((t, true, false));
        }
    }
    if job.preemptible {
        for p in &tasks {
            free.take(nodes, p);
        }
        return Ok((tasks, false, true));
    }
    Err(res.head.label.clone())
}

/// Best fit may pick GPUs of a model the quota does not name, for a job
/// that may run only within it: a placement on the models it names instead
/// (`tasks` given back, the new one taken), or None (nothing changes).
fn on_quota_models(
    nodes: &[Node],
    free: &mut Free,
    quota: &Quota,
    job: &JobRequest,
    tasks: &[Placed],
) -> Option<Vec<Placed>> {
    let named = Free::with_gpus(nodes, |g| {
        quota.gpus.iter().filter(|e| e.count > 0).any(|e| {
            e.model
                .as_deref()
                .is_some_and(|m| model_matches(&g.model, m))
        })
    });
    free_back(nodes, free, tasks);
    match free.intersect(&named).place(nodes, job) {
        Some(t) => {
            for p in &t {
                free.take(nodes, p);
            }
            Some(t)
        }
        None => {
            for p in tasks {
                free.take(nodes, p);
            }
            None
        }
    }
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
    allowed: &dyn Fn(&[Placed]) -> bool,
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
    for tasks in candidates.into_iter().flatten().filter(|t| allowed(t)) {
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
