//! The scheduling pass beside the loop (issue 19).
//!
//! A pass over a long queue on a large cluster can take seconds. Run on the
//! loop's thread, it made every stop request, task exit and deadline of the
//! installation wait for it. So the pure [`kiln_sched::plan`] runs on one
//! long-lived thread of its own, `kiln-sched`, over an owned [`Snapshot`]
//! the loop takes, and the [`Plan`] comes back as a message on the loop's
//! own channel ([`Msg::Planned`]). The loop goes on handling messages while
//! a pass runs; engine-facing work (holding, rendering, launching) stays on
//! the loop's thread, where the state is.
//!
//! Why a snapshot rather than a pass that yields after a time budget:
//! `plan()` stays one function with no resumable state, so the property
//! tests and the simulator run exactly the code the server runs, and a
//! stale plan is safe, for these reasons.
//!
//! **Applying a stale plan.** At most one pass is in flight, and starts come
//! only from plans (with `Placement::Kiln`), so no two plans ever allocate
//! the same resources. Between the snapshot and the plan's arrival only the
//! loop changes state, and only by
//! - (a) jobs ending, being stopped or preempted, or retrying: this frees
//!   resources (a task restarted in place keeps its own), so a plan
//!   computed on fewer free resources never over-allocates. A preemption of
//!   a job no longer running or already ending is skipped by `preempt()`;
//! - (b) new submissions: not in the plan, they wait for the next pass,
//!   which starts as soon as this plan is applied (`dirty`);
//! - (c) stop requests of waiting jobs: a start, a preemption made for a
//!   job, and a pending reason apply only if that job still waits at the
//!   attempt it had in the snapshot (a job that ended and waits again as a
//!   new attempt was running in the snapshot, so no plan starts it).
//!
//! The argument is also checked where it matters: before a start, a
//! [`Ledger`] of what running jobs hold now refuses any GPU already held or
//! any node filled past its CPUs or memory (an error in the log, and a new
//! pass shortly), since the local engine itself does not check.
//!
//! Should the scheduler thread die (a panic in a pass), its answer still
//! comes (an `Err` plan, by [`Answer`]'s drop) and the loop tries again
//! shortly, starting a new thread; should no thread start, the loop plans
//! on its own thread, as before, with an error in the log.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::Sender;
use std::time::Instant;

use kiln_sched::{Node, Plan, Queue};
use prometheus_client::metrics::histogram::Histogram;
use tracing::debug;

use super::share::QueuesLive;
use super::*;

/// How long a pass may run before the loop says so in the log; the wait
/// doubles after each warning.
const SLOW_PASS_MS: u64 = 30_000;

/// What one pass looks at, owned, so it can run on another thread while
/// the loop's state moves on.
pub(crate) struct Snapshot {
    nodes: Vec<Node>,
    running: Vec<RunningJob>,
    waiting: Vec<JobRequest>,
    queues: Vec<Queue>,
    usage: HashMap<String, f64>,
    /// Seconds.
    now: u64,
    /// The same moment in milliseconds, the clock of `RunningJob::started`.
    now_ms: u64,
    /// Jobs let wait for others to finish, and until when.
    draining: HashMap<u64, u64>,
}

/// A finished pass, as the scheduler thread sends it back.
pub(crate) struct Planned {
    generation: u64,
    /// `Err`: the pass panicked, or its thread ended before answering.
    plan: Result<Plan, String>,
}

/// What the loop keeps of a pass it sent, to apply the plan when it comes.
struct InFlight {
    generation: u64,
    /// Each waiting job's attempt in the snapshot: a plan's start, a
    /// preemption made for it and its reason apply only to that attempt.
    attempts: HashMap<i64, u32>,
    /// Each node's CPUs and memory in the snapshot, for the [`Ledger`].
    capacity: Vec<(u64, u64)>,
    /// The usage the pass ordered by, for the queue view.
    usage: HashMap<String, f64>,
    since: Instant,
    /// When to say in the log that the pass is still running.
    warn_at_ms: u64,
    warn_every_ms: u64,
}

