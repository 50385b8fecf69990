//! Whether a job could ever run on a cluster, decided before it is stored.
//!
//! A job no node can hold would otherwise wait forever with a "can never run
//! here" reason, long after the client that submitted it has gone. The server
//! refuses such a job at submission with the field and resource that are too
//! big; this module finds them. An engine whose capacity can grow (a cloud or
//! Slurm cluster that adds nodes on demand) says so in [`Capacity`], and then
//! nothing is refused for its size.

use std::fmt;

use kiln_spec::formats::native::NativePaths;
use kiln_spec::validate::{Field, Paths};
use kiln_spec::words::count;
use kiln_spec::JobSpec;
use serde::Serialize;

use crate::model::{JobRequest, Node, TaskRequest};
use crate::place::Free;

/// What the cluster can hold, as its engine describes it.
#[derive(Debug, Clone, Copy)]
pub struct Capacity<'a> {
    pub nodes: &'a [Node],
    /// The engine adds nodes on demand: what is here now is no limit.
    pub can_grow: bool,
}

/// One reason a job can never run on the cluster, as data (for the reader's
/// language) with its English words in `Display`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "code",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum TooBig {
    /// A role wants a GPU model that no node has.
    NoGpuType {
        role: usize,
        /// The model was set for the whole job (`gpuType`), not the role.
        job_wide: bool,
        gpu_type: String,
        /// Models the cluster has, each once, in node order.
        models: Vec<String>,
    },
    /// Each task of a role needs more GPUs (of its model) than one node has.
    TaskGpus {
        role: usize,
        task: String,
        need: u32,
        gpu_type: Option<String>,
        largest: u64,
    },
    TaskCpus {
        role: usize,
        task: String,
        need: u32,
        largest: u32,
    },
    TaskMemory {
        role: usize,
        task: String,
        need_mb: u64,
        largest_mb: u64,
    },
    /// Each resource fits on some node, but no node has all of them at once.
    TaskShape {
        role: usize,
        task: String,
        gpus: u32,
        gpu_type: Option<String>,
        cpus: u32,
        memory_mb: u64,
    },
    /// The tasks together need more GPUs (of a model) than the cluster has.
    JobGpus {
        need: u64,
        gpu_type: Option<String>,
        total: u64,
    },
    JobCpus {
        need: u64,
        total: u64,
    },
    JobMemory {
        need_mb: u64,
        total_mb: u64,
    },
    /// Every total fits, but no placement of all tasks together exists.
    JobGang {
        tasks: u64,
        nodes: u64,
    },
}

impl TooBig {
    /// The field of the job that asks for too much, in kiln's own format.
    pub fn field(&self) -> Field<'static> {
        match self {
            TooBig::NoGpuType { job_wide: true, .. } => Field::GpuType,
            TooBig::NoGpuType { role, .. } => Field::RoleGpuType(*role),
            TooBig::TaskGpus { role, .. } => Field::Gpus(*role),
            TooBig::TaskCpus { role, .. } => Field::Cpus(*role),
            TooBig::TaskMemory { role, .. } => Field::Memory(*role),
            TooBig::TaskShape { .. }
            | TooBig::JobGpus { .. }
            | TooBig::JobCpus { .. }
            | TooBig::JobMemory { .. }
            | TooBig::JobGang { .. } => Field::Roles,
        }
    }

    /// The field's path as `errors[].path` names it (`roles[0].gpus`).
    pub fn path(&self) -> String {
        NativePaths { single: false }.path(self.field())
    }

    /// Whether the cluster has no GPU at all and this is about GPUs: then
    /// the server can say how to try GPU jobs on a machine without one.
    pub fn wants_gpus(&self) -> bool {
        matches!(
            self,
            TooBig::NoGpuType { .. } | TooBig::TaskGpus { .. } | TooBig::JobGpus { .. }
        )
    }
}

/// `n` GPUs, with the model when one is wanted: "1 GPU", "2 A100 GPUs".
pub(crate) fn gpus(n: u64, ty: Option<&str>) -> String {
    match ty {
        Some(t) => count(n, &format!("{t} GPU")),
        None => count(n, "GPU"),
    }
}

