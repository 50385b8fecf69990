//! The Slurm engine behind the [`Engine`] trait (docs/engines.md section 3):
//! one `sbatch` per attempt holds the whole gang, its batch script is
//! `kiln __slurm-launch` (launcher.rs), and each task is one `srun` step running
//! kiln's own supervisor in a task folder on the shared path. The calls here
//! only write small files and hand work to the engine's thread (poll.rs), which
//! runs Slurm's commands, watches the folders and sends the events.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tracing::warn;

use super::book::Book;
use super::cli::SlurmApi;
use super::files::{self, StepSpec};
use super::parse::{SlurmJob, SlurmNode};
use super::script::{
    group_by_shape, match_gpu_type, sbatch_args, ShapeGroup, SubmitRequest, TaskRequest,
};
use crate::engine::{
    AttemptRef, AttemptSpec, Engine, EngineInfo, EventSink, KnownTask, NodeState, Placement,
    Prepared, RunAs, Submission, TaskLaunch, TaskRef, TaskShape,
};
use crate::error::EngineError;
use crate::local::{LocalConfig, LocalEngine, TaskDir};

/// What the Slurm engine needs.
pub struct SlurmConfig {
    /// The kiln binary, at the same path on every node (the batch script and
    /// every step run it).
    pub exe: PathBuf,
    /// The same path on the server and every node.
    pub shared: PathBuf,
    /// This installation's id: its Slurm jobs are `kiln-<instance>-…`.
    pub instance: String,
    /// kiln queue → Slurm partition.
    pub partitions: HashMap<String, String>,
    /// Between `squeue`/`sinfo` polls.
    pub poll: Duration,
    /// The launcher ends an allocation nothing has run in for this long.
    pub launch_idle: Duration,
    /// Ports given to tasks, kept free on the nodes by the admin.
    pub ports: (u16, u16),
    /// The local engine's settings, for the launch records (sandbox, uid):
    /// its `jobs` is `<shared>/jobs`, and kiln's cgroups are off (Slurm's own).
    pub local: LocalConfig,
}

/// One attempt the engine holds or waits for.
pub(super) struct Watch {
    pub dir: PathBuf,
    pub name: String,
    pub shapes: Vec<TaskShape>,
    pub groups: Vec<ShapeGroup>,
    /// The sbatch arguments, kept for a submission that must be tried again.
    pub args: Vec<String>,
    pub job: Option<u64>,
    /// When to (try to) submit next, while `job` is None.
    pub submit_at: Option<Instant>,
    pub submitted_at: Instant,
    /// Allocated was sent: task → its step.
    pub steps: Option<HashMap<String, StepSpec>>,
    pub reason: Option<String>,
    pub released_at: Option<Instant>,
    pub ports: Vec<u16>,
    /// Launched runs not yet seen to end.
    pub tasks: HashMap<TaskRef, TaskWatch>,
    /// Slurm's word for how the job ended, once it has.
    pub ended: Option<String>,
}

pub(super) struct TaskWatch {
    pub dir: TaskDir,
    pub started: bool,
}

/// What the engine and its thread share.
pub(super) struct State {
    pub attempts: HashMap<AttemptRef, Watch>,
    pub nodes: Vec<SlurmNode>,
    pub jobs: Vec<SlurmJob>,
    pub book: Book,
    /// Slurm jobs to cancel (attempts given up while their job may live).
    pub cancels: Vec<u64>,
    /// New Slurm time limits in minutes (`kiln extend`), not yet set.
    pub time_limits: HashMap<AttemptRef, u64>,
}

pub(super) type Shared = Arc<Mutex<State>>;

pub(super) fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct SlurmEngine {
    pub(super) local: LocalEngine,
    pub(super) shared: Shared,
    pub(super) events: EventSink,
    wake: Sender<()>,
    instance: String,
    exe: PathBuf,
    partitions: HashMap<String, String>,
    launch_idle: Duration,
    /// The stop grace period: Slurm's time limit leaves room for two.
    grace: Duration,
}