/// One pass to run, with where to answer.
struct Job {
    generation: u64,
    snapshot: Box<Snapshot>,
    /// The loop's channel. Held only while a pass runs, so the thread never
    /// keeps the loop's channel open on its own.
    reply: Sender<Msg>,
}

/// The loop's side of the scheduler thread.
pub(super) struct Passes {
    /// The scheduler thread's inbox; None when no thread could be started
    /// (then passes run on the loop's thread).
    to_sched: Option<Sender<Job>>,
    reply: Sender<Msg>,
    /// Test-only: see [`ControlConfig::test_pass_delay`].
    delay: Option<Duration>,
    histogram: Option<Histogram>,
    generation: u64,
    in_flight: Option<InFlight>,
}

impl Passes {
    pub(super) fn new(
        reply: Sender<Msg>,
        delay: Option<Duration>,
        histogram: Option<Histogram>,
    ) -> Self {
        let to_sched = match spawn(delay, histogram.clone()) {
            Ok(tx) => Some(tx),
            Err(e) => {
                error!(error = %e, "cannot start the scheduler thread; scheduling on the control loop's thread");
                None
            }
        };
        Passes {
            to_sched,
            reply,
            delay,
            histogram,
            generation: 0,
            in_flight: None,
        }
    }

    /// When the loop should wake to say a pass is slow.
    pub(super) fn watch_at(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|f| f.warn_at_ms)
    }

    /// Says in the log that a pass runs long: the loop is not blocked by
    /// it, but its waiting jobs are.
    pub(super) fn watch(&mut self) {
        let now = now_ms();
        if let Some(f) = self.in_flight.as_mut().filter(|f| f.warn_at_ms <= now) {
            warn!(
                generation = f.generation,
                secs = f.since.elapsed().as_secs(),
                "a scheduling pass is still running; the control loop goes on meanwhile"
            );
            f.warn_every_ms = f.warn_every_ms.saturating_mul(2);
            f.warn_at_ms = now + f.warn_every_ms;
        }
    }

    /// Hands a pass to the scheduler thread, starting a new thread should
    /// the old one be gone. `Err` gives the snapshot back when no thread
    /// takes it: the caller plans on its own thread.
    fn send(&mut self, generation: u64, snapshot: Box<Snapshot>) -> Result<(), Box<Snapshot>> {
        let mut job = Job {
            generation,
            snapshot,
            reply: self.reply.clone(),
        };
        for fresh in [false, true] {
            if fresh {
                error!("the scheduler thread is gone; starting a new one");
                self.to_sched = match spawn(self.delay, self.histogram.clone()) {
                    Ok(tx) => Some(tx),
                    Err(e) => {
                        error!(error = %e, "cannot start a scheduler thread; scheduling on the control loop's thread");
                        None
                    }
                };
            }
            let Some(tx) = &self.to_sched else {
                return Err(job.snapshot);
            };
            match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(std::sync::mpsc::SendError(back)) => job = back,
            }
        }
        Err(job.snapshot)
    }
}

/// Starts the scheduler thread: it runs each pass it is sent, one at a
/// time, and ends when the loop drops its inbox.
fn spawn(delay: Option<Duration>, histogram: Option<Histogram>) -> std::io::Result<Sender<Job>> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("kiln-sched".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                let mut answer = Answer {
                    generation: job.generation,
                    reply: job.reply,
                    sent: false,
                };
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
                answer.send(compute(&job.snapshot, histogram.as_ref()));
            }
        })?;
    Ok(tx)
}

/// The scheduler thread's answer to one pass. Dropped unsent (the thread
/// unwinding), it answers that the pass failed, so the loop never waits on
/// a plan that cannot come.
struct Answer {
    generation: u64,
    reply: Sender<Msg>,
    sent: bool,
}

