//! The boundary between kiln's control loop and whatever runs tasks
//! (docs/engines.md, section 1). The loop keeps job and task states, the
//! store, the completion policy, retries and deadlines; an engine holds
//! resources for an attempt, starts its tasks with the environment kiln
//! rendered, stops them and reports, as [`EngineEvent`]s, what became of
//! them. Everything crossing the boundary is plain data, so the loop can be
//! driven by a fake engine in tests.
//!
//! The trait is synchronous, like the loop (one plain thread that owns all
//! state): calls return in milliseconds; anything slow runs on the engine's
//! own threads and comes back through the [`EventSink`] it was built with.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_sched::{Node, Placed};
use kiln_spec::TaskId;
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// A task's own identity on the machine: its user's uid, never root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// Where events go: the server wires it to the loop's channel. Events are
/// facts and may repeat; the loop drops those of an older attempt or run, or
/// of a task it has already seen end.
pub type EventSink = Arc<dyn Fn(EngineEvent) + Send + Sync>;

/// One attempt of one job (the store's job key and attempt number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptRef {
    pub key: i64,
    pub attempt: u32,
}

/// One run of one task: `gen` counts restarts in place and relaunches
/// within the attempt, so an event of an earlier run is never taken for
/// the current one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskRef {
    pub attempt: AttemptRef,
    pub task: TaskId,
    pub gen: u32,
}

/// Who decides where tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// kiln-sched places over [`Engine::nodes`]; `submit` gets the result.
    Kiln,
    /// The engine places (Slurm, Kubernetes): kiln submits in queue order and
    /// shows the engine's reason while a job waits.
    Engine,
}

/// What an engine is, fixed for its life.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// "local", "slurm": for logs and words.
    pub name: &'static str,
    pub placement: Placement,
    /// Whether the capacity may grow later (nodes join): a job bigger than
    /// every node today is then not refused outright.
    pub capacity_can_grow: bool,
    /// Tasks run (and are recorded RUNNING) as soon as `launch` returns:
    /// the loop records the start with the placement, in one transaction,
    /// instead of waiting for [`EngineEvent::Started`].
    pub started_on_launch: bool,
    /// Tasks see the user's space at `/mnt` (a sandbox): the loop then puts
    /// outputs in the space and names files as the tasks see them.
    pub sandboxed: bool,
    /// Words for the `limits` event of every attempt it starts (what memory,
    /// CPU and process limits hold here), if any.
    pub limits_summary: Option<String>,
}

/// A node as kiln shows and schedules it.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// Name, CPUs, memory and GPUs.
    pub node: Node,
    /// The engine's own words about the node for the API (limits, GPU
    /// source, notes), as camelCase JSON fields beside kiln's.
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// A port list a task asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortWant {
    pub label: String,
    pub count: u16,
    /// The first of `count` fixed ports; 0: any free ones.
    pub begin_at: u16,
}

/// What one task needs, in the order of the job's tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskShape {
    pub task: TaskId,
    pub cpus: u32,
    pub memory_mb: u64,
    pub shm_mb: u64,
    pub gpus: u32,
    pub pids: Option<u32>,
    pub ports: Vec<PortWant>,
    /// kiln's `gpuType` (a substring of a GPU model), for engines that ask
    /// for GPUs by type (Slurm's gres type).
    pub gpu_type: Option<String>,
}

/// Phase 1 of the handshake: hold resources for an attempt.
#[derive(Debug, Clone)]
pub struct AttemptSpec {
    pub attempt: AttemptRef,
    pub tasks: Vec<TaskShape>,
    /// Where kiln-sched placed each task: `Some` exactly when the engine's
    /// placement is [`Placement::Kiln`].
    pub placed: Option<Vec<Placed>>,
    /// The job's queue, for engines that map queues (Slurm partitions).
    pub queue: Option<String>,
    /// The job's name (`alice~bert`), for the engine's own words.
    pub name: String,
    /// The job's max duration: kiln's own timer ends it; an engine with a
    /// time limit of its own (Slurm's `--time`) sets a backstop past it.
    pub max_duration_secs: Option<u64>,
}

/// The engine's answer to `submit`.
#[derive(Debug, Clone)]
pub enum Submission {
    /// Held now (local): render and launch at once.
    Allocated(Allocation),
    /// Submitted: [`EngineEvent::Pending`] and [`EngineEvent::Allocated`] follow.
    Queued,
    /// Nothing held: the job keeps waiting with this reason and the loop
    /// asks again a little later (a fixed port in use outside kiln).
    Wait(WaitReason),
}

