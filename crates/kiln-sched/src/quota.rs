//! Queues' guarantees: what a set of placements holds, whether it stays
//! within a queue's quota, and which running jobs borrow beyond theirs.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::model::{model_matches, GpuQuota, Node, Placed, Queue, Quota, RunningJob};

/// The queue a job lands in when it names none, and the one every user may
/// use. Unless the admin gives it a quota, it is guaranteed whatever the
/// other queues are not.
pub const DEFAULT_QUEUE: &str = "default";

/// What placements hold, GPUs counted per model name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub cpus: u64,
    pub memory_mb: u64,
    pub gpus: BTreeMap<String, u64>,
}

impl Held {
    pub fn of(nodes: &[Node], tasks: &[Placed]) -> Held {
        let mut h = Held::default();
        h.add_tasks(nodes, tasks);
        h
    }

    pub fn add_tasks(&mut self, nodes: &[Node], tasks: &[Placed]) {
        for p in tasks {
            self.cpus += u64::from(p.cpus);
            self.memory_mb += p.memory_mb;
            let Some(node) = nodes.get(p.node) else {
                continue;
            };
            for i in &p.gpus {
                if let Some(g) = node.gpus.iter().find(|g| g.index == *i) {
                    *self.gpus.entry(g.model.clone()).or_insert(0) += 1;
                }
            }
        }
    }

    pub fn add(&mut self, other: &Held) {
        self.cpus += other.cpus;
        self.memory_mb += other.memory_mb;
        for (m, n) in &other.gpus {
            *self.gpus.entry(m.clone()).or_insert(0) += n;
        }
    }

    pub fn gpu_count(&self) -> u64 {
        self.gpus.values().sum()
    }
}

impl Quota {
    pub fn gpu_count(&self) -> u64 {
        self.gpus.iter().map(|g| g.count).sum()
    }

    /// Whether `held` stays within the quota. Each GPU goes to an entry
    /// that names its model first, then to one that takes any model.
    pub fn holds(&self, held: &Held) -> bool {
        if held.cpus > self.cpus || held.memory_mb > self.memory_mb {
            return false;
        }
        let mut room: Vec<u64> = self.gpus.iter().map(|g| g.count).collect();
        for (model, &n) in &held.gpus {
            let mut left = n;
            let named = self
                .gpus
                .iter()
                .enumerate()
                .filter(|(_, g)| g.model.as_deref().is_some_and(|p| model_matches(model, p)));
            let any = self
                .gpus
                .iter()
                .enumerate()
                .filter(|(_, g)| g.model.is_none());
            for (i, _) in named.chain(any) {
                let take = left.min(room[i]);
                room[i] -= take;
                left -= take;
                if left == 0 {
                    break;
                }
            }
            if left > 0 {
                return false;
            }
        }
        true
    }
}

/// The default queue's guarantee: what the cluster has beyond every other
/// queue's.
pub fn remainder(nodes: &[Node], others: &[&Quota]) -> Quota {
    let cpus: u64 = nodes.iter().map(|n| u64::from(n.cpus)).sum();
    let memory_mb: u64 = nodes.iter().map(|n| n.memory_mb).sum();
    let gpus: u64 = nodes.iter().map(|n| n.gpus.len() as u64).sum();
    Quota {
        cpus: cpus.saturating_sub(others.iter().map(|q| q.cpus).sum()),
        memory_mb: memory_mb.saturating_sub(others.iter().map(|q| q.memory_mb).sum()),
        gpus: vec![GpuQuota {
            model: None,
            count: gpus.saturating_sub(others.iter().map(|q| q.gpu_count()).sum()),
        }],
    }
}

/// The queues a pass works with: the admin's, and `default` with the
/// remainder unless the admin set it.
pub fn with_default(nodes: &[Node], queues: &[Queue]) -> Vec<Queue> {
    let mut out: Vec<Queue> = queues.to_vec();
    if !out.iter().any(|q| q.name == DEFAULT_QUEUE) {
        let others: Vec<&Quota> = queues.iter().map(|q| &q.quota).collect();
        out.push(Queue {
            name: DEFAULT_QUEUE.into(),
            quota: remainder(nodes, &others),
            user_max_gpus: None,
        });
    }
    out
}

/// One queue's use of the cluster now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueUse {
    pub name: String,
    pub quota: Quota,
    /// Everything its jobs hold.
    pub used: Held,
    /// The part of `used` beyond its quota, on resources others do not use.
    pub borrowed: Held,
    /// GPUs of its quota it does not use that other queues' jobs hold now.
    pub lent_gpus: u64,
    /// Queues those lent GPUs went to.
    pub lent_to: Vec<String>,
    /// Running GPUs per user.
    pub user_gpus: BTreeMap<String, u64>,
}

/// Index of the queue named `name` in `queues` (as [`with_default`] made
/// them); a queue that is gone (removed while its jobs ran or waited)
/// counts as `default`.
pub fn queue_index(queues: &[Queue], name: &str) -> usize {
    queues
        .iter()
        .position(|q| q.name == name)
        .or_else(|| queues.iter().position(|q| q.name == DEFAULT_QUEUE))
        .unwrap_or(0)
}