impl SlurmEngine {
    /// Starts the engine's thread. `nodes`: the cluster as `sinfo` said it
    /// at start ([`SlurmApi::nodes`]), so capacity is known before the first
    /// poll.
    pub fn new(
        cfg: SlurmConfig,
        api: Arc<dyn SlurmApi>,
        nodes: Vec<SlurmNode>,
        events: EventSink,
    ) -> SlurmEngine {
        let shared = Arc::new(Mutex::new(State {
            attempts: HashMap::new(),
            nodes,
            jobs: Vec::new(),
            book: Book::new(cfg.ports.0, cfg.ports.1),
            cancels: Vec::new(),
            time_limits: HashMap::new(),
        }));
        let wake = super::poll::spawn(Arc::clone(&shared), api, Arc::clone(&events), cfg.poll);
        let grace = Duration::from_secs(cfg.local.stop_grace_secs);
        SlurmEngine {
            local: LocalEngine::new(cfg.local, Arc::clone(&events)),
            events,
            shared,
            wake,
            instance: cfg.instance,
            exe: cfg.exe,
            partitions: cfg.partitions,
            launch_idle: cfg.launch_idle,
            grace,
        }
    }

    fn poke(&self) {
        let _ = self.wake.send(());
    }

    /// The partition for a queue: the mapped one, else the one of the queue's
    /// name, else the cluster's default ("").
    fn partition(&self, queue: Option<&str>, nodes: &[SlurmNode]) -> String {
        let Some(q) = queue else {
            return String::new();
        };
        if let Some(p) = self.partitions.get(q) {
            return p.clone();
        }
        if nodes.iter().any(|n| n.partitions.iter().any(|p| p == q)) {
            return q.to_owned();
        }
        String::new()
    }

    /// The attempt's `sbatch` arguments, and its tasks grouped by shape (the
    /// components the launcher's allocation is read against).
    fn sbatch(
        &self,
        a: &AttemptSpec,
        dir: &std::path::Path,
    ) -> Result<(Vec<String>, Vec<ShapeGroup>), EngineError> {
        let st = lock(&self.shared);
        let requests: Vec<TaskRequest> = a
            .tasks
            .iter()
            .map(|t| TaskRequest {
                task: t.task.to_string(),
                cpus: t.cpus,
                memory_mb: t.memory_mb,
                gpus: t.gpus,
                gpu_type: t.gpu_type.clone(),
            })
            .collect();
        let groups = group_by_shape(&requests, false);
        let partition = self.partition(a.queue.as_deref(), &st.nodes);
        let in_partition = st
            .nodes
            .iter()
            .filter(|n| partition.is_empty() || n.partitions.contains(&partition))
            .count();
        let types = gpu_types(&st.nodes);
        let launcher = [
            self.exe.display().to_string(),
            "__slurm-launch".to_owned(),
            format!("--idle-secs={}", self.launch_idle.as_secs()),
            dir.display().to_string(),
        ];
        let output = dir.join("launcher.log");
        let key = a.attempt.key.to_string();
        let mut args = sbatch_args(
            &SubmitRequest {
                instance: &self.instance,
                key: &key,
                attempt: a.attempt.attempt,
                partition: &partition,
                partition_nodes: in_partition,
                output: &output,
                launcher: &launcher,
                max_duration: a.max_duration_secs.map(Duration::from_secs),
                grace: self.grace,
                priority: 0,
                extra_args: &[],
                gpu_types: &types,
            },
            &groups,
        )?;
        if partition.is_empty() {
            args.retain(|a| a != "--partition=");
        }
        Ok((args, groups))
    }
}

fn gpu_types(nodes: &[SlurmNode]) -> Vec<String> {
    let mut types: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.gpu_types().map(str::to_owned))
        .collect();
    types.sort();
    types.dedup();
    types
}

