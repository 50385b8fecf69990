//! Free resources per node, and placing one gang on them.
//!
//! Nodes are indexed by (free GPUs, free CPUs, free memory), so best fit
//! for a task that names no GPU model finds its node in the index instead
//! of scanning every node: on 10k nodes a pass starts thousands of jobs.

use std::collections::BTreeSet;

use crate::model::{JobRequest, Node, Placed, TaskRequest};

/// (free GPUs, free CPUs, free memory, node): best fit's order.
type Key = (u32, u64, u64, usize);

/// Placement attempts a search may make before it gives up and says so.
const SEARCH_BUDGET: u32 = 512;

/// Placement attempts the searches of one pass may make together: a queue
/// of many gangs of different shapes must not make one pass slow.
pub(crate) const PASS_SEARCH_BUDGET: u32 = 16 * 1024;

enum Search {
    Found(Vec<Placed>),
    NoneExists,
    GaveUp,
}

#[derive(Debug, Clone)]
pub(crate) struct NodeFree {
    pub cpus: u64,
    pub memory_mb: u64,
    /// `free[i]` for the node's i-th GPU (position in `Node::gpus`).
    pub gpu_free: Vec<bool>,
}

/// What is free on every node, with totals kept for quick refusals.
#[derive(Debug, Clone)]
pub(crate) struct Free {
    pub nodes: Vec<NodeFree>,
    pub cpus: u64,
    pub memory_mb: u64,
    pub gpus: u64,
    /// Every node by [`Key`]; kept in step by `take` and `give`.
    index: BTreeSet<Key>,
}

impl NodeFree {
    fn free_gpus(&self) -> u32 {
        self.gpu_free.iter().filter(|f| **f).count() as u32
    }

    fn key(&self, node: usize) -> Key {
        (self.free_gpus(), self.cpus, self.memory_mb, node)
    }
}

impl Free {
    pub fn new(nodes: &[Node]) -> Self {
        let nodes: Vec<NodeFree> = nodes
            .iter()
            .map(|n| NodeFree {
                cpus: u64::from(n.cpus),
                memory_mb: n.memory_mb,
                gpu_free: vec![true; n.gpus.len()],
            })
            .collect();
        Free::from_nodes(nodes)
    }

    /// The cluster empty but for the GPUs `keep` refuses.
    pub fn with_gpus(nodes: &[Node], keep: impl Fn(&crate::model::Gpu) -> bool) -> Self {
        let nodes: Vec<NodeFree> = nodes
            .iter()
            .map(|n| NodeFree {
                cpus: u64::from(n.cpus),
                memory_mb: n.memory_mb,
                gpu_free: n.gpus.iter().map(&keep).collect(),
            })
            .collect();
        Free::from_nodes(nodes)
    }

    /// Totals and the index follow from the nodes.
    fn from_nodes(nodes: Vec<NodeFree>) -> Self {
        let cpus = nodes.iter().map(|n| n.cpus).sum();
        let memory_mb = nodes.iter().map(|n| n.memory_mb).sum();
        let gpus = nodes.iter().map(|n| u64::from(n.free_gpus())).sum();
        let index = nodes.iter().enumerate().map(|(i, n)| n.key(i)).collect();
        Free {
            nodes,
            cpus,
            memory_mb,
            gpus,
            index,
        }
    }

    /// What is free in both.
    pub fn intersect(&self, other: &Free) -> Free {
        let nodes = self
            .nodes
            .iter()
            .zip(&other.nodes)
            .map(|(a, b)| NodeFree {
                cpus: a.cpus.min(b.cpus),
                memory_mb: a.memory_mb.min(b.memory_mb),
                gpu_free: a
                    .gpu_free
                    .iter()
                    .zip(&b.gpu_free)
                    .map(|(x, y)| *x && *y)
                    .collect(),
            })
            .collect();
        Free::from_nodes(nodes)
    }

    /// Whether `job` could be placed, changing nothing.
    pub fn fits(&mut self, cluster: &[Node], job: &JobRequest) -> bool {
        match self.place(cluster, job) {
            Some(tasks) => {
                for p in &tasks {
                    self.give(cluster, p);
                }
                true
            }
            None => false,
        }
    }

