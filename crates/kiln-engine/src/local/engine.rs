//! The local engine behind the [`Engine`] trait (docs/engines.md, section
//! 2): tasks are process trees on this machine, each under a supervisor
//! that outlives the server. kiln-sched places; this engine gives ports,
//! writes each run's folder (launch.rs), starts and watches supervisors,
//! and finds them again after a restart (reattach.rs).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{error, warn};

use super::container::ContainerEngine;
use super::ports::Ports;
use super::resources::Discovered;
use super::sandbox::RootEntry;
use super::standby::{spawn_standby, Standby};
use super::{scratch, spawn_supervisor, Supervisor, TaskDir};
use crate::engine::{
    Allocation, AttemptRef, AttemptSpec, Engine, EngineInfo, EventSink, KnownTask, NodeState,
    Placement, Prepared, RunAs, Submission, TaskAllocation, TaskLaunch, TaskRef, WaitReason,
};
use crate::error::EngineError;

/// One task's ports: label → ports, in the role's order.
type PortLists = Vec<(String, Vec<u16>)>;

/// What the local engine needs to run tasks on this machine.
pub struct LocalConfig {
    /// The kiln binary, re-executed as `kiln __supervise`.
    pub exe: PathBuf,
    /// The data folder: hidden from sandboxed tasks.
    pub data: PathBuf,
    /// The shared path spaces and jobs live on (`--engine slurm`): hidden
    /// from sandboxed tasks too.
    pub shared: Option<PathBuf>,
    /// Where task runs live: `<jobs>/<key>/attempt-<n>/<task>[.<gen>]`.
    pub jobs: PathBuf,
    pub discovered: Discovered,
    /// This installation's id, so cgroup names never clash between data folders.
    pub instance: String,
    /// Between SIGTERM and SIGKILL when tasks are stopped.
    pub stop_grace_secs: u64,
    /// The address tasks reach each other at (`MASTER_ADDR`, `PAI_HOST_IP_*`).
    pub host_ip: String,
    /// bubblewrap, when installed: tasks then see the user's space at /mnt.
    pub bwrap: Option<PathBuf>,
    /// The host's top-level folders, read once at start for every sandbox.
    pub host_root: Vec<RootEntry>,
    /// docker or podman, for tasks that name an image (needs `bwrap`).
    pub containers: Option<ContainerEngine>,
    /// Why there is no container engine, for `kiln nodes`.
    pub containers_note: Option<String>,
    /// Host folders every container gets read-only (the admin's site
    /// software: a shared Python, CUDA), host path and path inside.
    pub container_mounts: Vec<(PathBuf, PathBuf)>,
    /// util-linux's setpriv, with which a sandboxed task becomes its uid.
    pub setpriv: Option<PathBuf>,
}

pub struct LocalEngine {
    pub(super) cfg: LocalConfig,
    pub(super) events: EventSink,
    pub(super) ports: Ports,
    /// Ports each attempt holds, to give back.
    pub(super) held: HashMap<AttemptRef, Vec<u16>>,
    /// The supervisors of runs that have not been seen to end.
    pub(super) running: HashMap<TaskRef, Arc<Supervisor>>,
    /// Supervisors started ahead of the next launches (standby.rs), and
    /// whether more are being started.
    standby: Arc<Mutex<Vec<Standby>>>,
    refilling: Arc<AtomicBool>,
}

/// How long after a launch the next standbys are started: the tasks just
/// launched get the CPUs for their own start first (on a small machine
/// they would take turns).
const REFILL_AFTER: Duration = Duration::from_millis(10);

/// Standbys kept ready: one scheduling pass often starts a few jobs at once
/// (one ends and frees GPUs for several smaller ones), and each without a
/// standby waits for a fresh supervisor.
const STANDBYS: usize = 4;

