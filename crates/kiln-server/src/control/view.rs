//! What the API shows of the nodes: the engine's description of each, and
//! what kiln's jobs hold on it.

use super::*;

impl Loop {
    pub(super) fn publish(&self) {
        let isolation = self.cfg.identities.view();
        let nodes = self
            .engine
            .nodes()
            .into_iter()
            .enumerate()
            .map(|(index, n)| {
                let mut gpu_jobs = HashMap::new();
                let (mut cpus, mut mem) = (0u64, 0u64);
                for a in self.active.values() {
                    for s in a.slots.iter().filter(|s| s.placed.node == index) {
                        for g in &s.placed.gpus {
                            gpu_jobs.insert(*g, a.job.id.to_string());
                        }
                        cpus += u64::from(s.placed.cpus);
                        mem += s.placed.memory_mb;
                    }
                }
                NodeView {
                    node: n.node,
                    gpu_jobs,
                    cpus_allocated: cpus,
                    memory_mb_allocated: mem,
                    isolation: isolation.clone(),
                    details: n.details,
                }
            })
            .collect();
        let view = ClusterView {
            nodes,
            waiting: self.waiting.len(),
            running: self.active.len(),
        };
        if let Ok(mut c) = self.cluster.write() {
            *c = view;
        }
    }
}
