//! The environment of every task, given a job and where its tasks were placed.
//! Names and meanings are the contract of DESIGN.md: OpenPAI's `PAI_*`,
//! PyTorch's rendezvous variables, the GPU list, and kiln's own.

use std::collections::HashMap;

use indexmap::IndexMap;
use serde::Serialize;

use crate::error::SpecError;
use crate::formats::reader::scalar_text;
use crate::ids::{JobId, TaskId};
use crate::model::JobSpec;

/// Where one task runs and what it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPlacement {
    pub task: TaskId,
    pub host_ip: String,
    /// GPU indices on the host, as CUDA numbers them in PCI bus order.
    pub gpus: Vec<u32>,
    /// Ports per label of the role's port list.
    pub ports: IndexMap<String, Vec<u16>>,
}

/// Everything the environment depends on beyond the job itself.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderContext {
    pub job_id: JobId,
    pub attempt: u32,
    /// `PAI_DEFAULT_FS_URI`: where the user's files are, as tasks see them.
    pub default_fs_uri: String,
    /// The user's space inside the task (`/mnt`), when tasks see it:
    /// OpenPAI's codeDir and dataDir are folders in it.
    pub space_dir: Option<String>,
    pub output_dir: String,
    pub tensorboard_dir: String,
    /// Allocated per job so concurrent jobs never share a rendezvous port.
    pub master_port: u16,
    /// One entry per task of the job.
    pub placement: Vec<TaskPlacement>,
}

/// The rendered environment of one task, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskEnv {
    pub task: TaskId,
    pub env: IndexMap<String, String>,
}

/// Every task of the job, roles in spec order, indices from 0.
pub fn task_ids(job: &JobSpec) -> Vec<TaskId> {
    job.roles
        .iter()
        .flat_map(|r| (0..r.replicas).map(move |i| (r.name.as_str(), i)))
        .filter_map(|(role, i)| TaskId::new(role, i).ok())
        .collect()
}

/// Tasks in torch rank order: the `master` role first (rank 0), then the other
/// roles in spec order.
pub fn rank_order(job: &JobSpec) -> Vec<TaskId> {
    let mut ids = task_ids(job);
    ids.sort_by_key(|t| t.role() != "master");
    ids
}

/// `gpuNumber,cpuNumber,memoryMB,shmMB` as OpenPAI writes PAI_RESOURCE_<r>.
fn resource_text(role: &crate::model::TaskRole) -> String {
    format!(
        "{},{},{},{}",
        role.gpus, role.cpus, role.memory_mb, role.shm_mb
    )
}

