//! An account of what every node has given out, kept by the simulator
//! apart from the scheduler: every start is checked against it, so a
//! scheduler that gives a GPU twice or a node more CPU than it has is caught
//! rather than trusted. FIFO places with it too (first fit).

use kiln_sched::{model_matches, JobRequest, Node, Placed, TaskRequest};

#[derive(Debug, Clone)]
pub struct Ledger {
    cpus: Vec<u64>,
    memory: Vec<u64>,
    /// Per node and GPU position: the job holding it.
    gpus: Vec<Vec<Option<u64>>>,
    pub allocated_gpus: u64,
    pub allocated_cpus: u64,
}

/// What was wrong with a start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A GPU given twice, a node's CPUs or memory exceeded, a node or GPU
    /// that does not exist.
    OverAllocation(String),
    /// Not every task of the gang placed, or a task placed with less than
    /// it asked.
    PartialGang(String),
}

impl Ledger {
    pub fn new(nodes: &[Node]) -> Ledger {
        Ledger {
            cpus: vec![0; nodes.len()],
            memory: vec![0; nodes.len()],
            gpus: nodes.iter().map(|n| vec![None; n.gpus.len()]).collect(),
            allocated_gpus: 0,
            allocated_cpus: 0,
        }
    }

    fn gpu_pos(node: &Node, index: u32) -> Option<usize> {
        node.gpus.iter().position(|g| g.index == index)
    }

    /// Checks a start of `job` at `tasks` and books it. A faulty start is
    /// booked for what it validly holds, so one fault is counted once.
    pub fn start(&mut self, nodes: &[Node], job: &JobRequest, tasks: &[Placed]) -> Vec<Fault> {
        let mut faults = Vec::new();
        if tasks.len() != job.tasks.len() {
            faults.push(Fault::PartialGang(format!(
                "{}: {} of {} tasks placed",
                job.label,
                tasks.len(),
                job.tasks.len()
            )));
        }
        for (t, p) in job.tasks.iter().zip(tasks) {
            let Some(node) = nodes.get(p.node) else {
                faults.push(Fault::OverAllocation(format!(
                    "{}: node {} does not exist",
                    job.label, p.node
                )));
                continue;
            };
            let models_ok = p.gpus.iter().all(|i| {
                Self::gpu_pos(node, *i).is_some_and(|g| {
                    t.gpu_type
                        .as_deref()
                        .is_none_or(|ty| model_matches(&node.gpus[g].model, ty))
                })
            });
            if p.gpus.len() != t.gpus as usize
                || p.cpus < t.cpus
                || p.memory_mb < t.memory_mb
                || !models_ok
            {
                faults.push(Fault::PartialGang(format!(
                    "{}: task {} placed short of its request",
                    job.label, t.id
                )));
            }
            self.cpus[p.node] += u64::from(p.cpus);
            self.allocated_cpus += u64::from(p.cpus);
            self.memory[p.node] += p.memory_mb;
            if self.cpus[p.node] > u64::from(node.cpus) || self.memory[p.node] > node.memory_mb {
                faults.push(Fault::OverAllocation(format!(
                    "{}: node {} over its CPUs or memory",
                    job.label, node.name
                )));
            }
            for i in &p.gpus {
                match Self::gpu_pos(node, *i) {
                    Some(g) if self.gpus[p.node][g].is_none() => {
                        self.gpus[p.node][g] = Some(job.key);
                        self.allocated_gpus += 1;
                    }
                    Some(_) => faults.push(Fault::OverAllocation(format!(
                        "{}: GPU {} of {} given twice",
                        job.label, i, node.name
                    ))),
                    None => faults.push(Fault::OverAllocation(format!(
                        "{}: GPU {} of {} does not exist",
                        job.label, i, node.name
                    ))),
                }
            }
        }
        faults
    }

    /// Gives back what `key` holds at `tasks`.
    pub fn end(&mut self, nodes: &[Node], key: u64, tasks: &[Placed]) {
        for p in tasks {
            let Some(node) = nodes.get(p.node) else {
                continue;
            };
            self.cpus[p.node] = self.cpus[p.node].saturating_sub(u64::from(p.cpus));
            self.allocated_cpus = self.allocated_cpus.saturating_sub(u64::from(p.cpus));
            self.memory[p.node] = self.memory[p.node].saturating_sub(p.memory_mb);
            for i in &p.gpus {
                if let Some(g) = Self::gpu_pos(node, *i) {
                    if self.gpus[p.node][g] == Some(key) {
                        self.gpus[p.node][g] = None;
                        self.allocated_gpus -= 1;
                    }
                }
            }
        }
    }

    /// The first node (in list order) with room for `task`, taking its
    /// lowest free GPUs of the wanted model; booked for `key`.
    pub fn first_fit(&mut self, nodes: &[Node], key: u64, task: &TaskRequest) -> Option<Placed> {
        for (n, node) in nodes.iter().enumerate() {
            if self.cpus[n] + u64::from(task.cpus) > u64::from(node.cpus)
                || self.memory[n] + task.memory_mb > node.memory_mb
            {
                continue;
            }
            let free: Vec<usize> = (0..node.gpus.len())
                .filter(|g| self.gpus[n][*g].is_none())
                .filter(|g| {
                    task.gpu_type
                        .as_deref()
                        .is_none_or(|ty| model_matches(&node.gpus[*g].model, ty))
                })
                .take(task.gpus as usize)
                .collect();
            if free.len() < task.gpus as usize {
                continue;
            }
            self.cpus[n] += u64::from(task.cpus);
            self.allocated_cpus += u64::from(task.cpus);
            self.memory[n] += task.memory_mb;
            for g in &free {
                self.gpus[n][*g] = Some(key);
            }
            self.allocated_gpus += free.len() as u64;
            return Some(Placed {
                node: n,
                cpus: task.cpus,
                memory_mb: task.memory_mb,
                gpus: free.iter().map(|g| node.gpus[*g].index).collect(),
            });
        }
        None
    }

    /// Every task of `job` by first fit, or nothing (gang): on failure what
    /// was booked is given back.
    pub fn first_fit_all(&mut self, nodes: &[Node], job: &JobRequest) -> Option<Vec<Placed>> {
        let mut placed = Vec::with_capacity(job.tasks.len());
        for t in &job.tasks {
            match self.first_fit(nodes, job.key, t) {
                Some(p) => placed.push(p),
                None => {
                    self.end(nodes, job.key, &placed);
                    return None;
                }
            }
        }
        Some(placed)
    }
}