impl Answer {
    fn send(&mut self, plan: Result<Plan, String>) {
        self.sent = true;
        // The loop is gone when this fails: nothing is left to tell.
        let _ = self.reply.send(Msg::Planned(Box::new(Planned {
            generation: self.generation,
            plan,
        })));
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if !self.sent {
            self.send(Err(
                "the scheduler thread ended in the middle of a pass".into()
            ));
        }
    }
}

/// Runs `plan()` over a snapshot; its time goes to `schedule_seconds`. A
/// panic in it fails this pass only.
fn compute(s: &Snapshot, histogram: Option<&Histogram>) -> Result<Plan, String> {
    let t = Instant::now();
    let plan = catch_unwind(AssertUnwindSafe(|| {
        kiln_sched::plan(&kiln_sched::Pass {
            nodes: &s.nodes,
            running: &s.running,
            waiting: &s.waiting,
            now: s.now,
            queues: &s.queues,
            usage: &s.usage,
            now_ms: s.now_ms,
            drain_patience_ms: kiln_sched::DRAIN_PATIENCE_MS,
            draining: &s.draining,
        })
    }))
    .map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("the scheduling pass panicked: {what}")
    })?;
    let secs = t.elapsed().as_secs_f64();
    if let Some(h) = histogram {
        h.observe(secs);
    }
    debug!(
        secs,
        starts = plan.start.len(),
        waiting = s.waiting.len(),
        "scheduling pass"
    );
    Ok(plan)
}

/// What running jobs hold now, node by node: the last check before a
/// plan's start is handed to the engine.
struct Ledger {
    gpus: HashSet<(usize, u32)>,
    /// CPUs and memory held, per node.
    used: Vec<(u64, u64)>,
    capacity: Vec<(u64, u64)>,
}

impl Ledger {
    fn of(active: &HashMap<i64, Active>, capacity: Vec<(u64, u64)>) -> Self {
        let mut ledger = Ledger {
            gpus: HashSet::new(),
            used: vec![(0, 0); capacity.len()],
            capacity,
        };
        for a in active.values() {
            ledger.hold(a.slots.iter().map(|s| &s.placed));
        }
        ledger
    }

    fn hold<'a>(&mut self, tasks: impl Iterator<Item = &'a Placed>) {
        for p in tasks {
            self.gpus.extend(p.gpus.iter().map(|g| (p.node, *g)));
            if let Some(u) = self.used.get_mut(p.node) {
                u.0 += u64::from(p.cpus);
                u.1 += p.memory_mb;
            }
        }
    }

    /// Whether a start fits beside what is held; `Err` says what it would
    /// take twice.
    fn fits(&self, tasks: &[Placed]) -> Result<(), String> {
        let mut need = vec![(0u64, 0u64); self.capacity.len()];
        let mut gpus = HashSet::new();
        for p in tasks {
            let Some(n) = need.get_mut(p.node) else {
                return Err(format!("node {} is not in the snapshot", p.node));
            };
            n.0 += u64::from(p.cpus);
            n.1 += p.memory_mb;
            for g in &p.gpus {
                if self.gpus.contains(&(p.node, *g)) || !gpus.insert((p.node, *g)) {
                    return Err(format!("GPU {g} of node {} is held", p.node));
                }
            }
        }
        for (i, ((n, u), c)) in need.iter().zip(&self.used).zip(&self.capacity).enumerate() {
            if n.0 > 0 && u.0 + n.0 > c.0 {
                return Err(format!("node {i} has {} CPUs, {} held", c.0, u.0));
            }
            if n.1 > 0 && u.1 + n.1 > c.1 {
                return Err(format!("node {i} has {} MB, {} MB held", c.1, u.1));
            }
        }
        Ok(())
    }
}