/// OpenPAI renders an unset completion count as -1.
fn count_text(n: Option<u32>) -> String {
    n.map_or_else(|| "-1".into(), |n| n.to_string())
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks that the placement covers each task once with the GPUs and ports
/// its role asks for.
fn check_placement(job: &JobSpec, ctx: &RenderContext) -> Result<(), SpecError> {
    let ids = task_ids(job);
    if ctx.placement.len() != ids.len() {
        return Err(SpecError::Placement(format!(
            "{} placed, the job has {}",
            crate::words::count(ctx.placement.len() as u64, "task"),
            ids.len()
        )));
    }
    let by_task: HashMap<&TaskId, &TaskPlacement> =
        ctx.placement.iter().map(|p| (&p.task, p)).collect();
    for id in &ids {
        let p = by_task
            .get(id)
            .ok_or_else(|| SpecError::Placement(format!("task {id} is not placed")))?;
        let role = job
            .role(id.role())
            .ok_or_else(|| SpecError::Placement(format!("no role {}", id.role())))?;
        if p.gpus.len() != role.gpus as usize {
            return Err(SpecError::Placement(format!(
                "task {id} needs {}, placed on {}",
                crate::words::count(role.gpus, "GPU"),
                p.gpus.len()
            )));
        }
        for port in &role.ports {
            let got = p.ports.get(&port.label).map_or(0, Vec::len);
            if got != usize::from(port.count) {
                return Err(SpecError::Placement(format!(
                    "task {id} needs {} {} ports, given {got}",
                    port.count, port.label
                )));
            }
        }
    }
    Ok(())
}

/// `rel` (a clean relative path, empty for the root) inside `root`.
fn inside(root: &str, rel: &str) -> String {
    if rel.is_empty() {
        root.to_owned()
    } else {
        format!("{}/{rel}", root.trim_end_matches('/'))
    }
}

/// The environment of every task of the job, in [`task_ids`] order.
pub fn render_env(job: &JobSpec, ctx: &RenderContext) -> Result<Vec<TaskEnv>, SpecError> {
    check_placement(job, ctx)?;
    let by_task: HashMap<&TaskId, &TaskPlacement> =
        ctx.placement.iter().map(|p| (&p.task, p)).collect();
    let placed = |id: &TaskId| by_task.get(id).copied();

    // Variables every task shares.
    let mut common: IndexMap<String, String> = IndexMap::new();
    common.insert("PAI_JOB_NAME".into(), ctx.job_id.to_string());
    common.insert("PAI_USER_NAME".into(), ctx.job_id.user().into());
    common.insert("PAI_DEFAULT_FS_URI".into(), ctx.default_fs_uri.clone());
    // OpenPAI v1's folders, as paths the task can use, when the job names them.
    if let Some(root) = &ctx.space_dir {
        for (name, dir) in [
            ("PAI_CODE_DIR", &job.code_dir),
            ("PAI_DATA_DIR", &job.data_dir),
        ] {
            if let Some(d) = dir {
                common.insert(name.into(), inside(root, d));
            }
        }
    }
    if job.output_dir.is_some() {
        common.insert("PAI_OUTPUT_DIR".into(), ctx.output_dir.clone());
    }
    common.insert("PAI_TASK_ROLE_COUNT".into(), job.roles.len().to_string());
    let role_names: Vec<&str> = job.roles.iter().map(|r| r.name.as_str()).collect();
    common.insert("PAI_TASK_ROLE_LIST".into(), role_names.join(","));
    for role in &job.roles {
        let r = &role.name;
        common.insert(
            format!("PAI_TASK_ROLE_TASK_COUNT_{r}"),
            role.replicas.to_string(),
        );
        common.insert(format!("PAI_RESOURCE_{r}"), resource_text(role));
        common.insert(
            format!("PAI_MIN_FAILED_TASK_COUNT_{r}"),
            count_text(role.min_failed),
        );
        common.insert(
            format!("PAI_MIN_SUCCEEDED_TASK_COUNT_{r}"),
            count_text(role.min_succeeded),
        );
    }
    for id in task_ids(job) {
        if let Some(p) = placed(&id) {
            let (r, i) = (id.role(), id.index());
            common.insert(format!("PAI_HOST_IP_{r}_{i}"), p.host_ip.clone());
            for (label, ports) in &p.ports {
                common.insert(format!("PAI_PORT_LIST_{r}_{i}_{label}"), join(ports));
            }
        }
    }

    let ranks = rank_order(job);
    let world = ranks.len();
    let rank_of: HashMap<&TaskId, usize> = ranks.iter().enumerate().map(|(i, t)| (t, i)).collect();
    let master_addr = ranks
        .first()
        .and_then(placed)
        .map(|p| p.host_ip.clone())
        .unwrap_or_default();
    let nproc = job.pytorch.as_ref().and_then(|p| p.nproc_per_node);

    let mut out = Vec::with_capacity(world);
    for id in task_ids(job) {
        let (Some(role), Some(p)) = (job.role(id.role()), placed(&id)) else {
            continue;
        };
        let rank = rank_of.get(&id).copied().unwrap_or(0);
        let mut env = common.clone();
        env.insert("PAI_CURRENT_TASK_ROLE_NAME".into(), role.name.clone());
        env.insert(
            "PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX".into(),
            id.index().to_string(),
        );

        let port = ctx.master_port.to_string();
        let nproc = nproc.unwrap_or(role.gpus.max(1)).to_string();
        for (k, v) in [
            ("MASTER_ADDR", master_addr.clone()),
            ("MASTER_PORT", port.clone()),
            ("WORLD_SIZE", world.to_string()),
            ("RANK", rank.to_string()),
            ("LOCAL_RANK", "0".into()),
            ("PET_NNODES", world.to_string()),
            ("PET_NODE_RANK", rank.to_string()),
            ("PET_MASTER_ADDR", master_addr.clone()),
            ("PET_MASTER_PORT", port),
            ("PET_NPROC_PER_NODE", nproc),
            ("PYTHONUNBUFFERED", "1".into()),
        ] {
            env.insert(k.into(), v);
        }

        let gpus = join(&p.gpus);
        env.insert("CUDA_VISIBLE_DEVICES".into(), gpus.clone());
        env.insert("NVIDIA_VISIBLE_DEVICES".into(), gpus);
        env.insert("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into());

        env.insert("KILN_JOB_ID".into(), ctx.job_id.to_string());
        env.insert("KILN_TASK_ID".into(), id.to_string());
        env.insert("KILN_ATTEMPT".into(), ctx.attempt.to_string());
        env.insert("KILN_OUTPUT_DIR".into(), ctx.output_dir.clone());
        env.insert("KILN_TENSORBOARD_DIR".into(), ctx.tensorboard_dir.clone());
        for (name, value) in &job.secrets {
            env.insert(format!("KILN_SECRET_{name}"), value.clone());
        }

        // Validation keeps user variables off every name set above.
        for (k, v) in &job.job_envs {
            env.insert(k.clone(), scalar_text(v));
        }
        for (k, v) in &role.env {
            env.insert(k.clone(), v.clone());
        }
        out.push(TaskEnv { task: id, env });
    }
    Ok(out)
}

/// A plausible placement on one host, for `kiln render` and tests: GPUs
/// numbered from 0 in task order, dynamic ports counted up from 20000.
pub fn example_context(job: &JobSpec, user: &str) -> Result<RenderContext, SpecError> {
    let job_id = JobId::new(user, &job.name).map_err(SpecError::Placement)?;
    let mut next_gpu = 0u32;
    let mut next_port = 20_000u16;
    let mut placement = Vec::new();
    for id in task_ids(job) {
        let Some(role) = job.role(id.role()) else {
            continue;
        };
        let gpus: Vec<u32> = (next_gpu..next_gpu + role.gpus).collect();
        next_gpu += role.gpus;
        let mut ports = IndexMap::new();
        for spec in &role.ports {
            let list: Vec<u16> = if spec.begin_at == 0 {
                let start = next_port;
                next_port = next_port.saturating_add(spec.count);
                (0..spec.count).map(|k| start.saturating_add(k)).collect()
            } else {
                (0..spec.count)
                    .map(|k| spec.begin_at.saturating_add(k))
                    .collect()
            };
            ports.insert(spec.label.clone(), list);
        }
        placement.push(TaskPlacement {
            task: id,
            host_ip: "127.0.0.1".into(),
            gpus,
            ports,
        });
    }
    let output = inside(
        "/mnt",
        job.output_dir
            .as_deref()
            .unwrap_or(&format!("Output/{}", job.name)),
    );
    Ok(RenderContext {
        tensorboard_dir: format!("{output}/tensorboard"),
        output_dir: output,
        job_id,
        attempt: 0,
        default_fs_uri: "file:///mnt".into(),
        space_dir: Some("/mnt".into()),
        master_port: 29_500,
        placement,
    })
}