/// Why a job waits, when the engine knows and kiln does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitReason {
    pub message: String,
}

/// Resources held for an attempt: everything the environment depends on
/// beyond the job (hosts, addresses, ports, GPUs).
#[derive(Debug, Clone)]
pub struct Allocation {
    pub attempt: AttemptRef,
    /// The job's PyTorch rendezvous port, free on the master's node.
    pub master_port: u16,
    /// In task order.
    pub tasks: Vec<TaskAllocation>,
}

#[derive(Debug, Clone)]
pub struct TaskAllocation {
    pub task: TaskId,
    /// The node's name: the task's `host`.
    pub host: String,
    /// How other tasks reach it (`MASTER_ADDR`, `PAI_HOST_IP_*`).
    pub address: String,
    pub gpus: Vec<u32>,
    /// label → ports, in the role's order.
    pub ports: Vec<(String, Vec<u16>)>,
    /// What it holds, for the scheduler's view of running jobs.
    pub placed: Placed,
}

/// A bind of a host folder into a sandboxed task, named relative to
/// `beneath` when given (resolved beneath it when the task starts, so a link
/// swapped in since submission never leads out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
    pub beneath: Option<PathBuf>,
}

/// The files a task sees, decided by the loop (spaces and outputs are
/// kiln's, the same for every engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileView {
    /// The user whose space the task sees (its `USER`, `HOME` in the space).
    pub user: String,
    /// Sandboxed engines: the space, codeDir and the job's mounts.
    pub mounts: Vec<Mount>,
    /// Sandboxed engines: the task's `HOME` inside (its space).
    pub home_inside: PathBuf,
    /// The working folder on the host (unsandboxed) and inside the sandbox.
    pub workdir_host: PathBuf,
    pub workdir_inside: PathBuf,
}

/// Phase 2: one task run to start in a held allocation.
#[derive(Debug, Clone)]
pub struct TaskLaunch {
    pub task: TaskRef,
    pub shape: TaskShape,
    pub gpus: Vec<u32>,
    /// A bash script, run as `bash -c`.
    pub command: String,
    /// `render_env`'s output for this task, `jobEnvs` included.
    pub env: Vec<(String, String)>,
    pub files: FileView,
    pub image: Option<String>,
    /// How the image is pulled: with whose credentials, and whether afresh.
    pub pull: ImagePull,
    pub run_as: Option<RunAs>,
}

/// How a task's image is pulled. Images of a registry someone stored a
/// credential for are private to those it lets pull them: the engine's
/// image store is shared by all users, so such an image is pulled afresh
/// (its layers stay cached) with the starting user's own rights at every
/// start, never run because another user pulled it before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagePull {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ImageAuth>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub always: bool,
}

/// Credentials for the pull of a task's image.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ImageAuth {
    /// The user's credential stored in kiln for the image's registry.
    Stored {
        registry: String,
        username: String,
        secret: String,
    },
    /// OpenPAI's `authFile`: a file of the user's space (`path`, beneath
    /// `space`) holding the registry, the user name and the password on
    /// three lines, read as the task starts.
    SpaceFile { space: PathBuf, path: PathBuf },
}

impl std::fmt::Debug for ImageAuth {
    // Never the secret, in logs or panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageAuth::Stored {
                registry, username, ..
            } => write!(f, "Stored {{ registry: {registry}, username: {username} }}"),
            ImageAuth::SpaceFile { space, path } => {
                write!(
                    f,
                    "SpaceFile {{ space: {}, path: {} }}",
                    space.display(),
                    path.display()
                )
            }
        }
    }
}

/// How a task ended, as the engine saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskExit {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// kiln's stop reached it.
    pub stop_requested: bool,
    pub cause: Option<ExitCause>,
    pub finished_at_ms: u64,
}

/// What the engine knows about why a task ended, beyond its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitCause {
    /// Killed by the kernel for passing its memory limit.
    OomKilled,
    /// It tried to start more processes than its limit allowed.
    PidsLimitReached,
    /// It never started. `refused`: for what the user's files hold (the
    /// user's failure); otherwise the platform's (retried for free).
    LaunchFailed { message: String, refused: bool },
    /// The engine's own time limit ended it (Slurm's TIMEOUT): read as the
    /// job's deadline, not the user's code failing.
    TimeLimit,
}