impl Loop {
    /// Starts a scheduling pass unless one is in flight (then `dirty` stays
    /// set, and the next starts once that one's plan is applied). With an
    /// engine that places, submits the waiting jobs instead, here.
    pub(super) fn schedule(&mut self) {
        if self.passes.in_flight.is_some() {
            return;
        }
        self.dirty = false;
        if self.waiting.is_empty() {
            if let Ok(mut r) = self.reasons.write() {
                r.clear();
            }
        } else if self.info.placement == Placement::Engine {
            self.submit_waiting();
        } else {
            self.passes.generation += 1;
            let generation = self.passes.generation;
            let (snapshot, flight) = self.snapshot(generation);
            debug!(
                generation,
                waiting = snapshot.waiting.len(),
                "scheduling pass sent"
            );
            match self.passes.send(generation, snapshot) {
                Ok(()) => self.passes.in_flight = Some(flight),
                Err(snapshot) => {
                    let plan = compute(&snapshot, self.passes.histogram.as_ref());
                    self.planned(plan, flight);
                }
            }
        }
        self.publish();
    }

    /// What a pass looks at, and what the loop keeps to apply its plan.
    fn snapshot(&mut self, generation: u64) -> (Box<Snapshot>, InFlight) {
        let nodes: Vec<Node> = self.engine.nodes().into_iter().map(|n| n.node).collect();
        let running: Vec<RunningJob> = self
            .active
            .values()
            .map(|a| RunningJob {
                key: a.job.key as u64,
                label: a.job.id.to_string(),
                tasks: a.slots.iter().map(|s| s.placed.clone()).collect(),
                ends_at: a.job.deadline_at_ms.map(|d| d / 1000),
                queue: a.job.queue.clone(),
                user: a.job.id.user().to_string(),
                priority: a.job.priority,
                seq: a.job.key as u64,
                preemptible: a.spec.preemptible.unwrap_or(true),
                opportunistic: a.job.opportunistic,
                stopping: a.ending.is_some() || a.job.stop_requested,
                started: a.job.started_at_ms.unwrap_or(0),
            })
            .collect();
        let waiting: Vec<JobRequest> = self.waiting.values().map(|w| w.request.clone()).collect();
        let usage = self.usage_now(&nodes);
        let flight = InFlight {
            generation,
            attempts: self
                .waiting
                .iter()
                .map(|(k, w)| (*k, w.job.attempt))
                .collect(),
            capacity: nodes
                .iter()
                .map(|n| (u64::from(n.cpus), n.memory_mb))
                .collect(),
            usage: usage.clone(),
            since: Instant::now(),
            warn_at_ms: now_ms() + SLOW_PASS_MS,
            warn_every_ms: SLOW_PASS_MS,
        };
        let at_ms = now_ms();
        let snapshot = Box::new(Snapshot {
            nodes,
            running,
            waiting,
            queues: self.queues(),
            usage,
            now: at_ms / 1000,
            now_ms: at_ms,
            draining: self.draining.clone(),
        });
        (snapshot, flight)
    }

    /// A plan came back from the scheduler thread.
    pub(super) fn on_planned(&mut self, planned: Planned) {
        let Some(flight) = self
            .passes
            .in_flight
            .take_if(|f| f.generation == planned.generation)
        else {
            warn!(
                generation = planned.generation,
                "a plan came for a pass not in flight; dropped"
            );
            return;
        };
        self.planned(planned.plan, flight);
        self.publish();
    }

    fn planned(&mut self, plan: Result<Plan, String>, flight: InFlight) {
        match plan {
            Ok(plan) => self.apply_plan(plan, flight),
            Err(why) => {
                error!(generation = flight.generation, error = %why, "a scheduling pass failed; trying again shortly");
                self.look_again_soon();
            }
        }
    }

    /// The next pass comes after `RECHECK_MS` (sooner should anything
    /// change), not at once: a pass that fails again must not spin.
    fn look_again_soon(&mut self) {
        let at = now_ms() + RECHECK_MS;
        self.recheck_at = Some(self.recheck_at.map_or(at, |r| r.min(at)));
    }

