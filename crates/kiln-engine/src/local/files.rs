//! The folder of one task run and the files through which the engine and the
//! supervisor talk: the engine writes `launch.json`; the supervisor writes
//! `supervisor.pid` (its claim on the folder), `started.json`, the logs, and
//! finally `exit.json`. Each JSON file appears whole (write, rename), so a
//! reader never sees half of one, even after a crash of either process.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::EngineError;

/// What to run, written by the engine before it starts the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchSpec {
    /// A bash script, run as `bash -c`.
    pub command: String,
    /// The task's whole environment; nothing is inherited.
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    /// Between SIGTERM and SIGKILL when the task is stopped.
    pub stop_grace_secs: u64,
    /// Memory and CPU limits, where cgroups can enforce them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<super::cgroup::Limits>,
    /// The file system view (bubblewrap), where it is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<super::sandbox::Sandbox>,
    /// The job's image, run with docker or podman; replaces the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<super::container::Container>,
    /// The unprivileged uid and gid the task runs as (kiln as root); None:
    /// as kiln's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<RunAs>,
    /// The GPUs are the ones the engine bound to the step the supervisor
    /// runs in (Slurm): `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES`
    /// come from the supervisor's own environment, not from `env`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gpus_from_step: bool,
    /// A file the engine creates to ask for a stop, for engines whose signal
    /// reaches the task's processes as well as the supervisor (a Slurm step):
    /// a task that ends while it exists was stopped, whichever process the
    /// signal reached first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_file: Option<PathBuf>,
}

pub use crate::engine::RunAs;

/// Written by the supervisor once the task's process exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub supervisor_pid: i32,
    /// The task's main process; also its process group id.
    pub pid: i32,
    pub started_at_ms: u64,
    /// Why limits asked for are not enforced, if they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_note: Option<String>,
    /// A task in a container: the session of its processes (its init's
    /// pid), which the engine started outside the task's process group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_sid: Option<i32>,
}

/// Written by the supervisor when the task is over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exit {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The task ended because it was asked to stop.
    pub stop_requested: bool,
    /// The task never started (bad working folder, no bash): a failure of
    /// the platform, not of the user's code.
    pub launch_error: Option<String>,
    /// The launch was refused for what the user's files hold (a mount
    /// source that leads out of its folder), not for a fault of kiln's.
    #[serde(default)]
    pub refused: bool,
    /// Killed by the kernel for passing its memory limit.
    #[serde(default)]
    pub oom_killed: bool,
    /// The task tried to start more processes than its limit allowed.
    #[serde(default)]
    pub pids_limited: bool,
    pub finished_at_ms: u64,
}

impl Exit {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.launch_error.is_none()
    }
}

/// The folder of one task run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDir(PathBuf);

impl TaskDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn launch(&self) -> PathBuf {
        self.0.join("launch.json")
    }

    pub fn started(&self) -> PathBuf {
        self.0.join("started.json")
    }

    pub fn exit(&self) -> PathBuf {
        self.0.join("exit.json")
    }

    pub fn stdout(&self) -> PathBuf {
        self.0.join("stdout.log")
    }

    pub fn stderr(&self) -> PathBuf {
        self.0.join("stderr.log")
    }

    /// Both streams, in the order their chunks arrived.
    pub fn output(&self) -> PathBuf {
        self.0.join("output.log")
    }

    /// Created exclusively by the one supervisor that runs this folder (or
    /// by a recovering server that makes sure none ever will); holds the
    /// supervisor's pid.
    pub fn claim(&self) -> PathBuf {
        self.0.join("supervisor.pid")
    }

    /// Takes the folder: true for the first caller only.
    pub fn try_claim(&self, pid: i32) -> Result<bool, EngineError> {
        let path = self.claim();
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(pid.to_string().as_bytes())
                    .map_err(EngineError::io("write", &path))?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(EngineError::io("create", path)(e)),
        }
    }

    /// The pid in the claim, once written.
    pub fn claimed_by(&self) -> Option<i32> {
        fs::read_to_string(self.claim()).ok()?.trim().parse().ok()
    }

    /// The supervisor's own messages, for when something goes wrong.
    pub fn supervisor_log(&self) -> PathBuf {
        self.0.join("supervisor.log")
    }

    pub fn write_launch(&self, spec: &LaunchSpec) -> Result<(), EngineError> {
        fs::create_dir_all(&self.0).map_err(EngineError::io("create", &self.0))?;
        write_atomic(&self.launch(), spec)
    }

    pub fn read_launch(&self) -> Result<LaunchSpec, EngineError> {
        read_json(&self.launch())?.ok_or_else(|| EngineError::Io {
            action: "read",
            path: self.launch(),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    pub fn read_started(&self) -> Result<Option<Started>, EngineError> {
        read_json(&self.started())
    }

    pub fn read_exit(&self) -> Result<Option<Exit>, EngineError> {
        read_json(&self.exit())
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, EngineError> {
    match fs::read(path) {
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

/// Write to a temporary name and rename it over the target: after a crash of
/// either process the file is either absent or whole. No fsync: like the
/// store (WAL, synchronous=NORMAL) this survives any process dying, and only
/// a power cut could lose the last writes; fsync per task start and exit
/// would cost more than the rest of the start path together.
pub(crate) fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), EngineError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| EngineError::Json {
        path: path.to_owned(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    // Launch files hold the task's environment (its secrets): the owner only.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(EngineError::io("create", &tmp))?;
    f.write_all(&bytes)
        .map_err(EngineError::io("write", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(EngineError::io("rename", path))
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
