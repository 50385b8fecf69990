//! Queues, fair share and preemption as the loop sees them: what each user
//! has used (decayed), the queues the admin made, and stopping a job so that
//! one of higher standing can start. The policy is kiln-sched's; this is
//! the bookkeeping around it.

use kiln_sched::fair::{billing, charge, decay};
use kiln_sched::{Preempt, Queue, QueueUse};
use kiln_store::Usage;
use serde::Serialize;

use super::*;

/// What the queue view shows, as of the last pass.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuesLive {
    pub queues: Vec<QueueUse>,
    /// Each user's fair-share usage now, in GPU-seconds (decayed).
    pub usage: BTreeMap<String, f64>,
    /// Waiting jobs in the order the last pass took them: key, id, queue.
    pub order: Vec<(i64, String, String)>,
}

impl Loop {
    /// The cluster's GPUs and CPUs, for the billing rate.
    fn cluster_size(nodes: &[kiln_sched::Node]) -> (u64, u64) {
        (
            nodes.iter().map(|n| n.gpus.len() as u64).sum(),
            nodes.iter().map(|n| u64::from(n.cpus)).sum(),
        )
    }

    fn rate(&self, slots: &[Slot], size: (u64, u64)) -> f64 {
        let gpus: u64 = slots.iter().map(|s| s.placed.gpus.len() as u64).sum();
        let cpus: u64 = slots.iter().map(|s| u64::from(s.placed.cpus)).sum();
        billing(gpus, cpus, size.0, size.1)
    }

    /// The user's usage after charging an attempt that ends now, to record
    /// with the attempt's end in one transaction.
    pub(super) fn charge_attempt(&self, job: &JobRecord, slots: &[Slot]) -> Option<Usage> {
        let started = job.started_at_ms?;
        let now = now_ms();
        let half = self.cfg.fair_share_half_life_secs;
        let user = job.id.user().to_string();
        let before = self
            .usage
            .get(&user)
            .map_or(0.0, |(v, at)| decay(*v, *at, now, half));
        let nodes: Vec<kiln_sched::Node> =
            self.engine.nodes().into_iter().map(|n| n.node).collect();
        let rate = self.rate(slots, Self::cluster_size(&nodes));
        Some(Usage {
            value: before + charge(rate, started, now, now, half),
            user,
            at_ms: now,
        })
    }

    /// Every user's usage now: what ended, decayed, and what runs so far,
    /// billed at the rate of `nodes` (the pass's own).
    pub(super) fn usage_now(&self, nodes: &[kiln_sched::Node]) -> HashMap<String, f64> {
        let now = now_ms();
        let half = self.cfg.fair_share_half_life_secs;
        let mut out: HashMap<String, f64> = self
            .usage
            .iter()
            .map(|(u, (v, at))| (u.clone(), decay(*v, *at, now, half)))
            .collect();
        let size = Self::cluster_size(nodes);
        for a in self.active.values() {
            if let Some(started) = a.job.started_at_ms {
                *out.entry(a.job.id.user().to_string()).or_insert(0.0) +=
                    charge(self.rate(&a.slots, size), started, now, now, half);
            }
        }
        out
    }

    /// The admin's queues, read from the store the first time and after
    /// they change; on a store error, none this pass (every job in
    /// `default`, as before queues existed), a log line, and a read again
    /// next pass.
    pub(super) fn queues(&mut self) -> Vec<Queue> {
        if let Some(q) = &self.queues {
            return q.clone();
        }
        match self.store.queues() {
            Ok(qs) => {
                let qs: Vec<Queue> = qs.iter().map(kiln_store::QueueRecord::to_queue).collect();
                self.queues = Some(qs.clone());
                qs
            }
            Err(e) => {
                warn!(error = %e, "cannot read the queues; scheduling as one queue");
                Vec::new()
            }
        }
    }

    /// Stops a running job so that `p.for_label` can start: SIGTERM, the
    /// grace period, then a new attempt in the queue (see `Outcome::Preempted`).
    pub(super) fn preempt(&mut self, p: &Preempt) {
        let key = p.key as i64;
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        if a.ending.is_some() || a.job.stop_requested {
            return;
        }
        a.ending = Some(Outcome::Preempted {
            by: p.for_label.clone(),
        });
        self.stop_unfinished(key);
        let why = if p.reclaim {
            "its queue takes back the resources this job borrowed"
        } else {
            "it waited first and this job had started ahead of it"
        };
        let change = Change {
            job: JobPatch {
                state: Some(JobState::Stopping),
                preempted_by: Some(Some(p.for_label.clone())),
                ..Default::default()
            },
            events: vec![event(
                "preempted",
                format!(
                    "preempted: {} needs its resources ({why}); stopping its tasks, then it waits again as a new attempt that does not count against retryCount",
                    p.for_label
                ),
            )],
            ..Default::default()
        };
        if let Some(job) = self.apply(key, &change) {
            if let Some(a) = self.active.get_mut(&key) {
                a.job = job;
            }
        }
        info!(job_key = key, by = %p.for_label, reclaim = p.reclaim, "preempting");
        self.evaluate(key);
    }
}