    /// Takes what `p` holds. Tolerates placements the nodes cannot hold (a
    /// node that shrank since): free never goes below zero.
    pub fn take(&mut self, cluster: &[Node], p: &Placed) {
        let Some(n) = self.nodes.get_mut(p.node) else {
            return;
        };
        self.index.remove(&n.key(p.node));
        let cpus = u64::from(p.cpus).min(n.cpus);
        let mem = p.memory_mb.min(n.memory_mb);
        n.cpus -= cpus;
        n.memory_mb -= mem;
        self.cpus -= cpus;
        self.memory_mb -= mem;
        for g in &p.gpus {
            if let Some(pos) = gpu_pos(cluster, p.node, *g) {
                if n.gpu_free[pos] {
                    n.gpu_free[pos] = false;
                    self.gpus -= 1;
                }
            }
        }
        self.index.insert(n.key(p.node));
    }

    pub fn give(&mut self, cluster: &[Node], p: &Placed) {
        let (Some(n), Some(node)) = (self.nodes.get_mut(p.node), cluster.get(p.node)) else {
            return;
        };
        self.index.remove(&n.key(p.node));
        let cpus = u64::from(p.cpus).min(u64::from(node.cpus) - n.cpus);
        let mem = p.memory_mb.min(node.memory_mb - n.memory_mb);
        n.cpus += cpus;
        n.memory_mb += mem;
        self.cpus += cpus;
        self.memory_mb += mem;
        for g in &p.gpus {
            if let Some(pos) = gpu_pos(cluster, p.node, *g) {
                if !n.gpu_free[pos] {
                    n.gpu_free[pos] = true;
                    self.gpus += 1;
                }
            }
        }
        self.index.insert(n.key(p.node));
    }

    /// Places every task of `job` or none. On success the resources are
    /// taken; on failure nothing changes.
    pub fn place(&mut self, cluster: &[Node], job: &JobRequest) -> Option<Vec<Placed>> {
        self.place_within(cluster, job, &mut { SEARCH_BUDGET })
    }

    /// [`Self::place`], its search (if it needs one) drawing on `budget`,
    /// which the searches of a whole pass share.
    pub fn place_within(
        &mut self,
        cluster: &[Node],
        job: &JobRequest,
        budget: &mut u32,
    ) -> Option<Vec<Placed>> {
        let (cpus, mem, gpus) = totals(job);
        if cpus > self.cpus || mem > self.memory_mb || gpus > self.gpus {
            return None;
        }
        // Biggest tasks first: they have the fewest places to go.
        let mut order: Vec<usize> = (0..job.tasks.len()).collect();
        order.sort_by_key(|&i| {
            let t = &job.tasks[i];
            std::cmp::Reverse((t.gpus, t.cpus, t.memory_mb))
        });
        if let Some(p) = self.place_greedy(cluster, job, &order) {
            return Some(p);
        }
        // Best-fit can paint itself into a corner with tasks of different
        // shapes (one needs the GPUs, the other the memory of the same
        // node). A bounded search over the alternatives finds those; for a
        // single task best-fit is already exact.
        if job.tasks.len() < 2 || *budget == 0 {
            return None;
        }
        match self.search(cluster, job, &order, budget) {
            Search::Found(p) => Some(p),
            Search::NoneExists | Search::GaveUp => None,
        }
    }

    /// Whether some placement of `job` exists on what is free, as far as a
    /// bounded search can tell; `None` when the search ran out of budget.
    pub fn could_place(&mut self, cluster: &[Node], job: &JobRequest) -> Option<bool> {
        let (cpus, mem, gpus) = totals(job);
        if cpus > self.cpus || mem > self.memory_mb || gpus > self.gpus {
            return Some(false);
        }
        let order: Vec<usize> = (0..job.tasks.len()).collect();
        if let Some(tasks) = self.place_greedy(cluster, job, &order) {
            for p in &tasks {
                self.give(cluster, p);
            }
            return Some(true);
        }
        if job.tasks.len() < 2 {
            return Some(false);
        }
        match self.search(cluster, job, &order, &mut { SEARCH_BUDGET }) {
            Search::Found(tasks) => {
                for p in &tasks {
                    self.give(cluster, p);
                }
                Some(true)
            }
            Search::NoneExists => Some(false),
            Search::GaveUp => None,
        }
    }