/// Which running jobs borrow: per queue, jobs that cannot be preempted
/// count first, then jobs in the order they came; a job whose resources
/// would take the queue past its quota borrows them.
pub fn borrowers(nodes: &[Node], queues: &[Queue], running: &[RunningJob]) -> HashMap<u64, bool> {
    let mut order: Vec<&RunningJob> = running.iter().collect();
    order.sort_by_key(|r| (r.preemptible, r.seq));
    let mut within: HashMap<usize, Held> = HashMap::new();
    let mut out = HashMap::new();
    for r in order {
        let held = Held::of(nodes, &r.tasks);
        let q = queue_index(queues, &r.queue);
        let acc = within.entry(q).or_default();
        let mut next = acc.clone();
        next.add(&held);
        let fits = queues.get(q).is_some_and(|q| q.quota.holds(&next));
        if fits {
            *acc = next;
        }
        out.insert(r.key, !fits);
    }
    out
}

/// Every queue's use, for the queue view and pending reasons.
pub fn queue_use(nodes: &[Node], queues: &[Queue], running: &[RunningJob]) -> Vec<QueueUse> {
    let borrowing = borrowers(nodes, queues, running);
    let mut uses: Vec<QueueUse> = queues
        .iter()
        .map(|q| QueueUse {
            name: q.name.clone(),
            quota: q.quota.clone(),
            ..Default::default()
        })
        .collect();
    for r in running {
        let i = queue_index(queues, &r.queue);
        if i >= uses.len() {
            continue;
        }
        let held = Held::of(nodes, &r.tasks);
        *uses[i].user_gpus.entry(r.user.clone()).or_insert(0) += held.gpu_count();
        uses[i].used.add(&held);
        if borrowing.get(&r.key).copied().unwrap_or(false) {
            uses[i].borrowed.add(&held);
        }
    }
    // Lent: a queue's unused quota is what borrowers run on, shared out in
    // queue order until the borrowed GPUs are accounted for.
    let mut borrowed: Vec<(String, u64)> = uses
        .iter()
        .filter(|u| u.borrowed.gpu_count() > 0)
        .map(|u| (u.name.clone(), u.borrowed.gpu_count()))
        .collect();
    for u in uses.iter_mut() {
        let own = u.used.gpu_count() - u.borrowed.gpu_count();
        let mut unused = u.quota.gpu_count().saturating_sub(own);
        for (to, left) in borrowed.iter_mut() {
            if *to == u.name || *left == 0 || unused == 0 {
                continue;
            }
            let n = unused.min(*left);
            *left -= n;
            unused -= n;
            u.lent_gpus += n;
            u.lent_to.push(to.clone());
        }
    }
    uses
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Gpu;

    fn gpus(model: Option<&str>, count: u64) -> GpuQuota {
        GpuQuota {
            model: model.map(str::to_owned),
            count,
        }
    }

    fn held(gpus: &[(&str, u64)]) -> Held {
        Held {
            cpus: 1,
            memory_mb: 1,
            gpus: gpus.iter().map(|(m, n)| (m.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn gpus_go_to_their_model_first_then_to_any() {
        let q = Quota {
            cpus: 10,
            memory_mb: 10,
            gpus: vec![gpus(Some("A100"), 2), gpus(None, 1)],
        };
        assert!(q.holds(&held(&[("NVIDIA A100-SXM4", 3)])));
        assert!(!q.holds(&held(&[("NVIDIA A100-SXM4", 4)])));
        assert!(q.holds(&held(&[("NVIDIA A100-SXM4", 2), ("Tesla V100", 1)])));
        assert!(!q.holds(&held(&[("Tesla V100", 2)])));
        let mut big = held(&[]);
        big.cpus = 11;
        assert!(!q.holds(&big));
    }

    #[test]
    fn default_gets_the_rest_and_lends_it() {
        let nodes = vec![Node {
            name: "n".into(),
            cpus: 16,
            memory_mb: 1000,
            gpus: (0..8)
                .map(|i| Gpu {
                    index: i,
                    model: "A100".into(),
                    memory_mb: 1,
                })
                .collect(),
        }];
        let vision = Queue {
            name: "vision".into(),
            quota: Quota {
                cpus: 8,
                memory_mb: 500,
                gpus: vec![gpus(None, 6)],
            },
            user_max_gpus: None,
        };
        let queues = with_default(&nodes, &[vision]);
        assert_eq!(queues[1].name, DEFAULT_QUEUE);
        assert_eq!(queues[1].quota.gpu_count(), 2);
        assert_eq!(queues[1].quota.cpus, 8);
        // default runs 5 GPUs: 2 its own, 3 borrowed from vision.
        let run = |key, seq, queue: &str, gpus: Vec<u32>| RunningJob {
            key,
            seq,
            queue: queue.into(),
            user: "u".into(),
            tasks: vec![Placed {
                node: 0,
                cpus: 1,
                memory_mb: 10,
                gpus,
            }],
            ..Default::default()
        };
        let running = vec![
            run(1, 1, "default", vec![0, 1]),
            run(2, 2, "default", vec![2, 3, 4]),
            run(3, 3, "vision", vec![5]),
        ];
        let b = borrowers(&nodes, &queues, &running);
        assert_eq!((b[&1], b[&2], b[&3]), (false, true, false));
        let uses = queue_use(&nodes, &queues, &running);
        let vision = &uses[0];
        assert_eq!(vision.used.gpu_count(), 1);
        assert_eq!(
            (vision.lent_gpus, vision.lent_to.clone()),
            (3, vec!["default".to_string()])
        );
        assert_eq!(uses[1].borrowed.gpu_count(), 3);
    }
}
