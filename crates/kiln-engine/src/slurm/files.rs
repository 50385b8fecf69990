//! The files of one attempt on the shared path (docs/engines.md 3.1), through
//! which the server and the launcher in the batch step talk. Files on the
//! shared path are the truth: a restarted server reads them back.
//!
//! ```text
//! <shared>/jobs/<key>/attempt-<n>/
//!   submitting     the server is about to sbatch (a crash then looks in squeue)
//!   slurm-job      the Slurm job id, once sbatch answered
//!   launcher.claim the launcher's claim (a second start runs nothing)
//!   allocation.json what Slurm allocated, from the batch step's environment
//!   release        the server is done: the launcher exits, ending the job
//!   <task>[.<gen>]/ launch.json step.json go stop srun.claim srun.json ...
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

pub const SUBMITTING: &str = "submitting";
pub const JOB_ID: &str = "slurm-job";
pub const LAUNCHER_CLAIM: &str = "launcher.claim";
pub const ALLOCATION: &str = "allocation.json";
pub const RELEASE: &str = "release";
/// In a task folder: where its step goes (written by the server).
pub const STEP: &str = "step.json";
/// In a task folder: the server recorded the task; start it.
pub const GO: &str = "go";
/// In a task folder: stop it (SIGTERM to its srun, which forwards it).
pub const STOP: &str = "stop";
/// In a task folder: the launcher's claim on starting it, once.
pub const SRUN_CLAIM: &str = "srun.claim";
/// In a task folder: how its srun ended.
pub const SRUN_END: &str = "srun.json";

/// Where one task's step runs and what it holds, for `srun`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepSpec {
    pub het_group: Option<usize>,
    pub node: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub gpus: u32,
    /// Slurm's gres type, when the job named one.
    pub gpu_type: Option<String>,
}

/// How a task's `srun` ended, as the launcher saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SrunEnd {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// srun could not be started at all.
    pub error: Option<String>,
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, EngineError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| EngineError::Json {
                path: path.to_owned(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::io("read", path)(e)),
    }
}

/// The recorded Slurm job id of an attempt, if sbatch answered.
pub fn read_job_id(attempt: &Path) -> Option<u64> {
    std::fs::read_to_string(attempt.join(JOB_ID))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn write_job_id(attempt: &Path, id: u64) -> Result<(), EngineError> {
    write_text(&attempt.join(JOB_ID), &id.to_string())
}

/// Writes a small file whole (write, rename).
pub fn write_text(path: &Path, text: &str) -> Result<(), EngineError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(EngineError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(EngineError::io("rename", path))
}

/// Creates `path` if nobody has: true for the first caller only.
pub fn create_new(path: &Path) -> Result<bool, EngineError> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(EngineError::io("create", path)(e)),
    }
}

/// A task folder's file.
pub fn in_task(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