    /// Applies a plan computed on a snapshot that may be stale (see the
    /// module's doc for why that is safe): only jobs that still wait at the
    /// same attempt are started, made room for, or given a reason.
    fn apply_plan(&mut self, plan: Plan, flight: InFlight) {
        self.draining = plan.draining_after(&self.draining);
        let waiting = &self.waiting;
        let still = |key: u64| {
            let key = key as i64;
            waiting
                .get(&key)
                .is_some_and(|w| flight.attempts.get(&key) == Some(&w.job.attempt))
        };
        let preempt: Vec<_> = plan.preempt.iter().filter(|p| still(p.for_key)).collect();
        let order: Vec<(i64, String, String)> = plan
            .waiting
            .iter()
            .filter(|w| still(w.key))
            .filter_map(|w| {
                let key = w.key as i64;
                waiting
                    .get(&key)
                    .map(|j| (key, j.job.id.to_string(), j.job.queue.clone()))
            })
            .collect();
        let mut reasons: HashMap<i64, Pending> = plan
            .waiting
            .into_iter()
            .filter(|w| still(w.key))
            .map(|w| (w.key as i64, Pending::Plan(w.reason)))
            .collect();
        let starts: Vec<_> = plan.start.into_iter().filter(|s| still(s.key)).collect();
        let skipped = plan.preempt.len() - preempt.len();
        for p in preempt {
            self.preempt(p);
        }
        if skipped > 0 {
            debug!(
                generation = flight.generation,
                skipped, "preemptions for jobs no longer waiting skipped"
            );
        }
        let mut ledger = Ledger::of(&self.active, flight.capacity);
        for start in starts {
            let key = start.key as i64;
            if let Err(why) = ledger.fits(&start.tasks) {
                error!(job_key = key, generation = flight.generation, error = %why,
                    "a plan's start would take resources already held; not started, a new pass looks again");
                self.look_again_soon();
                continue;
            }
            if let Some(w) = self.waiting.get_mut(&key) {
                w.opportunistic = start.opportunistic;
            }
            match self.start_job(key, Some(start.tasks)) {
                Ok(()) => {
                    if let Some(a) = self.active.get(&key) {
                        ledger.hold(a.slots.iter().map(|s| &s.placed));
                    }
                }
                Err(reason) => {
                    reasons.insert(key, Pending::Text(reason));
                    self.recheck_at = Some(now_ms() + RECHECK_MS);
                }
            }
        }
        if let Ok(mut r) = self.reasons.write() {
            *r = reasons;
        }
        if let Ok(mut q) = self.queues_live.write() {
            *q = QueuesLive {
                queues: plan.queues,
                usage: flight.usage.into_iter().collect(),
                order,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(node: usize, cpus: u32, gpus: &[u32]) -> Placed {
        Placed {
            node,
            cpus,
            memory_mb: 1024,
            gpus: gpus.to_vec(),
        }
    }

    /// The last check before a stale plan's start: what is held is not
    /// given twice, and no node is filled past its size.
    #[test]
    fn the_ledger_refuses_what_is_held() {
        let mut ledger = Ledger::of(&HashMap::new(), vec![(8, 8192), (8, 8192)]);
        ledger.hold([placed(0, 4, &[0, 1])].iter());
        assert!(ledger.fits(&[placed(0, 4, &[2, 3])]).is_ok());
        assert!(ledger.fits(&[placed(1, 8, &[0, 1])]).is_ok());
        assert!(ledger.fits(&[placed(0, 1, &[1])]).is_err(), "GPU 1 is held");
        assert!(
            ledger.fits(&[placed(0, 5, &[])]).is_err(),
            "4 of 8 CPUs held"
        );
        assert!(
            ledger
                .fits(&[placed(1, 1, &[0]), placed(1, 1, &[0])])
                .is_err(),
            "one GPU for two tasks"
        );
        assert!(ledger.fits(&[placed(2, 1, &[])]).is_err(), "no node 2");
    }
}