impl fmt::Display for TooBig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TooBig::NoGpuType {
                gpu_type, models, ..
            } => {
                if models.is_empty() {
                    write!(f, "no node has a {gpu_type} GPU; this cluster has no GPUs")
                } else {
                    write!(
                        f,
                        "no node has a {gpu_type} GPU; the models here are {}",
                        models.join(", ")
                    )
                }
            }
            TooBig::TaskGpus {
                need,
                gpu_type,
                largest,
                ..
            } => write!(
                f,
                "needs {} on one node; the largest node has {largest}",
                gpus(u64::from(*need), gpu_type.as_deref())
            ),
            TooBig::TaskCpus { need, largest, .. } => write!(
                f,
                "needs {} on one node; the largest node has {largest}",
                count(*need, "CPU")
            ),
            TooBig::TaskMemory {
                need_mb,
                largest_mb,
                ..
            } => write!(
                f,
                "needs {need_mb} MiB memory on one node; the largest node has {largest_mb} MiB"
            ),
            TooBig::TaskShape {
                task,
                gpus: g,
                gpu_type,
                cpus,
                memory_mb,
                ..
            } => write!(
                f,
                "task {task} needs {}, {} and {memory_mb} MiB memory on one node, and no node has all of that",
                gpus(u64::from(*g), gpu_type.as_deref()),
                count(*cpus, "CPU")
            ),
            TooBig::JobGpus {
                need,
                gpu_type,
                total,
            } => write!(
                f,
                "the tasks need {} in all; the cluster has {total}",
                gpus(*need, gpu_type.as_deref())
            ),
            TooBig::JobCpus { need, total } => write!(
                f,
                "the tasks need {} in all; the cluster has {total}",
                count(*need, "CPU")
            ),
            TooBig::JobMemory { need_mb, total_mb } => write!(
                f,
                "the tasks need {need_mb} MiB memory in all; the cluster has {total_mb} MiB"
            ),
            TooBig::JobGang { tasks, nodes } => write!(
                f,
                "the {} cannot be placed together on the {}, however long the job waits",
                count(*tasks, "task"),
                count(*nodes, "node")
            ),
        }
    }
}

/// One request per task, roles in spec order, with the task's id.
pub fn task_requests(spec: &JobSpec) -> Vec<TaskRequest> {
    kiln_spec::env::task_ids(spec)
        .iter()
        .filter_map(|id| {
            let r = spec.role(id.role())?;
            Some(TaskRequest {
                id: id.to_string(),
                cpus: r.cpus,
                memory_mb: r.memory_mb,
                gpus: r.gpus,
                gpu_type: r.effective_gpu_type(spec).map(str::to_owned),
            })
        })
        .collect()
}

