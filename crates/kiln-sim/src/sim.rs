//! The event loop: arrivals, ends and the ends of preemption grace periods
//! move simulated time; after each batch of events at one moment, one
//! scheduling pass. Nothing runs and no clock is read except to time the
//! scheduler itself.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Instant;

use kiln_sched::fair::{billing, charge, decay, DEFAULT_HALF_LIFE_SECS};
use kiln_sched::{plan, JobRequest, Node, Pass, Placed, Queue, RunningJob};

use crate::ledger::{Fault, Ledger};
use crate::recipe::{SimJob, Workload};
use crate::report::{JobOutcome, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Fifo,
    Kiln,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Fifo => "FIFO + first-fit",
            Policy::Kiln => "kiln",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub policy: Policy,
    /// How long a preempted job keeps its resources before it is gone.
    pub grace_secs: u64,
    /// At most this many waiting jobs (oldest first) go to one kiln pass;
    /// None: all of them.
    pub waiting_cap: Option<usize>,
    /// kiln's drain patience (`Pass::drain_patience_ms`), in the
    /// simulation's seconds.
    pub drain_patience_secs: u64,
}

impl Config {
    pub fn new(policy: Policy) -> Config {
        Config {
            policy,
            grace_secs: 30,
            waiting_cap: None,
            drain_patience_secs: kiln_sched::DRAIN_PATIENCE_MS / 1000,
        }
    }
}

const END: u8 = 0;
const STOPPED: u8 = 1;

/// A running attempt, as the simulator knows it.
struct Run {
    start: u64,
    attempt: u32,
    /// Fair-share cost per second (`fair::billing`).
    rate: f64,
    gpus: u64,
}

struct State<'w> {
    nodes: &'w [Node],
    jobs: &'w [SimJob],
    queues: &'w [Queue],
    ledger: Ledger,
    running: Vec<RunningJob>,
    runs: HashMap<u64, Run>,
    /// Waiting jobs, in arrival (seq) order.
    waiting: Vec<JobRequest>,
    events: BinaryHeap<Reverse<(u64, u8, u64, u32)>>,
    attempts: Vec<u32>,
    /// Per user: decayed usage banked at a time (ms).
    banked: HashMap<String, (f64, u64)>,
    /// The last pass's `Plan::draining`, for the next.
    draining: HashMap<u64, u64>,
    cluster: (u64, u64),
    out: Outcome,
}

/// Replays `work` on `nodes` under `cfg`.
pub fn run(nodes: &[Node], work: &Workload, cfg: Config) -> Outcome {
    let total_gpus: u64 = nodes.iter().map(|n| n.gpus.len() as u64).sum();
    let cluster_cpus: u64 = nodes.iter().map(|n| u64::from(n.cpus)).sum();
    // Jobs no empty cluster can hold (by first fit) would wait forever in
    // both policies and make "someone is waiting" always true: left out
    // and counted.
    let empty = Ledger::new(nodes);
    let fits: Vec<bool> = work
        .jobs
        .iter()
        .map(|j| empty.clone().first_fit_all(nodes, &j.request).is_some())
        .collect();
    let arrivals: Vec<&SimJob> = work
        .jobs
        .iter()
        .zip(&fits)
        .filter(|(_, f)| **f)
        .map(|(j, _)| j)
        .collect();
    let window = (
        arrivals.first().map_or(0, |j| j.arrival),
        arrivals.last().map_or(0, |j| j.arrival),
    );
    let mut st = State {
        nodes,
        jobs: &work.jobs,
        queues: &work.queues,
        ledger: Ledger::new(nodes),
        running: Vec::new(),
        runs: HashMap::new(),
        waiting: Vec::new(),
        events: BinaryHeap::new(),
        attempts: vec![0; work.jobs.len()],
        banked: HashMap::new(),
        draining: HashMap::new(),
        cluster: (total_gpus, cluster_cpus),
        out: Outcome::new(cfg.policy.name(), total_gpus, cluster_cpus, window),
    };
    st.out.never_fit = fits.iter().filter(|f| !**f).count();
    st.out.jobs = work
        .jobs
        .iter()
        .map(|j| JobOutcome {
            arrival: j.arrival,
            ..Default::default()
        })
        .collect();
    let mut next = 0;
    let mut last = window.0;
    loop {
        let t_arrival = arrivals.get(next).map(|j| j.arrival);
        let t_event = st.events.peek().map(|Reverse(e)| e.0);
        let now = match (t_arrival, t_event) {
            (Some(a), Some(e)) => a.min(e),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => break,
        };
        st.out.integrate(
            last,
            now,
            st.ledger.allocated_gpus,
            st.ledger.allocated_cpus,
            !st.waiting.is_empty(),
        );
        last = now;
        while let Some(Reverse((t, kind, key, attempt))) = st.events.peek().copied() {
            if t != now {
                break;
            }
            st.events.pop();
            st.finish(now, kind, key, attempt);
        }
        while next < arrivals.len() && arrivals[next].arrival == now {
            st.waiting.push(arrivals[next].request.clone());
            next += 1;
        }
        if !st.waiting.is_empty() {
            st.pass(now, cfg);
        }
    }
    st.out.end_time = last;
    let last_start = st
        .out
        .jobs
        .iter()
        .filter_map(|j| j.last_start)
        .max()
        .unwrap_or(window.0);
    st.out.close(last_start);
    st.out.stuck = st.waiting.len();
    st.out
}