    fn place_greedy(
        &mut self,
        cluster: &[Node],
        job: &JobRequest,
        order: &[usize],
    ) -> Option<Vec<Placed>> {
        let mut placed: Vec<Option<Placed>> = vec![None; job.tasks.len()];
        for &i in order {
            match self.place_task(cluster, &job.tasks[i]) {
                Some(p) => {
                    self.take(cluster, &p);
                    placed[i] = Some(p);
                }
                None => {
                    for p in placed.iter().flatten() {
                        self.give(cluster, p);
                    }
                    return None;
                }
            }
        }
        placed.into_iter().collect()
    }

    /// Depth-first search over the nodes each task could use, in `order`.
    /// On `Found` the resources are taken; otherwise nothing changes.
    /// At most [`SEARCH_BUDGET`] attempts, and no more than `shared` has
    /// left; what it uses comes off `shared`.
    fn search(
        &mut self,
        cluster: &[Node],
        job: &JobRequest,
        order: &[usize],
        shared: &mut u32,
    ) -> Search {
        let start = SEARCH_BUDGET.min(*shared);
        let mut budget = start;
        let mut placed: Vec<Option<Placed>> = vec![None; job.tasks.len()];
        let found = self.search_from(cluster, job, order, 0, &mut placed, &mut budget);
        *shared -= start - budget;
        match found {
            Some(true) => match placed.into_iter().collect() {
                Some(p) => Search::Found(p),
                None => Search::GaveUp,
            },
            Some(false) => Search::NoneExists,
            None => Search::GaveUp,
        }
    }

    /// `Some(true)`: all tasks from `depth` on are placed (and taken);
    /// `Some(false)`: no placement exists; `None`: out of budget.
    fn search_from(
        &mut self,
        cluster: &[Node],
        job: &JobRequest,
        order: &[usize],
        depth: usize,
        placed: &mut [Option<Placed>],
        budget: &mut u32,
    ) -> Option<bool> {
        let Some(&i) = order.get(depth) else {
            return Some(true);
        };
        let t = &job.tasks[i];
        let mut exhausted = false;
        for node in 0..self.nodes.len() {
            if !self.task_fits_node(cluster, node, t) {
                continue;
            }
            if *budget == 0 {
                exhausted = true;
                break;
            }
            *budget -= 1;
            let p = Placed {
                node,
                cpus: t.cpus,
                memory_mb: t.memory_mb,
                gpus: pick_gpus(&self.nodes[node], &cluster[node], t),
            };
            self.take(cluster, &p);
            placed[i] = Some(p.clone());
            match self.search_from(cluster, job, order, depth + 1, placed, budget) {
                Some(true) => return Some(true),
                Some(false) => {}
                None => exhausted = true,
            }
            self.give(cluster, &p);
            placed[i] = None;
            if exhausted {
                break;
            }
        }
        if exhausted {
            None
        } else {
            Some(false)
        }
    }

    fn task_fits_node(&self, cluster: &[Node], node: usize, t: &TaskRequest) -> bool {
        let (n, spec) = (&self.nodes[node], &cluster[node]);
        n.cpus >= u64::from(t.cpus)
            && n.memory_mb >= t.memory_mb
            && n.gpu_free
                .iter()
                .zip(&spec.gpus)
                .filter(|(free, g)| **free && t.wants(g))
                .count()
                >= t.gpus as usize
    }

