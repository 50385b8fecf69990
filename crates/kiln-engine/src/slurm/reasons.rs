//! Why a Slurm job pends, in plain words (docs/engines.md 3.8). Slurm says
//! `Resources` or `Priority`; people need "waiting for 2 GPUs on one node in partition
//! debug; 3 running jobs hold them". Each answer carries a stable `code` and its
//! `params` (with Slurm's own `slurmReason`) so the UI can word it in every language.

use std::collections::BTreeMap;

use kiln_spec::words::count;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::hostlist::compress_hostlist;
use super::parse::{SlurmJob, SlurmNode};
use super::state::{job_view, JobView};

/// What the job asks of one node: its largest task, since each task runs on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    pub gpus: u64,
    /// The Slurm gres type the request names, if any.
    pub gpu_type: Option<String>,
    pub cpus: u64,
    pub memory_mb: u64,
}

/// Everything the words are made from, all from the last poll.
#[derive(Debug, Clone)]
pub struct PendingFacts<'a> {
    /// The pending job (for a heterogeneous job, its first component).
    pub job: &'a SlurmJob,
    pub heterogeneous: bool,
    pub ask: &'a Ask,
    pub nodes: &'a [SlurmNode],
    pub jobs: &'a [SlurmJob],
    /// kiln's names (`alice~bert`) for the Slurm jobs kiln submitted; other jobs are
    /// named "Slurm job 812 (bob)".
    pub kiln_names: &'a BTreeMap<u64, String>,
}

/// A pending reason as kiln shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingWords {
    /// Stable, e.g. `slurm.resources`.
    pub code: String,
    pub params: Map<String, Value>,
    pub message: String,
    /// Waiting cannot help: the loop fails the job.
    pub never_runs: bool,
}

/// How many holders a message names before "…".
const NAMED: usize = 3;

/// Turns the job's `state_reason` into words.
pub fn pending_words(f: &PendingFacts) -> PendingWords {
    let raw = f.job.state_reason.trim();
    // 22.05 may append details: "ReqNodeNotAvail, UnavailableNodes:n3".
    let reason = raw.split([',', ' ']).next().unwrap_or_default();
    let partition = f.job.partition.as_str();
    let id = f.job.het_job_id.unwrap_or(f.job.id);
    let mut params = Map::new();
    params.insert("slurmReason".into(), json!(raw));
    params.insert("slurmJob".into(), json!(id));
    params.insert("partition".into(), json!(partition));
    let (code, message, never_runs) = match reason {
        "Resources" => {
            let (message, extra) = resources(f);
            params.extend(extra);
            ("resources", message, false)
        }
        "Priority" => {
            let ahead = ahead_of(f);
            params.insert("ahead".into(), json!(ahead));
            let jobs = count(ahead as u64, "job");
            let m = format!("{jobs} ahead of it in partition {partition} (Slurm's priority order)");
            ("priority", m, false)
        }
        "None" | "" => {
            let mut m = format!("submitted to Slurm as job {id}, not yet considered");
            if f.heterogeneous {
                m.push_str(" (waits for the backfill pass)");
            }
            ("notConsidered", m, false)
        }
        "ReqNodeNotAvail" | "NodeDown" => {
            let down: Vec<String> = in_partition(f)
                .filter(|n| n.unavailable())
                .map(|n| match n.reason.trim() {
                    "" => n.name.clone(),
                    why => format!("{} ({why})", n.name),
                })
                .collect();
            params.insert("nodes".into(), json!(down));
            let mut m = "the nodes it needs are down or drained".to_string();
            if !down.is_empty() {
                m = format!("{m}: {}", down.join(", "));
            }
            ("nodesDown", m, false)
        }
        "PartitionDown" => (
            "partitionDown",
            format!("partition {partition} is down"),
            false,
        ),
        "PartitionInactive" => (
            "partitionDown",
            format!("partition {partition} is inactive"),
            false,
        ),
        "PartitionTimeLimit" => {
            let limit = f.job.time_limit_min.map(minutes);
            params.insert("timeLimitMinutes".into(), json!(f.job.time_limit_min));
            let m = match limit {
                Some(l) => format!("its time limit of {l} is over partition {partition}'s limit"),
                None => format!("its time limit is over partition {partition}'s limit"),
            };
            ("partitionTimeLimit", m, false)
        }
        "PartitionNodeLimit" => (
            "partitionNodeLimit",
            format!("it needs more nodes than partition {partition} allows a job"),
            true,
        ),
        "BadConstraints" => (
            "badConstraints",
            format!("no node in partition {partition} can ever give what it asks for"),
            true,
        ),
        r if ["AssocGrp", "AssocMax", "QOSGrp", "QOSMax"]
            .iter()
            .any(|p| r.starts_with(p)) =>
        {
            let m = format!(
                "over a Slurm limit on your account ({r}); it starts when your other jobs end"
            );
            ("accountLimit", m, false)
        }
        "JobHeldAdmin" | "JobHeldUser" => (
            "held",
            format!("held in Slurm (scontrol release {id})"),
            false,
        ),
        "Prolog" | "Configuring" => {
            let nodes = &f.job.nodes;
            params.insert("nodes".into(), json!(nodes));
            let m = match nodes.len() {
                0 => "starting".to_string(),
                1..=4 => format!("starting on {}", nodes.join(", ")),
                _ => format!("starting on {}", compress_hostlist(nodes)),
            };
            ("starting", m, false)
        }
        other => ("other", format!("Slurm: {other}"), false),
    };
    PendingWords {
        code: format!("slurm.{code}"),
        params,
        message,
        never_runs,
    }
}