impl LocalEngine {
    pub fn new(cfg: LocalConfig, events: EventSink) -> Self {
        Self {
            cfg,
            events,
            ports: Ports::default(),
            held: HashMap::new(),
            running: HashMap::new(),
            standby: Arc::new(Mutex::new(Vec::new())),
            refilling: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The task's supervisor: the standby when one is ready and takes the
    /// folder, else a fresh one. Either way a standby is made ready for
    /// the next launch.
    fn supervisor_for(&self, dir: &TaskDir) -> Result<std::process::Child, EngineError> {
        let ready = self.standby.lock().ok().and_then(|mut s| s.pop());
        let child = match ready.map(|s| s.hand_over(dir)) {
            Some(Ok(child)) => Ok(child),
            Some(Err(e)) => {
                warn!(error = %e, "starting a fresh supervisor instead");
                spawn_supervisor(&self.cfg.exe, dir)
            }
            None => spawn_supervisor(&self.cfg.exe, dir),
        };
        self.refill_standby();
        child
    }

    fn refill_standby(&self) {
        if self.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        let (slot, refilling) = (Arc::clone(&self.standby), Arc::clone(&self.refilling));
        let exe = self.cfg.exe.clone();
        let spawned = std::thread::Builder::new()
            .name("kiln-standby".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                std::thread::sleep(REFILL_AFTER);
                while slot.lock().is_ok_and(|s| s.len() < STANDBYS) {
                    match spawn_standby(&exe) {
                        Ok(s) => {
                            if let Ok(mut slot) = slot.lock() {
                                slot.push(s);
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot start a standby supervisor");
                            break;
                        }
                    }
                }
                refilling.store(false, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            self.refilling.store(false, Ordering::SeqCst);
            warn!(error = %e, "cannot start a thread for the standby supervisor");
        }
    }

    /// A run's folder. Generation 0 is the task's first run in the
    /// attempt; restarts in place and relaunches get fresh folders.
    pub(crate) fn task_dir(&self, t: &TaskRef) -> TaskDir {
        let name = if t.gen == 0 {
            t.task.to_string()
        } else {
            format!("{}.{}", t.task, t.gen)
        };
        TaskDir::new(self.attempt_dir(t.attempt).join(name))
    }

    pub(crate) fn attempt_dir(&self, a: AttemptRef) -> PathBuf {
        self.cfg
            .jobs
            .join(a.key.to_string())
            .join(format!("attempt-{}", a.attempt))
    }

    /// The rendezvous port and every task's port list, all or none.
    fn allocate_ports(&mut self, a: &AttemptSpec) -> Result<(u16, Vec<PortLists>), String> {
        let mut all: Vec<u16> = Vec::new();
        let ports = &mut self.ports;
        let result = (|| {
            let master = ports.take_free()?;
            all.push(master);
            let mut per_task = Vec::new();
            for t in &a.tasks {
                let mut list = Vec::new();
                for p in &t.ports {
                    let got = if p.begin_at == 0 {
                        (0..p.count)
                            .map(|_| ports.take_free())
                            .collect::<Result<Vec<_>, _>>()?
                    } else {
                        ports.take_fixed(p.begin_at, p.count, &p.label)?
                    };
                    all.extend(&got);
                    list.push((p.label.clone(), got));
                }
                per_task.push(list);
            }
            Ok::<_, String>((master, per_task))
        })();
        match result {
            Ok(r) => {
                self.held.insert(a.attempt, all);
                Ok(r)
            }
            Err(e) => {
                self.ports.release(all);
                Err(format!("waiting for a port: {e}"))
            }
        }
    }

    /// One small thread per supervisor, blocked on its pidfd until it
    /// exits; then how the run ended goes to the loop.
    pub(super) fn watch(&self, task: TaskRef, sup: Arc<Supervisor>, dir: TaskDir) {
        let gone = Arc::new(AtomicBool::new(false));
        if self.cfg.containers.is_some() && dir.read_launch().is_ok_and(|l| l.container.is_some()) {
            self.watch_pull(task.clone(), dir.clone(), Arc::clone(&gone));
        }
        let events = Arc::clone(&self.events);
        let spawned = std::thread::Builder::new()
            .name(format!("kiln-watch-{}", sup.pid()))
            .stack_size(64 * 1024)
            .spawn(move || {
                sup.wait();
                gone.store(true, Ordering::SeqCst);
                events(super::reattach::end_of(task, &dir));
            });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start a watcher thread");
        }
    }
}

/// How often a container's pull is looked at for progress.
const PULL_POLL: Duration = Duration::from_millis(250);

impl LocalEngine {
    /// Turns a container's pull progress (`image.json`, written by its
    /// supervisor) into events, until the pull is done or the task runs
    /// or ended.
    fn watch_pull(&self, task: TaskRef, dir: TaskDir, supervisor_gone: Arc<AtomicBool>) {
        let events = Arc::clone(&self.events);
        let spawned = std::thread::Builder::new()
            .name("kiln-pull".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let file = super::image_pull::progress_file(&dir);
                let mut said = String::new();
                loop {
                    let progress = std::fs::read(&file).ok().and_then(|b| {
                        serde_json::from_slice::<super::image_pull::ImageProgress>(&b).ok()
                    });
                    if let Some(p) = &progress {
                        if p.message != said {
                            said.clone_from(&p.message);
                            events(crate::engine::EngineEvent::Progress {
                                task: task.clone(),
                                kind: "image".into(),
                                message: p.message.clone(),
                            });
                        }
                    }
                    let over = progress.as_ref().is_some_and(|p| p.done)
                        || (progress.is_none() && dir.started().exists())
                        || dir.exit().exists()
                        || supervisor_gone.load(Ordering::SeqCst);
                    if over {
                        break;
                    }
                    std::thread::sleep(PULL_POLL);
                }
            });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start a thread to follow an image pull");
        }
    }
}

impl Engine for LocalEngine {
    fn info(&self) -> EngineInfo {
        let cg = &self.cfg.discovered.cgroups;
        EngineInfo {
            name: "local",
            placement: Placement::Kiln,
            capacity_can_grow: false,
            started_on_launch: true,
            sandboxed: self.cfg.bwrap.is_some(),
            limits_summary: Some(super::delegation::summary(cg.version, &cg.controllers)),
        }
    }