/// What the engine reports, on its own threads, about attempts and tasks.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// A submitted attempt still waits, and why (on change).
    Pending {
        attempt: AttemptRef,
        reason: WaitReason,
    },
    /// A submitted attempt got its resources: render and launch.
    Allocated(Allocation),
    /// A launched task runs (engines without `started_on_launch`).
    Started { task: TaskRef, at_ms: u64 },
    /// A task run ended. `notes`: what its start said of its limits.
    Exited {
        task: TaskRef,
        exit: TaskExit,
        notes: Vec<String>,
    },
    /// A task run ended without a record of how: a platform failure.
    Lost {
        task: TaskRef,
        why: String,
        notes: Vec<String>,
    },
    /// What a task run is doing before its command starts (pulling its
    /// image), for the job's events: the latest of a `kind` replaces the
    /// one before.
    Progress {
        task: TaskRef,
        kind: String,
        message: String,
    },
    /// Found after a restart of kiln: recorded, but never started, and now
    /// it never will be. The loop starts it afresh or gives it up.
    Unstarted { task: TaskRef },
}

/// A task run the store knows of, for [`Engine::reattach`].
#[derive(Debug, Clone)]
pub struct KnownTask {
    pub task: TaskRef,
    /// Where the engine said the run lives ([`Prepared::dir`]).
    pub dir: String,
    /// The ports recorded for it, held again.
    pub ports: Vec<u16>,
    /// No run of it can exist now (it ended, or waits out a back-off):
    /// only its ports and allocation are taken back.
    pub settled: bool,
}

/// A task run ready to start: nothing of it runs yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub task: TaskRef,
    /// Where its files are: recorded as the task's folder before it starts.
    pub dir: String,
}

/// Runs the tasks of attempts. Every call is idempotent by its key and
/// returns quickly; what happens later comes back as [`EngineEvent`]s.
///
/// A start is three calls, so that the loop renders every environment in one
/// place and records a task before it runs (a crash in between is then found
/// again by `reattach`): `submit` holds, `prepare` writes, `launch` starts.
pub trait Engine: Send {
    fn info(&self) -> EngineInfo;
    /// The nodes and what kiln's own tasks hold on them. Never a network call.
    fn nodes(&self) -> Vec<NodeState>;
    /// Phase 1: hold resources for an attempt.
    fn submit(&mut self, attempt: &AttemptSpec) -> Result<Submission, EngineError>;
    /// Phase 2a: write what the tasks need; nothing runs. An error leaves
    /// nothing held for the tasks' files and the job waits.
    fn prepare(&mut self, tasks: &[TaskLaunch]) -> Result<Vec<Prepared>, EngineError>;
    /// A fresh run of a task of the current attempt with the launch of its
    /// run `from` (a restart in place, or a start kiln never made): the run
    /// gets the next free `gen` and `run_as` as of now.
    fn prepare_again(
        &mut self,
        from: &KnownTask,
        run_as: Option<RunAs>,
    ) -> Result<Prepared, EngineError>;
    /// Phase 2b: start a prepared run. An error is the run's end (nothing of
    /// it runs); success means its end comes as an event.
    fn launch(&mut self, task: &TaskRef) -> Result<(), EngineError>;
    /// Asks these runs to stop: SIGTERM, the grace period, SIGKILL. Each
    /// still ends in `Exited { stop_requested }` or `Lost`.
    fn stop(&mut self, tasks: &[TaskRef]);
    /// The loop has recorded the end of this run: let go of it, and empty its
    /// scratch space unless `keep` (a failed task under isDebug).
    fn ended(&mut self, task: &TaskRef, keep: bool);
    /// The store has ended the attempt: give back what it held.
    fn release(&mut self, attempt: AttemptRef);
    /// `kiln extend`: the attempt's max duration is now `max_duration_secs`
    /// from its start. kiln's timer stays the authority; an engine with a
    /// time limit of its own moves it (in the background, never blocking).
    fn set_deadline(&mut self, _attempt: AttemptRef, _max_duration_secs: Option<u64>) {}
    /// After a restart of kiln: find these runs again and report what
    /// became of them as events (exits while kiln was down included), then
    /// forget whatever of this installation's is not among them.
    fn reattach(&mut self, known: &[(AttemptRef, Vec<KnownTask>)]);
}

/// Which run of a task a recorded folder holds: every engine names the
/// runs after the first `<...>.<gen>` ([`Prepared::dir`]), so the loop finds
/// the current run again from the store alone.
pub fn gen_of_dir(dir: &str) -> u32 {
    dir.rsplit_once('.')
        .and_then(|(_, g)| g.parse().ok())
        .unwrap_or(0)
}
