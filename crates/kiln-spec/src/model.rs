//! The canonical job: what every input format is parsed into, what the store
//! keeps and what the engine runs. It is always valid and has every default
//! applied, so the code after parsing never re-checks or re-defaults.
//!
//! Serialized with serde it is kiln's native format (see `formats::native`), so
//! exporting a job and parsing it back gives the same job.

use indexmap::IndexMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::quantity::{format_duration_secs, format_memory_mib};

/// Default queue (OpenPAI's virtual cluster) when a spec names none.
pub const DEFAULT_QUEUE: &str = "default";
/// OpenPAI's default shared memory per task.
pub const DEFAULT_SHM_MB: u64 = 64;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub name: String,
    /// Submitting user as written in the spec; the server decides the owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// OpenPAI's `virtualCluster`; None runs in [`DEFAULT_QUEUE`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Whether the job may run on resources its queue borrowed (and be
    /// preempted when their owner needs them back). None means yes; `false`
    /// waits for its own queue's share instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preemptible: Option<bool>,
    /// Higher runs first; ties go to the earlier submission.
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    /// Container image; None runs on the host (local engine without containers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_file: Option<String>,
    /// OpenPAI's codeDir / dataDir / outputDir, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<String>,
    /// GPU model every role needs unless the role names its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
    /// Failed attempts retried; the job runs at most `retry_count + 1` attempts.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub retry_count: u32,
    /// In-place task restarts allowed per attempt for roles whose restart policy
    /// asks for them (Kubeflow's backoffLimit); None = unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    #[serde(
        rename = "maxDuration",
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration_text"
    )]
    pub max_duration_secs: Option<u64>,
    /// Working folder of every task; None = the engine's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// OpenPAI jobEnvs, values kept as written (`isDebug: true` stays a bool).
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub job_envs: IndexMap<String, Value>,
    /// Secret values: reach tasks only as `KILN_SECRET_<name>` variables, never
    /// through command text, and are redacted from rendered output.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub secrets: IndexMap<String, String>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub extras: serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pytorch: Option<PyTorch>,
    pub roles: Vec<TaskRole>,
}

/// Framework hints for PyTorch jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PyTorch {
    /// Processes torchrun starts per task (`PET_NPROC_PER_NODE`); None = the
    /// task's GPU count, or 1 without GPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nproc_per_node: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRole {
    pub name: String,
    /// Number of identical tasks (OpenPAI taskNumber, Kubeflow replicas).
    pub replicas: u32,
    pub cpus: u32,
    #[serde(rename = "memory", serialize_with = "memory_text")]
    pub memory_mb: u64,
    #[serde(rename = "shm", serialize_with = "memory_text")]
    pub shm_mb: u64,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub gpus: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
    /// Overrides the job's image for this role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// A bash script.
    pub command: String,
    /// Failed tasks that fail the attempt; None = task failures never do.
    #[serde(skip_serializing_if = "is_default_min_failed")]
    pub min_failed: Option<u32>,
    /// Succeeded tasks that succeed the attempt; None = all tasks must finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_succeeded: Option<u32>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, String>,
    #[serde(skip_serializing_if = "RestartPolicy::is_never")]
    pub restart_policy: RestartPolicy,
    /// At most this many processes and threads per task (cgroup
    /// `pids.max`); None: the server's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

impl TaskRole {
    /// The GPU model this role needs, if any.
    pub fn effective_gpu_type<'a>(&'a self, job: &'a JobSpec) -> Option<&'a str> {
        self.gpu_type.as_deref().or(job.gpu_type.as_deref())
    }
}

/// A named group of ports per task: `count` ports from `begin_at`, or chosen by
/// kiln when `begin_at` is 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    pub label: String,
    pub begin_at: u16,
    pub count: u16,
}

/// What happens to a task that exits unsuccessfully, within one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum RestartPolicy {
    /// The failure counts towards the role's minFailed (OpenPAI semantics).
    #[default]
    Never,
    /// The task is restarted in place while the job's restart budget lasts.
    OnFailure,
    /// Restarted only for retryable exits (killed by a signal, or code 128-255),
    /// as Kubeflow's ExitCode policy; codes 1-127 are permanent failures.
    ExitCode,
}

impl RestartPolicy {
    fn is_never(&self) -> bool {
        *self == RestartPolicy::Never
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "Never",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::ExitCode => "ExitCode",
        }
    }
}

/// A folder made visible inside every task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    #[serde(flatten)]
    pub source: MountSource,
    /// Absolute path inside the task.
    pub target: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MountSource {
    /// A path relative to the owner's space.
    Space(String),
    /// A shared dataset by name (always read-only).
    Dataset(String),
}

impl JobSpec {
    pub fn total_tasks(&self) -> u64 {
        self.roles.iter().map(|r| u64::from(r.replicas)).sum()
    }

    pub fn total_gpus(&self) -> u64 {
        self.roles
            .iter()
            .map(|r| u64::from(r.replicas) * u64::from(r.gpus))
            .sum()
    }

    pub fn role(&self, name: &str) -> Option<&TaskRole> {
        self.roles.iter().find(|r| r.name == name)
    }

    /// OpenPAI's `jobEnvs.isDebug`: keep a failed task's sandbox for inspection.
    pub fn is_debug(&self) -> bool {
        match self.job_envs.get("isDebug") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }
    }

    /// The same job with secret values replaced, for showing to people.
    pub fn redacted(&self) -> JobSpec {
        let mut job = self.clone();
        for v in job.secrets.values_mut() {
            *v = "<redacted>".into();
        }
        job
    }
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

fn is_default_min_failed(n: &Option<u32>) -> bool {
    *n == Some(1)
}

fn memory_text<S: Serializer>(mib: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_memory_mib(*mib))
}

fn duration_text<S: Serializer>(secs: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match secs {
        Some(secs) => s.serialize_str(&format_duration_secs(*secs)),
        None => s.serialize_none(),
    }
}