impl State<'_> {
    fn finish(&mut self, now: u64, kind: u8, key: u64, attempt: u32) {
        if self.runs.get(&key).is_none_or(|r| r.attempt != attempt) {
            return; // ended on its own during its grace period, or stale
        }
        let Some(pos) = self.running.iter().position(|r| r.key == key) else {
            return;
        };
        let job = self.running.swap_remove(pos);
        self.ledger.end(self.nodes, key, &job.tasks);
        if let Some(run) = self.runs.remove(&key) {
            if kind == STOPPED {
                self.out.lost_gpu_secs += (run.gpus * (now - run.start)) as f64;
            }
            let e = self.banked.entry(job.user.clone()).or_insert((0.0, 0));
            let (ms, start_ms) = (now * 1000, run.start * 1000);
            e.0 = decay(e.0, e.1, ms, DEFAULT_HALF_LIFE_SECS)
                + charge(run.rate, start_ms, ms, ms, DEFAULT_HALF_LIFE_SECS);
            e.1 = ms;
        }
        let k = key as usize;
        if kind == END {
            self.out.jobs[k].end = Some(now);
        } else {
            // Preempted: a new attempt from the start (no checkpoint), in
            // its old place in line.
            self.attempts[k] += 1;
            self.out.jobs[k].attempts += 1;
            let req = self.jobs[k].request.clone();
            let at = self.waiting.partition_point(|w| w.seq < req.seq);
            self.waiting.insert(at, req);
        }
    }

    /// Each user's decayed usage now: what ended, and what runs so far.
    fn usage(&self, now: u64) -> HashMap<String, f64> {
        let ms = now * 1000;
        let mut u: HashMap<String, f64> = self
            .banked
            .iter()
            .map(|(k, (v, at))| (k.clone(), decay(*v, *at, ms, DEFAULT_HALF_LIFE_SECS)))
            .collect();
        for r in &self.running {
            if let Some(run) = self.runs.get(&r.key) {
                *u.entry(r.user.clone()).or_insert(0.0) +=
                    charge(run.rate, run.start * 1000, ms, ms, DEFAULT_HALF_LIFE_SECS);
            }
        }
        u
    }

    fn pass(&mut self, now: u64, cfg: Config) {
        let was_empty = self.running.is_empty();
        let (starts, preempt) = match cfg.policy {
            Policy::Fifo => {
                let t = Instant::now();
                let s = crate::fifo::pass(self.nodes, &self.ledger, &self.waiting);
                self.out.pass_micros.push(t.elapsed().as_secs_f64() * 1e6);
                (
                    s.into_iter()
                        .map(|(k, p)| (k, p, false))
                        .collect::<Vec<_>>(),
                    Vec::new(),
                )
            }
            Policy::Kiln => {
                let usage = self.usage(now);
                let n = cfg
                    .waiting_cap
                    .map_or(self.waiting.len(), |c| c.min(self.waiting.len()));
                let pass = Pass {
                    nodes: self.nodes,
                    running: &self.running,
                    waiting: &self.waiting[..n],
                    now,
                    queues: self.queues,
                    usage: &usage,
                    now_ms: now.saturating_mul(1000),
                    drain_patience_ms: cfg.drain_patience_secs.saturating_mul(1000),
                    draining: &self.draining,
                };
                let t = Instant::now();
                let p = plan(&pass);
                self.draining = p.draining_after(&self.draining);
                self.out.pass_micros.push(t.elapsed().as_secs_f64() * 1e6);
                (
                    p.start
                        .into_iter()
                        .map(|s| (s.key, s.tasks, s.opportunistic))
                        .collect(),
                    p.preempt.into_iter().map(|v| v.key).collect::<Vec<_>>(),
                )
            }
        };
        if was_empty && starts.is_empty() && preempt.is_empty() {
            self.out.stalls += 1;
        }
        let started: HashSet<u64> = starts.iter().map(|s| s.0).collect();
        for (key, tasks, opportunistic) in starts {
            self.start(now, key, tasks, opportunistic);
        }
        self.waiting.retain(|w| !started.contains(&w.key));
        for key in preempt {
            let Some(r) = self
                .running
                .iter_mut()
                .find(|r| r.key == key && !r.stopping)
            else {
                continue;
            };
            r.stopping = true;
            self.out.preemptions += 1;
            if let Some(run) = self.runs.get(&key) {
                self.events
                    .push(Reverse((now + cfg.grace_secs, STOPPED, key, run.attempt)));
            }
        }
    }

    fn start(&mut self, now: u64, key: u64, tasks: Vec<Placed>, opportunistic: bool) {
        let Some(job) = self.jobs.get(key as usize) else {
            return;
        };
        for f in self.ledger.start(self.nodes, &job.request, &tasks) {
            match &f {
                Fault::OverAllocation(_) => self.out.over_allocations += 1,
                Fault::PartialGang(_) => self.out.partial_gangs += 1,
            }
            if self.out.faults.len() < 10 {
                self.out.faults.push(format!("t={now}: {f:?}"));
            }
        }
        let r = &job.request;
        let gpus: u64 = tasks.iter().map(|p| p.gpus.len() as u64).sum();
        let cpus: u64 = tasks.iter().map(|p| u64::from(p.cpus)).sum();
        let attempt = self.attempts[key as usize];
        self.runs.insert(
            key,
            Run {
                start: now,
                attempt,
                rate: billing(gpus, cpus, self.cluster.0, self.cluster.1),
                gpus,
            },
        );
        self.running.push(RunningJob {
            key,
            label: r.label.clone(),
            tasks,
            ends_at: r.max_duration_secs.map(|d| now + d),
            queue: r.queue.clone(),
            user: r.user.clone(),
            priority: r.priority,
            seq: r.seq,
            preemptible: r.preemptible,
            opportunistic,
            stopping: false,
            started: now.saturating_mul(1000),
        });
        let o = &mut self.out.jobs[key as usize];
        o.first_start.get_or_insert(now);
        o.last_start = Some(now);
        self.events
            .push(Reverse((now + job.duration, END, key, attempt)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fifo::tests::{job, node};
    use crate::recipe::queues;

    fn work(nodes: &[Node], jobs: &[(u64, &[u32], u64)]) -> Workload {
        let jobs = jobs
            .iter()
            .enumerate()
            .map(|(i, (arrival, gpus, duration))| {
                let mut request = job(i as u64, gpus);
                request.user = "u".into();
                request.queue = "team-a".into();
                SimJob {
                    request,
                    arrival: *arrival,
                    duration: *duration,
                }
            })
            .collect();
        Workload {
            jobs,
            queues: queues(nodes),
            stats: Default::default(),
        }
    }

    /// Two nodes of 2 GPUs. t=0: A (2 GPUs, 100 s). t=10: B (4 GPUs as a
    /// gang of 2+2, 50 s), then C (1 GPU, 20 s). FIFO: B waits for A
    /// (starts at 100), C waits behind B (starts at 150, ends 170). kiln:
    /// C starts at 10 beside the blocked B (opportunistic, since B cannot
    /// start before A ends) and ends at 30, before B needs it.
    #[test]
    fn a_tiny_simulation_by_hand() {
        let nodes = vec![node("a", 2), node("b", 2)];
        let w = work(&nodes, &[(0, &[2], 100), (10, &[2, 2], 50), (10, &[1], 20)]);
        let fifo = run(&nodes, &w, Config::new(Policy::Fifo));
        let starts: Vec<Option<u64>> = fifo.jobs.iter().map(|j| j.first_start).collect();
        assert_eq!(starts, vec![Some(0), Some(100), Some(150)]);
        assert_eq!(fifo.end_time, 170);
        // First arrival to last start (0..150): A holds 2 of 4 GPUs for
        // 100 s, then B all 4 for 50 s. Someone waited 10..150: 180 of
        // 560 GPU-seconds idle.
        let s = fifo.summary();
        assert!(
            (s.allocation - 400.0 / 600.0).abs() < 1e-9,
            "{}",
            s.allocation
        );
        assert!(
            (s.waiting_allocation - (1.0 - 180.0 / 560.0)).abs() < 1e-9,
            "{}",
            s.waiting_allocation
        );
        // Idle while waiting: 10..100 two GPUs idle, 100..150 none (B holds
        // all 4), nothing waits after 150.
        assert_eq!(fifo.idle_waiting_gpu_secs, 2.0 * 90.0);
        assert_eq!(
            (fifo.partial_gangs, fifo.over_allocations, fifo.stalls),
            (0, 0, 0)
        );

        let kiln = run(&nodes, &w, Config::new(Policy::Kiln));
        let starts: Vec<Option<u64>> = kiln.jobs.iter().map(|j| j.first_start).collect();
        assert_eq!(starts, vec![Some(0), Some(100), Some(10)]);
        // C's GPU is busy 10..30: idle while B waits is 90×2 − 20.
        assert_eq!(kiln.idle_waiting_gpu_secs, 160.0);
        assert_eq!(
            (kiln.partial_gangs, kiln.over_allocations, kiln.preemptions),
            (0, 0, 0)
        );
        assert!(kiln.jobs.iter().all(|j| j.end.is_some()));
    }

    /// Preemption: a job of another queue, within its quota, takes back
    /// GPUs a borrower holds; the borrower holds them 30 s more, then
    /// waits and runs again from the start.
    #[test]
    fn a_preempted_job_holds_its_gpus_for_the_grace_period_then_restarts() {
        let nodes = vec![node("a", 4)];
        let mut w = work(&nodes, &[(0, &[4], 1000), (10, &[1], 100)]);
        // team-d (10% of 4 GPUs = 0) borrows everything; team-a (1 GPU of
        // quota) comes to take its GPU back.
        w.jobs[0].request.queue = "team-d".into();
        w.jobs[0].request.user = "d".into();
        let kiln = run(&nodes, &w, Config::new(Policy::Kiln));
        assert_eq!(kiln.preemptions, 1);
        assert_eq!(kiln.jobs[1].first_start, Some(40));
        assert_eq!(kiln.jobs[0].attempts, 1);
        // Restarted at 140 when the GPU came back, 1000 s again.
        assert_eq!(kiln.jobs[0].end, Some(1140));
        assert_eq!(kiln.lost_gpu_secs, 4.0 * 40.0);
    }
}