fn in_partition<'a>(f: &'a PendingFacts) -> impl Iterator<Item = &'a SlurmNode> {
    let p = f.job.partition.as_str();
    f.nodes
        .iter()
        .filter(move |n| n.partitions.iter().any(|q| q == p))
}

/// `Resources`: which resource no node has enough of, and who holds it.
fn resources(f: &PendingFacts) -> (String, Map<String, Value>) {
    let ask = f.ask;
    let ty = ask.gpu_type.as_deref();
    let up: Vec<&SlurmNode> = in_partition(f).filter(|n| !n.unavailable()).collect();
    let best = |free: &dyn Fn(&SlurmNode) -> u64, nodes: &[&SlurmNode]| {
        nodes.iter().map(|n| free(n)).max().unwrap_or(0)
    };
    let with_gpus: Vec<&SlurmNode> = up
        .iter()
        .copied()
        .filter(|n| n.free_gpus(ty) >= ask.gpus)
        .collect();
    let with_cpus: Vec<&SlurmNode> = with_gpus
        .iter()
        .copied()
        .filter(|n| n.free_cpus() >= ask.cpus)
        .collect();
    let (resource, need, free, what) = if ask.gpus > 0 && with_gpus.is_empty() {
        let what = match ty {
            Some(t) => format!("{} ({t})", count(ask.gpus, "GPU")),
            None => count(ask.gpus, "GPU"),
        };
        ("gpus", ask.gpus, best(&|n| n.free_gpus(ty), &up), what)
    } else if with_cpus.is_empty() {
        let free = best(&|n| n.free_cpus(), &with_gpus);
        ("cpus", ask.cpus, free, count(ask.cpus, "CPU"))
    } else {
        let free = best(&|n| n.free_memory_mb(), &with_cpus);
        let what = format!("{} MiB of memory", ask.memory_mb);
        ("memory", ask.memory_mb, free, what)
    };
    let holders = holders(f, resource == "gpus");
    let partition = &f.job.partition;
    let mut m = format!("waiting for {what} on one node in partition {partition}");
    if !holders.is_empty() {
        let n = holders.len();
        let verb = if n == 1 { "holds" } else { "hold" };
        let mut names = holders[..n.min(NAMED)].join(", ");
        if n > NAMED {
            names.push_str(", …");
        }
        m = format!(
            "{m}; {} {verb} them: {names}",
            count(n as u64, "running job")
        );
    }
    let mut params = Map::new();
    params.insert("resource".into(), json!(resource));
    params.insert("need".into(), json!(need));
    params.insert("free".into(), json!(free));
    params.insert("gpuType".into(), json!(ty));
    params.insert("holders".into(), json!(holders));
    (m, params)
}

/// Running jobs on the partition's nodes, holding GPUs where `gpus`, named as kiln
/// names them.
fn holders(f: &PendingFacts, gpus: bool) -> Vec<String> {
    let nodes: Vec<&str> = in_partition(f).map(|n| n.name.as_str()).collect();
    let ty = f.ask.gpu_type.as_deref();
    let mut seen = Vec::new();
    let mut names = Vec::new();
    for j in f.jobs {
        let id = j.het_job_id.unwrap_or(j.id);
        let running = matches!(job_view(&j.id.to_string(), &j.state), Ok(JobView::Running));
        let here = j.nodes.iter().any(|n| nodes.contains(&n.as_str()));
        let holds = !gpus
            || j.gpus
                .iter()
                .any(|g| g.count > 0 && (ty.is_none() || g.gpu_type.as_deref() == ty));
        if running && here && holds && !seen.contains(&id) {
            seen.push(id);
            names.push(match f.kiln_names.get(&id) {
                Some(name) => name.clone(),
                None => format!("Slurm job {id} ({})", j.user),
            });
        }
    }
    names
}

/// Pending jobs in the same partition that Slurm ranks above this one.
fn ahead_of(f: &PendingFacts) -> usize {
    let me = f.job.het_job_id.unwrap_or(f.job.id);
    let Some(mine) = f.job.priority else {
        return 0;
    };
    let mut seen = Vec::new();
    for j in f.jobs {
        let id = j.het_job_id.unwrap_or(j.id);
        let pending = matches!(job_view(&j.id.to_string(), &j.state), Ok(JobView::Pending));
        let higher = j.priority.is_some_and(|p| p > mine);
        if id != me && pending && higher && j.partition == f.job.partition && !seen.contains(&id) {
            seen.push(id);
        }
    }
    seen.len()
}

/// Minutes in the largest whole unit: "2 days", "3 hours", "90 minutes".
fn minutes(m: u64) -> String {
    match m {
        0 => count(0u64, "minute"),
        m if m % 1440 == 0 => count(m / 1440, "day"),
        m if m % 60 == 0 => count(m / 60, "hour"),
        m => count(m, "minute"),
    }
}

#[cfg(test)]
#[path = "reasons_tests.rs"]
mod tests;