    /// The best node for one task: the one it fills most snugly, so large
    /// holes stay open for large tasks.
    fn place_task(&self, cluster: &[Node], t: &TaskRequest) -> Option<Placed> {
        if t.gpu_type.is_none() {
            return self.place_task_indexed(cluster, t);
        }
        let mut best: Option<(usize, (usize, u64, u64))> = None;
        for (i, (n, node)) in self.nodes.iter().zip(cluster).enumerate() {
            if n.cpus < u64::from(t.cpus) || n.memory_mb < t.memory_mb {
                continue;
            }
            let usable = n
                .gpu_free
                .iter()
                .zip(&node.gpus)
                .filter(|(free, g)| **free && t.wants(g))
                .count();
            if usable < t.gpus as usize {
                continue;
            }
            // Tasks without GPUs go where fewest GPUs would be stranded.
            let free_gpus = n.gpu_free.iter().filter(|f| **f).count();
            let waste = (
                if t.gpus == 0 {
                    free_gpus
                } else {
                    usable - t.gpus as usize
                },
                n.cpus - u64::from(t.cpus),
                n.memory_mb - t.memory_mb,
            );
            if best.is_none_or(|(_, w)| waste < w) {
                best = Some((i, waste));
            }
        }
        let (i, _) = best?;
        Some(Placed {
            node: i,
            cpus: t.cpus,
            memory_mb: t.memory_mb,
            gpus: pick_gpus(&self.nodes[i], &cluster[i], t),
        })
    }
}

impl Free {
    /// Best fit through the index, for a task that takes any GPU model:
    /// the same node the scan in `place_task` picks (least GPUs, then CPUs,
    /// then memory left over; the lowest node among equals), found by
    /// walking the index from the smallest fitting key of each GPU level.
    fn place_task_indexed(&self, cluster: &[Node], t: &TaskRequest) -> Option<Placed> {
        let (need, cpus, mem) = (t.gpus, u64::from(t.cpus), t.memory_mb);
        let mut level = need;
        while let Some(&(free, ..)) = self.index.range((level, cpus, 0, 0)..).next() {
            let found = self
                .index
                .range((free, cpus, 0, 0)..=(free, u64::MAX, u64::MAX, usize::MAX))
                .find(|(_, _, m, _)| *m >= mem);
            // The first key of a level with the CPUs and the memory is the
            // tightest on it: keys sort by CPUs, then memory, then node.
            if let Some(&(_, _, _, i)) = found {
                return Some(Placed {
                    node: i,
                    cpus: t.cpus,
                    memory_mb: t.memory_mb,
                    gpus: pick_gpus(&self.nodes[i], &cluster[i], t),
                });
            }
            level = free.checked_add(1)?;
        }
        None
    }
}

pub(crate) fn totals(job: &JobRequest) -> (u64, u64, u64) {
    job.tasks.iter().fold((0, 0, 0), |(c, m, g), t| {
        (
            c + u64::from(t.cpus),
            m + t.memory_mb,
            g + u64::from(t.gpus),
        )
    })
}

fn gpu_pos(cluster: &[Node], node: usize, index: u32) -> Option<usize> {
    cluster
        .get(node)?
        .gpus
        .iter()
        .position(|g| g.index == index)
}

/// GPU indices for a task: the tightest run of adjacent free GPUs that holds
/// it (adjacent GPUs usually share a PCIe switch or NVLink), else the lowest
/// free ones.
fn pick_gpus(free: &NodeFree, node: &Node, t: &TaskRequest) -> Vec<u32> {
    let need = t.gpus as usize;
    if need == 0 {
        return Vec::new();
    }
    let usable: Vec<bool> = free
        .gpu_free
        .iter()
        .zip(&node.gpus)
        .map(|(f, g)| *f && t.wants(g))
        .collect();
    let mut best: Option<(usize, usize)> = None; // (start, run length)
    let mut i = 0;
    while i < usable.len() {
        if !usable[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < usable.len() && usable[i] {
            i += 1;
        }
        let len = i - start;
        if len >= need && best.is_none_or(|(_, l)| len < l) {
            best = Some((start, len));
        }
    }
    let positions: Vec<usize> = match best {
        Some((start, _)) => (start..start + need).collect(),
        None => usable
            .iter()
            .enumerate()
            .filter(|(_, u)| **u)
            .map(|(p, _)| p)
            .take(need)
            .collect(),
    };
    positions.into_iter().map(|p| node.gpus[p].index).collect()
}
