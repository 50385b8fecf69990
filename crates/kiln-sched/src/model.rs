//! The plain data the scheduler works on.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gpu {
    /// Index as CUDA numbers it in PCI bus order.
    pub index: u32,
    pub model: String,
    pub memory_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub gpus: Vec<Gpu>,
}

/// What one task needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskRequest {
    /// How people name the task (`main-0`), for reasons that concern it.
    pub id: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub gpus: u32,
    /// GPU model wanted, matched case-insensitively as a substring of the
    /// model name ("V100" matches "Tesla V100-SXM2-32GB").
    pub gpu_type: Option<String>,
}

/// A waiting job: its gang of tasks and its place in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    pub key: u64,
    /// How people name the job (`user~name`), for pending reasons.
    pub label: String,
    pub queue: String,
    /// Whose usage orders it (fair share) and whose limits apply.
    pub user: String,
    pub priority: i32,
    /// Submission order; earlier goes first among equals.
    pub seq: u64,
    pub tasks: Vec<TaskRequest>,
    /// Upper bound on run time; a bounded job that ends in time may start
    /// ahead of a blocked one with a promise not to delay it.
    pub max_duration_secs: Option<u64>,
    /// False: never preempted, so it runs only within its queue's
    /// guarantee and never ahead of a blocked job without a promise.
    pub preemptible: bool,
}

impl Default for JobRequest {
    fn default() -> Self {
        JobRequest {
            key: 0,
            label: String::new(),
            queue: String::new(),
            user: String::new(),
            priority: 0,
            seq: 0,
            tasks: Vec::new(),
            max_duration_secs: None,
            preemptible: true,
        }
    }
}

/// Where one task runs and what it holds there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placed {
    /// Index into the node list.
    pub node: usize,
    pub cpus: u32,
    pub memory_mb: u64,
    pub gpus: Vec<u32>,
}

/// A job holding resources now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningJob {
    pub key: u64,
    pub label: String,
    pub tasks: Vec<Placed>,
    /// When its max duration runs out (seconds, same clock as `now`); None
    /// when unbounded.
    pub ends_at: Option<u64>,
    pub queue: String,
    pub user: String,
    pub priority: i32,
    pub seq: u64,
    pub preemptible: bool,
    /// Started ahead of a blocked job without a promise not to delay it:
    /// jobs of higher standing may take its place.
    pub opportunistic: bool,
    /// Already told to stop (preempted, stopped, past its deadline): it
    /// holds its resources until it exits, and is nobody's victim again.
    pub stopping: bool,
    /// When it started, on any clock where later is larger (the server's
    /// milliseconds): preemption takes the youngest first, which loses
    /// the least work.
    pub started: u64,
}

impl Default for RunningJob {
    fn default() -> Self {
        RunningJob {
            key: 0,
            label: String::new(),
            tasks: Vec::new(),
            ends_at: None,
            queue: String::new(),
            user: String::new(),
            priority: 0,
            seq: 0,
            preemptible: true,
            opportunistic: false,
            stopping: false,
            started: 0,
        }
    }
}

/// A queue's guaranteed share (OpenPAI's virtual cluster, Kueue's nominal
/// quota). What a queue does not use is lent to others' jobs until it needs
/// it back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    pub cpus: u64,
    pub memory_mb: u64,
    /// GPUs by model; an entry without a model takes any GPU.
    #[serde(default)]
    pub gpus: Vec<GpuQuota>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuQuota {
    /// Matched like a task's `gpuType`: a case-insensitive part of the
    /// model name. None: any model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Queue {
    pub name: String,
    pub quota: Quota,
    /// Slurm QOS's MaxTRESPerUser for GPUs: at most this many GPUs running
    /// per user in this queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_max_gpus: Option<u64>,
}

impl TaskRequest {
    pub(crate) fn wants(&self, gpu: &Gpu) -> bool {
        match &self.gpu_type {
            None => true,
            Some(t) => model_matches(&gpu.model, t),
        }
    }
}

/// `pattern` names `model` as a gpuType does: a case-insensitive part of it.
pub fn model_matches(model: &str, pattern: &str) -> bool {
    model.to_lowercase().contains(&pattern.to_lowercase())
}
