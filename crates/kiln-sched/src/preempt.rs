//! Choosing whom to preempt for a waiting job: as few as will make room,
//! the least valuable first.

use crate::model::{JobRequest, Node, Placed, RunningJob};
use crate::place::{totals, Free};

/// A running job whose resources a waiting job may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'r> {
    pub job: &'r RunningJob,
    /// Only because it borrows from the waiting job's queue, not because it
    /// started ahead of it: the waiting job must be within its quota.
    pub reclaim_only: bool,
}

impl<'r> Candidate<'r> {
    /// Already stopping: its resources come free at no cost.
    pub fn stopping(job: &'r RunningJob) -> Self {
        Candidate {
            job,
            reclaim_only: false,
        }
    }

    pub fn victim(job: &'r RunningJob, reclaim_only: bool) -> Self {
        Candidate { job, reclaim_only }
    }

    /// Cheaper to take first: jobs stopping anyway, then borrowers, then
    /// the most recently started (least work lost), then the most recently
    /// submitted.
    fn cost(&self) -> (u8, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>) {
        let class = if self.job.stopping {
            0
        } else if self.reclaim_only {
            1
        } else {
            2
        };
        (
            class,
            std::cmp::Reverse(self.job.started),
            std::cmp::Reverse(self.job.seq),
        )
    }
}

/// The victims that make room for `job`, and where it would go then; None
/// when even all of `candidates` would not.
pub(crate) fn find_victims<'r>(
    nodes: &[Node],
    free: &Free,
    job: &JobRequest,
    candidates: &[Candidate<'r>],
) -> Option<(Vec<Candidate<'r>>, Vec<Placed>)> {
    let (cpus, mem, gpus) = totals(job);
    let mut order: Vec<Candidate<'r>> = candidates.to_vec();
    order.sort_by_key(Candidate::cost);
    // The totals of everything on offer must cover the job before any
    // placement is tried.
    let (mut c, mut m, mut g) = (free.cpus, free.memory_mb, free.gpus);
    for cand in &order {
        for p in &cand.job.tasks {
            c += u64::from(p.cpus);
            m += p.memory_mb;
            g += p.gpus.len() as u64;
        }
    }
    if cpus > c || mem > m || gpus > g {
        return None;
    }
    let mut world = free.clone();
    let mut chosen: Vec<Candidate<'r>> = Vec::new();
    let mut fits = false;
    for cand in order {
        for p in &cand.job.tasks {
            world.give(nodes, p);
        }
        chosen.push(cand);
        if world.fits(nodes, job) {
            fits = true;
            break;
        }
    }
    if !fits {
        return None;
    }
    // Spare the most valuable of those taken when the rest suffice.
    let mut i = chosen.len();
    while i > 0 {
        i -= 1;
        if chosen[i].job.stopping {
            continue;
        }
        for p in &chosen[i].job.tasks {
            world.take(nodes, p);
        }
        if world.fits(nodes, job) {
            chosen.remove(i);
        } else {
            for p in &chosen[i].job.tasks {
                world.give(nodes, p);
            }
        }
    }
    let tasks = world.place(nodes, job)?;
    // A stopping job the placement does not use is not waited for.
    chosen.retain(|v| {
        !v.job.stopping
            || v.job
                .tasks
                .iter()
                .any(|p| tasks.iter().any(|t| t.node == p.node))
    });
    Some((chosen, tasks))
}
