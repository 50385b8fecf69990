//! The plain data the scheduler works on.

use serde::Serialize;

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
    pub priority: i32,
    /// Submission order; earlier goes first among equal priorities.
    pub seq: u64,
    pub tasks: Vec<TaskRequest>,
    /// Upper bound on run time; only bounded jobs may backfill.
    pub max_duration_secs: Option<u64>,
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
    pub tasks: Vec<Placed>,
    /// When its max duration runs out (seconds, same clock as `now`); None
    /// when unbounded.
    pub ends_at: Option<u64>,
}

impl TaskRequest {
    pub(crate) fn wants(&self, gpu: &Gpu) -> bool {
        match &self.gpu_type {
            None => true,
            Some(t) => gpu.model.to_lowercase().contains(&t.to_lowercase()),
        }
    }
}