    fn nodes(&self) -> Vec<NodeState> {
        vec![super::launch::node_state(&self.cfg)]
    }

    fn submit(&mut self, a: &AttemptSpec) -> Result<Submission, EngineError> {
        let Some(placed) = &a.placed else {
            return Err(EngineError::Folder(
                "the local engine needs kiln to place the tasks".into(),
            ));
        };
        let (master_port, ports) = match self.allocate_ports(a) {
            Ok(p) => p,
            Err(message) => return Ok(Submission::Wait(WaitReason { message })),
        };
        let tasks = a
            .tasks
            .iter()
            .zip(placed)
            .zip(ports)
            .map(|((t, p), ports)| TaskAllocation {
                task: t.task.clone(),
                host: self.cfg.discovered.node.name.clone(),
                address: self.cfg.host_ip.clone(),
                gpus: p.gpus.clone(),
                ports,
                placed: p.clone(),
            })
            .collect();
        Ok(Submission::Allocated(Allocation {
            attempt: a.attempt,
            master_port,
            tasks,
        }))
    }

    fn prepare(&mut self, tasks: &[TaskLaunch]) -> Result<Vec<Prepared>, EngineError> {
        // Fresh folders for the attempt: nothing of an unstarted earlier try
        // (kiln stopped before recording it) may linger.
        if let Some(first) = tasks.first() {
            let _ = std::fs::remove_dir_all(self.attempt_dir(first.task.attempt));
        }
        tasks.iter().map(|t| self.prepare_one(t)).collect()
    }

    fn prepare_again(
        &mut self,
        from: &KnownTask,
        run_as: Option<RunAs>,
    ) -> Result<Prepared, EngineError> {
        let prepared = self.prepare_next(from, run_as)?;
        scratch::prune_folders(self.attempt_dir(from.task.attempt), &from.task.task);
        Ok(prepared)
    }

    fn launch(&mut self, task: &TaskRef) -> Result<(), EngineError> {
        let dir = self.task_dir(task);
        let child = self.supervisor_for(&dir)?;
        let sup = Arc::new(Supervisor::from_child(child, &dir));
        self.running.insert(task.clone(), Arc::clone(&sup));
        self.watch(task.clone(), sup, dir);
        Ok(())
    }

    fn stop(&mut self, tasks: &[TaskRef]) {
        for t in tasks {
            if let Some(sup) = self.running.get(t) {
                if let Err(e) = sup.request_stop() {
                    warn!(task = %t.task, error = %e, "cannot signal a supervisor");
                }
            }
        }
    }

    fn ended(&mut self, task: &TaskRef, keep: bool) {
        self.running.remove(task);
        if !keep {
            scratch::empty_scratch(self.task_dir(task).path().join("tmp"));
        }
    }

    fn release(&mut self, attempt: AttemptRef) {
        if let Some(ports) = self.held.remove(&attempt) {
            self.ports.release(ports);
        }
        self.running.retain(|t, _| t.attempt != attempt);
    }

    fn reattach(&mut self, known: &[(AttemptRef, Vec<KnownTask>)]) {
        self.reattach_all(known);
    }
}

/// The cgroup name of a run, unique per installation.
pub(super) fn group_of(instance: &str, t: &TaskRef) -> String {
    super::cgroup::group_name(
        instance,
        t.attempt.key,
        t.attempt.attempt,
        &t.task.to_string(),
        t.gen,
    )
}