/// Why `spec` could never run on `cap`, every reason at the most specific
/// level found: a role too big for any node hides the job-wide totals it
/// would also break. Empty when it may run, when the capacity can grow, or
/// when no node is known yet (nothing to measure against).
pub fn never_fits(spec: &JobSpec, cap: Capacity<'_>) -> Vec<TooBig> {
    let nodes = cap.nodes;
    if cap.can_grow || nodes.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut job_wide_type_reported = false;
    for (i, role) in spec.roles.iter().enumerate() {
        if role.replicas == 0 {
            continue;
        }
        let task = format!("{}-0", role.name);
        let ty = role.effective_gpu_type(spec).map(str::to_owned);
        let probe = TaskRequest {
            id: task.clone(),
            cpus: role.cpus,
            memory_mb: role.memory_mb,
            gpus: role.gpus,
            gpu_type: ty.clone(),
        };
        let before = out.len();
        if let Some(t) = ty.as_deref().filter(|_| role.gpus > 0) {
            let any = nodes.iter().flat_map(|n| &n.gpus).any(|g| probe.wants(g));
            if !any {
                let job_wide = role.gpu_type.is_none();
                if !(job_wide && job_wide_type_reported) {
                    out.push(TooBig::NoGpuType {
                        role: i,
                        job_wide,
                        gpu_type: t.to_owned(),
                        models: models(nodes),
                    });
                }
                job_wide_type_reported |= job_wide;
                continue;
            }
        }
        let largest_gpus = nodes.iter().map(|n| wanted(&probe, n)).max().unwrap_or(0);
        if u64::from(role.gpus) > largest_gpus {
            out.push(TooBig::TaskGpus {
                role: i,
                task: task.clone(),
                need: role.gpus,
                gpu_type: ty.clone(),
                largest: largest_gpus,
            });
        }
        let largest_cpus = nodes.iter().map(|n| n.cpus).max().unwrap_or(0);
        if role.cpus > largest_cpus {
            out.push(TooBig::TaskCpus {
                role: i,
                task: task.clone(),
                need: role.cpus,
                largest: largest_cpus,
            });
        }
        let largest_mb = nodes.iter().map(|n| n.memory_mb).max().unwrap_or(0);
        if role.memory_mb > largest_mb {
            out.push(TooBig::TaskMemory {
                role: i,
                task: task.clone(),
                need_mb: role.memory_mb,
                largest_mb,
            });
        }
        let one_node_holds_all = nodes.iter().any(|n| {
            n.cpus >= role.cpus
                && n.memory_mb >= role.memory_mb
                && wanted(&probe, n) >= u64::from(role.gpus)
        });
        if out.len() == before && !one_node_holds_all {
            out.push(TooBig::TaskShape {
                role: i,
                task,
                gpus: role.gpus,
                gpu_type: ty,
                cpus: role.cpus,
                memory_mb: role.memory_mb,
            });
        }
    }
    if !out.is_empty() {
        return out;
    }
    let tasks = task_requests(spec);
    totals_too_big(nodes, &tasks, &mut out);
    if !out.is_empty() {
        return out;
    }
    let job = JobRequest {
        tasks,
        ..Default::default()
    };
    // Only a search that proved there is no placement refuses the job; one
    // that ran out of budget lets it wait.
    if Free::new(nodes).could_place(nodes, &job) == Some(false) {
        out.push(TooBig::JobGang {
            tasks: job.tasks.len() as u64,
            nodes: nodes.len() as u64,
        });
    }
    out
}

/// The job's totals against the whole cluster's, GPUs per wanted model.
fn totals_too_big(nodes: &[Node], tasks: &[TaskRequest], out: &mut Vec<TooBig>) {
    let mut by_type: Vec<(Option<&str>, u64, &TaskRequest)> = Vec::new();
    for t in tasks.iter().filter(|t| t.gpus > 0) {
        let key = t.gpu_type.as_deref();
        match by_type.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, n, _)) => *n += u64::from(t.gpus),
            None => by_type.push((key, u64::from(t.gpus), t)),
        }
    }
    for (ty, need, probe) in by_type {
        let total: u64 = nodes.iter().map(|n| wanted(probe, n)).sum();
        if need > total {
            out.push(TooBig::JobGpus {
                need,
                gpu_type: ty.map(str::to_owned),
                total,
            });
        }
    }
    let need_cpus: u64 = tasks.iter().map(|t| u64::from(t.cpus)).sum();
    let total_cpus: u64 = nodes.iter().map(|n| u64::from(n.cpus)).sum();
    if need_cpus > total_cpus {
        out.push(TooBig::JobCpus {
            need: need_cpus,
            total: total_cpus,
        });
    }
    let need_mb: u64 = tasks.iter().map(|t| t.memory_mb).sum();
    let total_mb: u64 = nodes.iter().map(|n| n.memory_mb).sum();
    if need_mb > total_mb {
        out.push(TooBig::JobMemory { need_mb, total_mb });
    }
}

/// GPUs of `node` the task would take.
fn wanted(task: &TaskRequest, node: &Node) -> u64 {
    node.gpus.iter().filter(|g| task.wants(g)).count() as u64
}

fn models(nodes: &[Node]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for g in nodes.iter().flat_map(|n| &n.gpus) {
        if !seen.contains(&g.model) {
            seen.push(g.model.clone());
        }
    }
    seen
}

#[cfg(test)]
#[path = "fit_tests.rs"]
mod tests;