impl Engine for SlurmEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            name: "slurm",
            placement: Placement::Engine,
            capacity_can_grow: false,
            started_on_launch: false,
            sandboxed: self.local.info().sandboxed,
            limits_summary: Some(
                "limits are Slurm's: CPUs, memory and GPUs as its task plugin enforces them".into(),
            ),
        }
    }

    fn nodes(&self) -> Vec<NodeState> {
        let st = lock(&self.shared);
        st.nodes.iter().map(|n| node_state(n, &st)).collect()
    }

    fn submit(&mut self, a: &AttemptSpec) -> Result<Submission, EngineError> {
        let dir = self.local.attempt_dir(a.attempt);
        {
            let mut st = lock(&self.shared);
            match st.attempts.get(&a.attempt) {
                Some(w) if w.released_at.is_none() => return Ok(Submission::Queued),
                Some(_) => {
                    if let Some(job) = st.attempts.remove(&a.attempt).and_then(|w| w.job) {
                        st.cancels.push(job);
                    }
                }
                None => {}
            }
        }
        // Given back before (a start that failed): its Slurm job is over or
        // ending, and a new one starts from a clean folder.
        if dir.join(files::RELEASE).exists() {
            for f in [
                files::RELEASE,
                files::JOB_ID,
                files::SUBMITTING,
                files::LAUNCHER_CLAIM,
                files::ALLOCATION,
            ] {
                let _ = std::fs::remove_file(dir.join(f));
            }
        }
        std::fs::create_dir_all(&dir).map_err(EngineError::io("create", &dir))?;
        let (args, groups) = self.sbatch(a, &dir)?;
        let now = Instant::now();
        lock(&self.shared).attempts.insert(
            a.attempt,
            Watch {
                dir,
                name: a.name.clone(),
                shapes: a.tasks.clone(),
                groups,
                args,
                job: None,
                submit_at: Some(now),
                submitted_at: now,
                steps: None,
                reason: None,
                released_at: None,
                ports: Vec::new(),
                tasks: HashMap::new(),
                ended: None,
            },
        );
        self.poke();
        Ok(Submission::Queued)
    }

    fn prepare(&mut self, tasks: &[TaskLaunch]) -> Result<Vec<Prepared>, EngineError> {
        let steps = {
            let st = lock(&self.shared);
            tasks
                .first()
                .and_then(|t| st.attempts.get(&t.task.attempt))
                .and_then(|w| w.steps.clone())
                .ok_or_else(|| {
                    EngineError::Folder("the attempt holds no Slurm allocation".into())
                })?
        };
        tasks
            .iter()
            .map(|t| {
                let dir = self.local.task_dir(&t.task);
                // Left by a start kiln never recorded (it was never marked go).
                if !dir.path().join(files::GO).exists() {
                    let _ = std::fs::remove_dir_all(dir.path());
                }
                let prepared = self.local.prepare_one(t)?;
                let step = steps.get(&t.task.task.to_string()).ok_or_else(|| {
                    EngineError::SlurmAllocation(format!("no step for {}", t.task.task))
                })?;
                finish_folder(&dir, step)?;
                Ok(prepared)
            })
            .collect()
    }

    fn prepare_again(
        &mut self,
        from: &KnownTask,
        run_as: Option<RunAs>,
    ) -> Result<Prepared, EngineError> {
        let step: StepSpec = files::read_json(&PathBuf::from(&from.dir).join(files::STEP))?
            .ok_or_else(|| EngineError::Folder("its step record is missing".into()))?;
        let prepared = self.local.prepare_next(from, run_as)?;
        finish_folder(&TaskDir::new(&prepared.dir), &step)?;
        Ok(prepared)
    }

    fn launch(&mut self, task: &TaskRef) -> Result<(), EngineError> {
        let dir = self.local.task_dir(task);
        files::write_text(&dir.path().join(files::GO), "")?;
        let mut st = lock(&self.shared);
        if let Some(w) = st.attempts.get_mut(&task.attempt) {
            w.tasks.insert(
                task.clone(),
                TaskWatch {
                    dir,
                    started: false,
                },
            );
        }
        Ok(())
    }

    fn stop(&mut self, tasks: &[TaskRef]) {
        for t in tasks {
            let stop = self.local.task_dir(t).path().join(files::STOP);
            if let Err(e) = files::write_text(&stop, "") {
                warn!(task = %t.task, error = %e, "cannot ask a task to stop");
            }
        }
    }

    fn ended(&mut self, task: &TaskRef, keep: bool) {
        if let Some(w) = lock(&self.shared).attempts.get_mut(&task.attempt) {
            w.tasks.remove(task);
        }
        if !keep {
            crate::local::scratch::empty_scratch(self.local.task_dir(task).path().join("tmp"));
        }
    }

    fn release(&mut self, attempt: AttemptRef) {
        let dir = self.local.attempt_dir(attempt);
        if let Err(e) = files::write_text(&dir.join(files::RELEASE), "") {
            warn!(job_key = attempt.key, error = %e, "cannot release a Slurm allocation");
        }
        let mut st = lock(&self.shared);
        let mut ports = Vec::new();
        if let Some(w) = st.attempts.get_mut(&attempt) {
            w.released_at = Some(Instant::now());
            w.tasks.clear();
            ports = std::mem::take(&mut w.ports);
        }
        st.book.release(ports);
        drop(st);
        self.poke();
    }

    fn set_deadline(&mut self, attempt: AttemptRef, max_duration_secs: Option<u64>) {
        // Slurm's limit stays a backstop past kiln's own deadline.
        let Some(secs) = max_duration_secs else {
            return;
        };
        let minutes = super::script::time_limit_minutes(Duration::from_secs(secs), self.grace);
        lock(&self.shared).time_limits.insert(attempt, minutes);
        self.poke();
    }

    fn reattach(&mut self, known: &[(AttemptRef, Vec<KnownTask>)]) {
        super::reattach::reattach(self, known);
        self.poke();
    }
}

/// Marks the launch record to take its GPUs from the step, and writes where
/// the step goes.
fn finish_folder(dir: &TaskDir, step: &StepSpec) -> Result<(), EngineError> {
    let mut launch = dir.read_launch()?;
    launch.gpus_from_step = true;
    launch.stop_file = Some(dir.path().join(files::STOP));
    dir.write_launch(&launch)?;
    crate::local::files::write_atomic(&dir.path().join(files::STEP), step)
}

/// A Slurm node as `kiln nodes` shows it: Slurm's words beside kiln's, and
/// who holds its GPUs.
fn node_state(n: &SlurmNode, st: &State) -> NodeState {
    let gpus = n.gpus(None) as u32;
    let model = n.gpu_types().next().unwrap_or("gpu").to_owned();
    let node = kiln_sched::Node {
        name: n.name.clone(),
        cpus: n.cpus as u32,
        memory_mb: n.real_memory_mb,
        gpus: (0..gpus)
            .map(|index| kiln_sched::Gpu {
                index,
                model: model.clone(),
                memory_mb: 0,
            })
            .collect(),
    };
    let names: BTreeMap<u64, String> = st
        .attempts
        .values()
        .filter_map(|w| Some((w.job?, w.name.clone())))
        .collect();
    let holders: Vec<Value> = st
        .jobs
        .iter()
        .flat_map(|j| j.gpus.iter().map(move |g| (j, g)))
        .filter(|(_, g)| g.node == n.name && g.count > 0)
        .map(|(j, g)| {
            let who = match names.get(&j.id) {
                Some(name) => format!("{name} (Slurm job {})", j.id),
                None => format!("Slurm job {} ({})", j.id, j.user),
            };
            json!({"holder": who, "gpus": g.indices})
        })
        .collect();
    let gres: Vec<String> = n
        .gres
        .iter()
        .map(|g| match &g.gpu_type {
            Some(t) => format!("{}:{t}:{}", g.name, g.count),
            None => format!("{}:{}", g.name, g.count),
        })
        .collect();
    let mut details = Map::new();
    details.insert("engine".into(), json!("slurm"));
    details.insert("address".into(), json!(n.address));
    details.insert("state".into(), json!(n.state));
    details.insert("stateFlags".into(), json!(n.state_flags));
    details.insert("reason".into(), json!(n.reason));
    details.insert("partitions".into(), json!(n.partitions));
    details.insert("gres".into(), json!(gres.join(",")));
    details.insert("allocCpus".into(), json!(n.alloc_cpus));
    details.insert("allocMemoryMb".into(), json!(n.alloc_memory_mb));
    details.insert("gpusFree".into(), json!(n.free_gpus(None)));
    details.insert("gpuHolders".into(), Value::Array(holders));
    details.insert(
        "limits".into(),
        json!("Slurm's: CPUs, memory and GPUs as its task plugin enforces them; pids not enforced"),
    );
    NodeState { node, details }
}

/// The Slurm gres type for a task's `gpuType`, if it names one Slurm has.
pub(super) fn slurm_gpu_type(shape: &TaskShape, nodes: &[SlurmNode]) -> Option<String> {
    let wanted = shape.gpu_type.as_deref().filter(|_| shape.gpus > 0)?;
    let types = gpu_types(nodes);
    match_gpu_type(wanted, &types).ok().map(str::to_owned)
}
