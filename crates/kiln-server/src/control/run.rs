//! The loop itself: state in memory, one handler per message, one store
//! transaction per handled message and job.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use indexmap::IndexMap;
use kiln_engine::local::container::{Container, Runtime};
use kiln_engine::local::resources::Discovered;
use kiln_engine::local::sandbox::SwitchUser;
use kiln_engine::local::{
    spawn_supervisor, Bind, LaunchSpec, Limits, RunAs, Sandbox, Supervisor, TaskDir,
};
use kiln_sched::{JobRequest, Placed, RunningJob};
use kiln_spec::completion::{decide, AttemptState, JobState, TaskState, TaskStatus};
use kiln_spec::env::{render_env, task_ids, RenderContext, TaskPlacement};
use kiln_spec::model::MountSource;
use kiln_spec::quantity::format_duration_secs;
use kiln_spec::{JobSpec, TaskId};
use kiln_store::{Change, JobPatch, JobRecord, NewEvent, Store, TaskRecord};
use tracing::{error, info, warn};

use super::backoff::Backoff;
use super::policy::{after_attempt, describe_end, task_end, task_lost, Next, Outcome, TaskEnd};
use super::ports::Ports;
use super::{ClusterView, Control, ControlError, DeadlineChange, Msg, NodeView, Pending};
use crate::identity::{chown_tree, give, set_mode};
use crate::layout::{Layout, SPACE_INSIDE};
use crate::now_ms;

/// What the loop needs to run tasks on this machine.
pub struct EngineConfig {
    /// The kiln binary, re-executed as `kiln __supervise`.
    pub exe: PathBuf,
    pub layout: Layout,
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
    pub host_root: Vec<kiln_engine::local::sandbox::RootEntry>,
    /// docker or podman, for tasks that name an image (needs `bwrap`).
    pub containers: Option<(Runtime, PathBuf)>,
    /// Where scheduling pass times go (Prometheus).
    pub schedule_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
    /// Who each user's tasks run as.
    pub identities: Arc<crate::identity::Identities>,
    /// util-linux's setpriv, with which a sandboxed task becomes its uid.
    pub setpriv: Option<PathBuf>,
    /// How long restarts in place wait (DESIGN: 10 s doubling to 5 min).
    pub restart_backoff: Backoff,
}

/// Restarts in place: back-off, one event line, a few folders (issue 16).
#[path = "restarts.rs"]
mod restarts;

/// A task's private folder (its /tmp): the task's uid alone may enter it.
fn task_folder(tmp: &std::path::Path, run_as: Option<RunAs>) -> Result<(), String> {
    std::fs::create_dir_all(tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    if let Some(id) = run_as {
        give(tmp, id, 0o700)?;
        // The task folder holds the launch record (the task's secrets) and
        // logs: others may pass through it to their mount points, not list it.
        if let Some(parent) = tmp.parent() {
            set_mode(parent, 0o711);
        }
    }
    Ok(())
}

struct Waiting {
    job: JobRecord,
    spec: Arc<JobSpec>,
    request: JobRequest,
}

struct Slot {
    rec: TaskRecord,
    placed: Placed,
    gen: u32,
    sup: Option<Arc<Supervisor>>,
    /// Set once it ended as a failure of the platform.
    platform_failure: Option<String>,
    /// How its last run ended, in a few words, while it waits to restart.
    last_exit: Option<String>,
}

struct JobPorts {
    master: u16,
    /// Per task, in task order: label → ports.
    per_task: Vec<IndexMap<String, Vec<u16>>>,
    /// Everything taken, to give back.
    all: Vec<u16>,
}

struct Active {
    job: JobRecord,
    spec: Arc<JobSpec>,
    slots: Vec<Slot>,
    master_port: Option<u16>,
    /// Once decided, the attempt ends as this when its last task is gone.
    ending: Option<Outcome>,
}

struct Loop {
    store: Arc<dyn Store>,
    cfg: EngineConfig,
    tx: Sender<Msg>,
    waiting: BTreeMap<i64, Waiting>,
    active: HashMap<i64, Active>,
    ports: Ports,
    reasons: Arc<RwLock<HashMap<i64, Pending>>>,
    cluster: Arc<RwLock<ClusterView>>,
    /// Something changed that may let a waiting job start.
    dirty: bool,
    /// A job waits for a port held outside kiln (no event says when it is
    /// let go), or a store write failed: the loop looks again after a while.
    recheck_at: Option<u64>,
    /// Jobs to come back to after a store failure.
    retry_later: std::collections::BTreeSet<i64>,
}

/// How soon a job waiting on something outside kiln (a port) is retried.
const RECHECK_MS: u64 = 1000;

fn event(kind: &str, message: impl Into<String>) -> NewEvent {
    NewEvent {
        at_ms: now_ms(),
        kind: kind.into(),
        message: message.into(),
        line: None,
    }
}

/// An event of one task of one attempt that a later one of the same kind
/// replaces: a task restarted in place exits again and again, and its
/// history shows the last exit, not each.
fn task_event(attempt: u32, task: &TaskId, kind: &str, message: impl Into<String>) -> NewEvent {
    NewEvent {
        line: Some(format!("a{attempt}/{task}/{kind}")),
        ..event(kind, message)
    }
}

/// Starts the loop on its own thread after rebuilding state from the store
/// and the task folders.
pub fn start(store: Arc<dyn Store>, cfg: EngineConfig) -> Result<Control, ControlError> {
    let (tx, rx) = mpsc::channel();
    let reasons = Arc::new(RwLock::new(HashMap::new()));
    let cluster = Arc::new(RwLock::new(ClusterView::default()));
    let mut lp = Loop {
        store,
        cfg,
        tx: tx.clone(),
        waiting: BTreeMap::new(),
        active: HashMap::new(),
        ports: Ports::default(),
        reasons: Arc::clone(&reasons),
        cluster: Arc::clone(&cluster),
        dirty: true,
        recheck_at: None,
        retry_later: std::collections::BTreeSet::new(),
    };
    lp.recover()?;
    lp.schedule();
    lp.publish();
    std::thread::Builder::new()
        .name("kiln-control".into())
        .spawn(move || lp.run(rx))
        .map_err(|e| ControlError::Internal(format!("cannot start the control loop: {e}")))?;
    Ok(Control {
        tx,
        reasons,
        cluster,
    })
}

fn parse_spec(job: &JobRecord) -> Result<JobSpec, String> {
    kiln_spec::parse_stored(job.spec_json.as_bytes())
        .map(|p| p.job)
        .map_err(|e| format!("stored spec of {} does not parse: {e}", job.id))
}

fn request_of(job: &JobRecord, spec: &JobSpec) -> JobRequest {
    let tasks = kiln_sched::task_requests(spec);
    JobRequest {
        key: job.key as u64,
        label: job.id.to_string(),
        queue: job.queue.clone(),
        priority: job.priority,
        seq: job.key as u64,
        tasks,
        max_duration_secs: spec.max_duration_secs,
    }
}

impl Loop {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let msg = match self.next_deadline() {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                    match rx.recv_timeout(wait) {
                        Ok(m) => Some(m),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return,
                },
            };
            // Handle everything that queued up before one scheduling pass:
            // a burst of submissions costs one pass, not one each.
            let mut next = msg;
            loop {
                match next {
                    Some(Msg::Shutdown) => {
                        info!("control loop stopped; running tasks stay with their supervisors");
                        return;
                    }
                    Some(m) => self.handle(m),
                    None => {}
                }
                match rx.try_recv() {
                    Ok(m) => next = Some(m),
                    Err(_) => break,
                }
            }
            self.fire_deadlines();
            self.fire_restarts();
            if self.recheck_at.is_some_and(|at| at <= now_ms()) {
                self.recheck_at = None;
                self.dirty = true;
                self.retry_pending();
            }
            if self.dirty {
                let t = std::time::Instant::now();
                self.schedule();
                if let Some(h) = &self.cfg.schedule_seconds {
                    h.observe(t.elapsed().as_secs_f64());
                }
                self.publish();
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Submitted(key) => self.on_submitted(key),
            Msg::Stop { key, by, reply } => {
                let _ = reply.send(self.on_stop(key, &by));
            }
            Msg::Deadline {
                key,
                by,
                change,
                reply,
            } => {
                let _ = reply.send(self.on_deadline_change(key, &by, change));
            }
            Msg::TaskExited {
                key,
                attempt,
                slot,
                gen,
            } => self.on_task_exited(key, attempt, slot, gen),
            Msg::Note { key, kind, message } => {
                if self.active.contains_key(&key) {
                    let change = Change {
                        events: vec![event(kind, message)],
                        ..Default::default()
                    };
                    self.apply(key, &change);
                }
            }
            Msg::Release { key, attempt, by } => {
                let current = self
                    .active
                    .get(&key)
                    .is_some_and(|a| a.job.attempt == attempt && a.job.state == JobState::Running);
                if current {
                    if let Err(e) = self.on_stop(key, &by) {
                        warn!(job_key = key, error = %e, "cannot release idle GPUs");
                    }
                }
            }
            Msg::Shutdown => {}
        }
    }

    fn apply(&self, key: i64, change: &Change) -> Option<JobRecord> {
        match self.store.apply(key, change) {
            Ok(j) => Some(j),
            Err(e) => {
                error!(job_key = key, error = %e, "cannot record a change");
                None
            }
        }
    }

    // ----- recovery -------------------------------------------------------

    fn recover(&mut self) -> Result<(), ControlError> {
        let jobs = self
            .store
            .unfinished_jobs()
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        for job in jobs {
            let spec = match parse_spec(&job) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    error!(job = %job.id, error = %e, "failing a job kiln cannot read back");
                    self.abandon(&job, e)?;
                    continue;
                }
            };
            match job.state {
                JobState::Waiting => {
                    let request = request_of(&job, &spec);
                    self.waiting.insert(job.key, Waiting { job, spec, request });
                }
                JobState::Running | JobState::Stopping => self.recover_active(job, spec)?,
                _ => {}
            }
        }
        info!(
            waiting = self.waiting.len(),
            running = self.active.len(),
            "state recovered"
        );
        self.sweep_groups();
        Ok(())
    }

    /// Removes the cgroups of this installation's tasks that ended while
    /// their supervisor could not clean up (killed with it): only the
    /// groups of tasks whose supervisor was found again are kept.
    fn sweep_groups(&self) {
        let cg = &self.cfg.discovered.cgroups;
        let roots: Vec<std::path::PathBuf> =
            [&cg.memory_root, &cg.cpu_root, &cg.pids_root, &cg.group_root]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
        let keep: std::collections::HashSet<String> = self
            .active
            .iter()
            .flat_map(|(key, a)| {
                // A task whose supervisor is gone has nothing in its group.
                a.slots.iter().filter(|s| s.sup.is_some()).map(|s| {
                    kiln_engine::local::cgroup::group_name(
                        &self.cfg.instance,
                        *key,
                        a.job.attempt,
                        &s.rec.task.to_string(),
                        s.gen,
                    )
                })
            })
            .collect();
        let removed = kiln_engine::local::cgroup::sweep(&roots, &self.cfg.instance, &keep);
        if removed > 0 {
            info!(
                removed,
                "removed cgroups left by tasks whose supervisor was killed"
            );
        }
    }

    /// A job kiln can no longer read: its tasks are stopped (nothing may
    /// keep running unaccounted for) and it fails with the reason.
    fn abandon(&mut self, job: &JobRecord, why: String) -> Result<(), ControlError> {
        if job.state != JobState::Waiting {
            let tasks = self
                .store
                .tasks(job.key, job.attempt)
                .map_err(|e| ControlError::Internal(e.to_string()))?;
            for t in tasks.iter().filter(|t| !t.state.is_finished()) {
                let Some(dir) = t.dir.as_deref().map(TaskDir::new) else {
                    continue;
                };
                if let Some(sup) = dir.claimed_by().and_then(|p| Supervisor::find(&dir, p)) {
                    let _ = sup.request_stop();
                }
            }
        }
        self.apply(
            job.key,
            &Change {
                job: JobPatch {
                    state: Some(JobState::Failed),
                    reason: Some(Some(why.clone())),
                    finished_at_ms: Some(Some(now_ms())),
                    pending_reason: Some(None),
                    ..Default::default()
                },
                events: vec![event("finished", why)],
                ..Default::default()
            },
        );
        Ok(())
    }

    fn recover_active(&mut self, job: JobRecord, spec: Arc<JobSpec>) -> Result<(), ControlError> {
        let key = job.key;
        // Without its tasks a running job cannot be carried on: better not to
        // start at all than to hand its GPUs to someone else.
        let recs = self
            .store
            .tasks(key, job.attempt)
            .map_err(|e| ControlError::Internal(format!("reading the tasks of {}: {e}", job.id)))?;
        let mut slots = Vec::new();
        for rec in recs {
            let placed = Placed {
                node: 0,
                cpus: spec.role(rec.task.role()).map_or(0, |r| r.cpus),
                memory_mb: spec.role(rec.task.role()).map_or(0, |r| r.memory_mb),
                gpus: rec.gpus.clone(),
            };
            self.ports
                .hold(rec.ports.values().flatten().copied().collect::<Vec<_>>());
            let gen = rec
                .dir
                .as_deref()
                .and_then(|d| d.rsplit_once('.'))
                .and_then(|(_, g)| g.parse().ok())
                .unwrap_or(0);
            slots.push(Slot {
                rec,
                placed,
                gen,
                sup: None,
                platform_failure: None,
                last_exit: None,
            });
        }
        // The rendezvous port lives in the tasks' environment.
        let master_port = slots
            .iter()
            .filter_map(|s| s.rec.dir.as_deref())
            .filter_map(|d| TaskDir::new(d).read_launch().ok())
            .find_map(|l| {
                l.env
                    .iter()
                    .find(|(k, _)| k == "MASTER_PORT")
                    .and_then(|(_, v)| v.parse::<u16>().ok())
            });
        if let Some(p) = master_port {
            self.ports.hold([p]);
        }
        // What was decided before the restart is in the store: a stop
        // request, or a deadline that has passed.
        let ending = if job.stop_requested || job.state == JobState::Stopping {
            Some(Outcome::Stopped("stopped on request".into()))
        } else {
            match (job.deadline_at_ms, job.started_at_ms) {
                (Some(d), Some(s)) if d <= now_ms() => Some(Outcome::DeadlineExceeded {
                    max_secs: d.saturating_sub(s) / 1000,
                }),
                _ => None,
            }
        };
        let attempt = job.attempt;
        self.active.insert(
            key,
            Active {
                job,
                spec,
                slots,
                master_port,
                ending,
            },
        );
        let mut change = Change::default();
        let count = self.active.get(&key).map_or(0, |a| a.slots.len());
        for i in 0..count {
            self.reattach(key, attempt, i, &mut change);
        }
        if !change.tasks.is_empty() || !change.events.is_empty() {
            self.apply(key, &change);
        }
        if let Some(a) = self.active.get(&key) {
            if a.ending.is_some() {
                stop_unfinished(a);
            }
        }
        self.evaluate(key);
        Ok(())
    }

    /// Finds a task of a running job again after a restart.
    fn reattach(&mut self, key: i64, attempt: u32, i: usize, change: &mut Change) {
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        let ending = a.ending.is_some();
        let slot = &mut a.slots[i];
        // A task waiting out its back-off has no process to find: its
        // timer starts it (see restarts.rs).
        if slot.rec.state.is_finished() || slot.rec.restart_at_ms.is_some() {
            return;
        }
        let Some(dir) = slot.rec.dir.clone().map(TaskDir::new) else {
            return;
        };
        let gen = slot.gen;
        let tx = self.tx.clone();
        let exited = move || {
            let _ = tx.send(Msg::TaskExited {
                key,
                attempt,
                slot: i,
                gen,
            });
        };
        if dir.exit().exists() {
            exited();
            return;
        }
        // Claim the folder: if that works, no supervisor ever took it (kiln
        // stopped between recording the start and starting it), and none
        // ever will. A claim with pid 0 is kiln's own from an earlier
        // recovery that did not get as far as the fresh start.
        let never_started = match dir.try_claim(0) {
            Ok(true) => true,
            Ok(false) => dir.claimed_by() == Some(0),
            Err(e) => {
                warn!(error = %e, "cannot inspect a task folder");
                false
            }
        };
        if never_started {
            if ending {
                self.skip_unstarted(key, i, change);
            } else {
                info!(job_key = key, task = %slot.rec.task, "starting a task kiln recorded but never started");
                let ev = event(
                    "restarted",
                    format!("{} started after kiln restarted", slot.rec.task),
                );
                self.relaunch(key, i, change, ev);
            }
            return;
        }
        // A supervisor claimed it; it writes its pid right after.
        let mut pid = dir.claimed_by();
        for _ in 0..100 {
            if pid.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            pid = dir.claimed_by();
        }
        match pid.and_then(|p| Supervisor::find(&dir, p)) {
            Some(sup) => {
                let sup = Arc::new(sup);
                slot.sup = Some(Arc::clone(&sup));
                watch(self.tx.clone(), sup, key, attempt, i, gen);
            }
            // Gone: its exit record decides (or its absence: lost).
            None => exited(),
        }
    }

    /// A task that never started and now never will: its attempt ended.
    fn skip_unstarted(&mut self, key: i64, i: usize, change: &mut Change) {
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        let slot = &mut a.slots[i];
        slot.rec.state = TaskState::Stopped;
        slot.rec.reason = Some("NotStarted: its attempt ended before it started".into());
        slot.rec.finished_at_ms = Some(now_ms());
        change.tasks.push(slot.rec.clone());
    }

    // ----- submissions and scheduling -------------------------------------

    fn on_submitted(&mut self, key: i64) {
        let job = match self.store.job_by_key(key) {
            Ok(Some(j)) if j.state == JobState::Waiting => j,
            Ok(_) => return,
            Err(e) => {
                error!(job_key = key, error = %e, "cannot read a submitted job; trying again");
                self.later(key);
                return;
            }
        };
        let spec = match parse_spec(&job) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                error!(job = %job.id, error = %e, "submitted job does not parse back");
                let _ = self.abandon(&job, e);
                return;
            }
        };
        let request = request_of(&job, &spec);
        self.waiting.insert(key, Waiting { job, spec, request });
        self.dirty = true;
    }

    fn schedule(&mut self) {
        self.dirty = false;
        if self.waiting.is_empty() {
            if let Ok(mut r) = self.reasons.write() {
                r.clear();
            }
            return;
        }
        let nodes = [self.cfg.discovered.node.clone()];
        let running: Vec<RunningJob> = self
            .active
            .values()
            .map(|a| RunningJob {
                key: a.job.key as u64,
                tasks: a.slots.iter().map(|s| s.placed.clone()).collect(),
                ends_at: a.job.deadline_at_ms.map(|d| d / 1000),
            })
            .collect();
        let waiting: Vec<JobRequest> = self.waiting.values().map(|w| w.request.clone()).collect();
        let plan = kiln_sched::schedule(&nodes, &running, &waiting, now_ms() / 1000);
        let mut reasons: HashMap<i64, Pending> = plan
            .waiting
            .into_iter()
            .map(|w| (w.key as i64, Pending::Plan(w.reason)))
            .collect();
        for start in plan.start {
            let key = start.key as i64;
            if let Err(reason) = self.start_job(key, start.tasks) {
                reasons.insert(key, Pending::Text(reason));
                self.recheck_at = Some(now_ms() + RECHECK_MS);
            }
        }
        if let Ok(mut r) = self.reasons.write() {
            *r = reasons;
        }
    }

    fn base_env(&self, tmp: &std::path::Path) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME"]
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
                .collect();
        env.push(("TMPDIR".into(), tmp.display().to_string()));
        env
    }

    fn limits(
        &self,
        key: i64,
        attempt: u32,
        task: &TaskId,
        gen: u32,
        role: &kiln_spec::model::TaskRole,
    ) -> Option<Limits> {
        let (cpus, memory_mb, pids) = (role.cpus, role.memory_mb, role.pids);
        let cg = &self.cfg.discovered.cgroups;
        let version = cg.version?;
        if cg.memory_root.is_none()
            && cg.cpu_root.is_none()
            && cg.pids_root.is_none()
            && cg.group_root.is_none()
        {
            return None;
        }
        Some(Limits {
            memory_mb: (memory_mb > 0).then_some(memory_mb),
            cpus: (cpus > 0).then_some(cpus),
            pids_max: Some(pids.map_or(kiln_engine::local::cgroup::DEFAULT_PIDS_MAX, u64::from)),
            pids_root: cg.pids_root.clone(),
            group_root: cg.group_root.clone(),
            cgroup_version: version,
            memory_root: cg.memory_root.clone(),
            cpu_root: cg.cpu_root.clone(),
            group: kiln_engine::local::cgroup::group_name(
                &self.cfg.instance,
                key,
                attempt,
                &task.to_string(),
                gen,
            ),
        })
    }

    /// Allocates ports, renders every task's environment, records the start
    /// and starts the supervisors. An `Err` keeps the job waiting with that
    /// reason.
    fn start_job(&mut self, key: i64, placed: Vec<Placed>) -> Result<(), String> {
        let Some(w) = self.waiting.get(&key) else {
            return Ok(());
        };
        let (job, spec) = (w.job.clone(), Arc::clone(&w.spec));
        let run_as = self
            .cfg
            .identities
            .run_as(job.id.user())
            .map_err(|e| format!("cannot give the task its user's uid: {e}"))?;
        let ids = task_ids(&spec);
        let JobPorts {
            master: master_port,
            per_task: task_ports,
            all: taken,
        } = self.allocate_ports(&spec, &ids)?;

        // Sandboxed (bwrap): the space is /mnt and outputs go to
        // Output/<name> in it. Otherwise: a folder of the job's own.
        let space = self
            .cfg
            .bwrap
            .as_ref()
            .map(|_| self.cfg.layout.spaces().join(job.id.user()));
        let (output, output_inside) =
            self.cfg
                .layout
                .outputs(key, &job.id, spec.output_dir.as_deref(), space.is_some());
        let fs_uri = match &space {
            Some(_) => format!("file://{SPACE_INSIDE}"),
            None => format!("file://{}", output.display()),
        };
        let ctx = RenderContext {
            job_id: job.id.clone(),
            attempt: job.attempt,
            default_fs_uri: fs_uri,
            space_dir: space.as_ref().map(|_| SPACE_INSIDE.to_owned()),
            output_dir: output_inside.display().to_string(),
            tensorboard_dir: Layout::tensorboard(&output_inside).display().to_string(),
            master_port,
            placement: ids
                .iter()
                .zip(&placed)
                .zip(&task_ports)
                .map(|((id, p), ports)| TaskPlacement {
                    task: id.clone(),
                    host_ip: self.cfg.host_ip.clone(),
                    gpus: p.gpus.clone(),
                    ports: ports.clone(),
                })
                .collect(),
        };
        let envs = match render_env(&spec, &ctx) {
            Ok(e) => e,
            Err(e) => {
                self.ports.release(taken);
                self.waiting.remove(&key);
                self.finish_unstarted(
                    key,
                    JobState::Failed,
                    format!("cannot render the environment: {e}"),
                );
                return Ok(());
            }
        };

        // Fresh folders for the attempt: nothing of an unstarted earlier try
        // (kiln stopped before recording it) may linger.
        let attempt_dir = self.cfg.layout.attempt(key, job.attempt);
        let _ = std::fs::remove_dir_all(&attempt_dir);

        let prepared = (|| -> Result<Vec<(TaskDir, LaunchSpec)>, String> {
            if run_as.is_some() {
                self.close_job_folder(key, run_as)?;
            }
            self.make_output(&job, &output, space.is_some(), run_as)?;
            let mut out = Vec::new();
            for (id, env) in ids.iter().zip(envs) {
                let role = spec
                    .role(id.role())
                    .ok_or_else(|| format!("no role for {id}"))?;
                let dir = TaskDir::new(self.cfg.layout.task(key, job.attempt, id, 0));
                let tmp = dir.path().join("tmp");
                task_folder(&tmp, run_as)?;
                let sandbox = match (&self.cfg.bwrap, &space) {
                    (Some(bwrap), Some(_)) => Some(self.sandbox(
                        bwrap,
                        job.id.user(),
                        key,
                        &spec,
                        &tmp,
                        &output_inside,
                        role.shm_mb,
                        &placed_gpus(&placed, &ids, id),
                        run_as,
                    )),
                    _ => None,
                };
                // A role's image (or the job's) runs in a container showing
                // what the sandbox would.
                let image = role.image.as_ref().or(spec.image.as_ref());
                let (sandbox, container) = match (&self.cfg.containers, image, sandbox) {
                    (Some((runtime, program)), Some(image), Some(sb)) => {
                        let container = Container {
                            runtime: *runtime,
                            program: program.clone(),
                            image: image.clone(),
                            name: format!(
                                "kiln-{}-{key}-a{}-{id}-0",
                                self.cfg.instance, job.attempt
                            ),
                            binds: sb.binds,
                            tmp: sb.tmp,
                            shm_mb: sb.shm_mb,
                            gpus: placed_gpus(&placed, &ids, id),
                            workdir: sb.workdir,
                            env_names: env.env.keys().cloned().collect(),
                            cpu_millis: u64::from(role.cpus) * 1000,
                            memory_mb: role.memory_mb,
                        };
                        (None, Some(container))
                    }
                    (_, _, sb) => (sb, None),
                };
                let mut all = self.base_env(if sandbox.is_some() || container.is_some() {
                    std::path::Path::new("/tmp")
                } else {
                    &tmp
                });
                if run_as.is_some() {
                    // The task's own name and a home it can write to (the
                    // server's HOME is root's).
                    let home = if sandbox.is_some() || container.is_some() {
                        SPACE_INSIDE.to_owned()
                    } else {
                        tmp.display().to_string()
                    };
                    all.retain(|(k, _)| !matches!(k.as_str(), "USER" | "LOGNAME" | "HOME"));
                    all.push(("USER".into(), job.id.user().to_owned()));
                    all.push(("LOGNAME".into(), job.id.user().to_owned()));
                    all.push(("HOME".into(), home));
                }
                all.extend(env.env);
                // The working folder: inside the sandbox it is bwrap's to
                // enter (the supervisor starts bwrap from the task folder).
                let working_dir = if sandbox.is_some() || container.is_some() {
                    dir.path().to_owned()
                } else {
                    match &spec.working_dir {
                        Some(w) => output.join(w),
                        None => output.clone(),
                    }
                };
                if sandbox.is_none() && container.is_none() {
                    // The job's own folder outside any space: the server's
                    // to make, the task's to write.
                    std::fs::create_dir_all(&working_dir)
                        .map_err(|e| format!("cannot create {}: {e}", working_dir.display()))?;
                    if let Some(id) = run_as {
                        chown_tree(&output, id)?;
                        set_mode(&output, 0o700);
                    }
                }
                let launch = LaunchSpec {
                    command: role.command.clone(),
                    env: all,
                    working_dir,
                    stop_grace_secs: self.cfg.stop_grace_secs,
                    limits: self.limits(key, job.attempt, id, 0, role),
                    sandbox,
                    container,
                    run_as,
                };
                dir.write_launch(&launch).map_err(|e| e.to_string())?;
                out.push((dir, launch));
            }
            Ok(out)
        })();
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.ports.release(taken);
                return Err(format!("cannot prepare the task folders: {e}"));
            }
        };

        let now = now_ms();
        let mut slots = Vec::new();
        for (((id, p), ports), (dir, _)) in ids.iter().zip(placed).zip(task_ports).zip(&prepared) {
            slots.push(Slot {
                rec: TaskRecord {
                    attempt: job.attempt,
                    task: id.clone(),
                    state: TaskState::Running,
                    exit_code: None,
                    signal: None,
                    reason: None,
                    host: self.cfg.discovered.node.name.clone(),
                    gpus: p.gpus.clone(),
                    ports: ports.into_iter().collect(),
                    restarts: 0,
                    started_at_ms: Some(now),
                    finished_at_ms: None,
                    dir: Some(dir.path().display().to_string()),
                    restart_at_ms: None,
                    restart_streak: 0,
                },
                placed: p,
                gen: 0,
                sup: None,
                platform_failure: None,
                last_exit: None,
            });
        }
        let placement: Vec<String> = slots
            .iter()
            .map(|s| {
                if s.rec.gpus.is_empty() {
                    s.rec.task.to_string()
                } else {
                    let g: Vec<String> = s.rec.gpus.iter().map(u32::to_string).collect();
                    format!("{} GPUs {}", s.rec.task, g.join(","))
                }
            })
            .collect();
        let mut events = vec![event(
            "placed",
            format!(
                "attempt {} placed on {}: {}",
                job.attempt,
                self.cfg.discovered.node.name,
                placement.join("; ")
            ),
        )];
        let cg = &self.cfg.discovered.cgroups;
        events.push(event(
            "limits",
            kiln_engine::local::delegation::summary(cg.version, &cg.controllers),
        ));
        events.push(event(
            "started",
            format!(
                "{} started",
                kiln_spec::words::count(slots.len() as u64, "task")
            ),
        ));
        let change = Change {
            job: JobPatch {
                state: Some(JobState::Running),
                pending_reason: Some(None),
                started_at_ms: Some(Some(now)),
                deadline_at_ms: Some(spec.max_duration_secs.map(|s| now + s * 1000)),
                ..Default::default()
            },
            tasks: slots.iter().map(|s| s.rec.clone()).collect(),
            events,
        };
        let Some(recorded) = self.apply(key, &change) else {
            self.ports.release(taken);
            return Err("cannot record the start; will try again".into());
        };
        self.waiting.remove(&key);
        self.active.insert(
            key,
            Active {
                job: recorded,
                spec,
                slots,
                master_port: Some(master_port),
                ending: None,
            },
        );
        let mut change = Change::default();
        for (i, (dir, _)) in prepared.iter().enumerate() {
            // Once the attempt is decided (a task could not be started),
            // the rest are not started at all.
            if self.active.get(&key).is_some_and(|a| a.ending.is_some()) {
                self.skip_unstarted(key, i, &mut change);
                continue;
            }
            if !self.spawn(key, job.attempt, i, 0, dir, &mut change) {
                self.apply(key, &std::mem::take(&mut change));
                self.evaluate(key);
            }
        }
        if !change.tasks.is_empty() {
            self.apply(key, &change);
            self.evaluate(key);
        }
        Ok(())
    }

    /// The file system view of one task (see kiln_engine::local::sandbox).
    #[allow(clippy::too_many_arguments)]
    fn sandbox(
        &self,
        bwrap: &std::path::Path,
        user: &str,
        key: i64,
        spec: &JobSpec,
        tmp: &std::path::Path,
        output_inside: &std::path::Path,
        shm_mb: u64,
        gpus: &[u32],
        run_as: Option<RunAs>,
    ) -> Sandbox {
        // Every source in a space or the datasets is named relative to its
        // folder and resolved beneath it by the supervisor at launch: a
        // task may have swapped any of it for a link since submission.
        let spaces = self.cfg.layout.spaces();
        let space = spaces.join(user);
        let mut binds = vec![Bind {
            source: user.into(),
            target: SPACE_INSIDE.into(),
            read_only: false,
            beneath: Some(spaces),
        }];
        // OpenPAI's codeDir: the copy taken at submission, read-only where
        // the folder is (the live folder should the copy be missing).
        if let Some(code) = &spec.code_dir {
            let copy = self.cfg.layout.code(key);
            let (source, beneath) = if copy.is_dir() {
                (copy, None)
            } else {
                (PathBuf::from(code), Some(space.clone()))
            };
            binds.push(Bind {
                source,
                target: PathBuf::from(SPACE_INSIDE).join(code),
                read_only: true,
                beneath,
            });
        }
        for m in &spec.mounts {
            let source = match &m.source {
                MountSource::Space(rel) => crate::spaces::SpacePath::parse(rel)
                    .ok()
                    .map(|p| (p.rel().to_owned(), space.clone())),
                MountSource::Dataset(name) => {
                    crate::spaces::Datasets::new(self.cfg.layout.datasets())
                        .path(name)
                        .map(|_| (PathBuf::from(name), self.cfg.layout.datasets()))
                }
            };
            if let Some((source, base)) = source {
                binds.push(Bind {
                    source,
                    target: m.target.clone().into(),
                    // Datasets are shared: never writable.
                    read_only: m.read_only || matches!(m.source, MountSource::Dataset(_)),
                    beneath: Some(base),
                });
            }
        }
        let workdir = match &spec.working_dir {
            Some(w) => output_inside.join(w),
            None => output_inside.to_owned(),
        };
        let mut devices: Vec<PathBuf> = gpus
            .iter()
            .map(|g| PathBuf::from(format!("/dev/nvidia{g}")))
            .collect();
        if !gpus.is_empty() {
            devices.extend(
                [
                    "/dev/nvidiactl",
                    "/dev/nvidia-uvm",
                    "/dev/nvidia-uvm-tools",
                    "/dev/nvidia-modeset",
                ]
                .iter()
                .map(PathBuf::from),
            );
        }
        // Only what exists: fake GPUs have no device files.
        devices.retain(|d| d.exists());
        Sandbox {
            bwrap: bwrap.to_owned(),
            root: self.cfg.host_root.clone(),
            hide: vec![self.cfg.layout.root().to_owned()],
            dirs: Vec::new(),
            binds,
            tmp: tmp.to_owned(),
            shm_mb,
            devices,
            workdir,
            drop_caps: kiln_engine::local::sandbox::running_as_root(),
            switch_user: SwitchUser::of(run_as, self.cfg.setpriv.as_deref()),
        }
    }

    /// The job's folder in the data folder is passable, not listable, by
    /// the tasks' uids; its codeDir copy (bound read-only into the tasks)
    /// is the owner's alone.
    fn close_job_folder(&self, key: i64, run_as: Option<RunAs>) -> Result<(), String> {
        let job = self.cfg.layout.job(key);
        std::fs::create_dir_all(&job)
            .map_err(|e| format!("cannot create {}: {e}", job.display()))?;
        set_mode(&job, 0o711);
        let code = self.cfg.layout.code(key);
        if let (Some(id), true) = (run_as, code.is_dir()) {
            chown_tree(&code, id)?;
            set_mode(&code, 0o700);
        }
        Ok(())
    }

    /// Makes the job's output folder (and its TensorBoard folder). In a
    /// space it is made beneath the space as the user, so a link a task
    /// left there never makes the server create anything elsewhere.
    fn make_output(
        &self,
        job: &JobRecord,
        output: &std::path::Path,
        in_space: bool,
        run_as: Option<RunAs>,
    ) -> Result<(), String> {
        let board = Layout::tensorboard(output);
        if !in_space {
            return std::fs::create_dir_all(&board)
                .map_err(|e| format!("cannot create {}: {e}", output.display()));
        }
        let space = self.cfg.layout.spaces().join(job.id.user());
        let rel = board.strip_prefix(&space).map_err(|_| {
            format!(
                "{} is not in the space of {}",
                output.display(),
                job.id.user()
            )
        })?;
        std::fs::create_dir_all(&space)
            .map_err(|e| format!("cannot create {}: {e}", space.display()))?;
        if let Some(id) = run_as {
            // The space is its user's alone.
            give(&space, id, 0o700)?;
        }
        let dir = cap_std::fs::Dir::open_ambient_dir(&space, cap_std::ambient_authority())
            .map_err(|e| format!("cannot open {}: {e}", space.display()))?;
        let _as = crate::identity::ActingAs::new(run_as);
        dir.create_dir_all(rel).map_err(|e| {
            format!(
                "cannot create {} in the space of {}: {e} (a link there that leads out of the space is not followed)",
                rel.display(),
                job.id.user()
            )
        })
    }

    /// The job's rendezvous port and every task's port list, all or none.
    fn allocate_ports(&mut self, spec: &JobSpec, ids: &[TaskId]) -> Result<JobPorts, String> {
        let mut all: Vec<u16> = Vec::new();
        let result = (|| {
            let master = self.ports.take_free()?;
            all.push(master);
            let mut per_task = Vec::new();
            for id in ids {
                let mut map = IndexMap::new();
                let specs = spec
                    .role(id.role())
                    .map(|r| r.ports.as_slice())
                    .unwrap_or_default();
                for p in specs {
                    let got = if p.begin_at == 0 {
                        (0..p.count)
                            .map(|_| self.ports.take_free())
                            .collect::<Result<Vec<_>, _>>()?
                    } else {
                        self.ports.take_fixed(p.begin_at, p.count, &p.label)?
                    };
                    all.extend(&got);
                    map.insert(p.label.clone(), got);
                }
                per_task.push(map);
            }
            Ok::<_, String>((master, per_task))
        })();
        match result {
            Ok((master, per_task)) => Ok(JobPorts {
                master,
                per_task,
                all,
            }),
            Err(e) => {
                self.ports.release(all);
                Err(format!("waiting for a port: {e}"))
            }
        }
    }

    /// Starts one supervisor. A failure to start it is the task's end,
    /// recorded in `change`; returns whether it started.
    fn spawn(
        &mut self,
        key: i64,
        attempt: u32,
        i: usize,
        gen: u32,
        dir: &TaskDir,
        change: &mut Change,
    ) -> bool {
        let started = spawn_supervisor(&self.cfg.exe, dir);
        let Some(a) = self.active.get_mut(&key) else {
            return false;
        };
        match started {
            Ok(child) => {
                let sup = Arc::new(Supervisor::from_child(child, dir));
                a.slots[i].sup = Some(Arc::clone(&sup));
                watch(self.tx.clone(), sup, key, attempt, i, gen);
                true
            }
            Err(e) => {
                error!(job_key = key, error = %e, "cannot start a supervisor");
                self.record_end(
                    key,
                    i,
                    task_lost(&format!("cannot start its supervisor: {e}")),
                    change,
                );
                false
            }
        }
    }

    /// Starts a task again in a fresh folder of the same attempt, with the
    /// same launch (an in-place restart, or a start kiln never made). The
    /// new folder is recorded before the supervisor starts, together with
    /// whatever `change` held so far, so a crash in between is recovered
    /// like any recorded-but-unstarted task. `ev` says why, with the start.
    fn relaunch(&mut self, key: i64, i: usize, change: &mut Change, ev: NewEvent) {
        // Who the task runs as now, not what an older launch record says
        // (one from before kiln gave uids has none).
        let run_as = match self.active.get(&key) {
            Some(a) => self.cfg.identities.run_as(a.job.id.user()),
            None => return,
        };
        let run_as = match run_as {
            Ok(r) => r,
            Err(e) => {
                let end = task_lost(&format!("cannot give the task its user's uid: {e}"));
                self.record_end(key, i, end, change);
                return;
            }
        };
        let setpriv = self.cfg.setpriv.clone();
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        let attempt = a.job.attempt;
        let slot = &mut a.slots[i];
        let old = slot.rec.dir.clone().map(TaskDir::new);
        let Some(mut launch) = old.as_ref().and_then(|d| d.read_launch().ok()) else {
            let end = task_lost("its launch record is missing");
            self.record_end(key, i, end, change);
            return;
        };
        // A folder nobody has used: a crash may have left later ones behind.
        let mut gen = slot.gen + 1;
        while self
            .cfg
            .layout
            .task(key, attempt, &slot.rec.task, gen)
            .exists()
        {
            gen += 1;
        }
        slot.gen = gen;
        let dir = TaskDir::new(self.cfg.layout.task(key, attempt, &slot.rec.task, gen));
        launch.run_as = run_as;
        if let Some(sb) = &mut launch.sandbox {
            sb.switch_user = SwitchUser::of(run_as, setpriv.as_deref());
        }
        let tmp = dir.path().join("tmp");
        if let Err(e) = task_folder(&tmp, launch.run_as) {
            let end = task_lost(&e);
            self.record_end(key, i, end, change);
            return;
        }
        match &mut launch.sandbox {
            // Inside the sandbox the new folder is the task's /tmp.
            Some(sb) => sb.tmp = tmp.clone(),
            None => {
                for (k, v) in &mut launch.env {
                    if k == "TMPDIR" {
                        *v = tmp.display().to_string();
                    }
                }
            }
        }
        if let Some(l) = &mut launch.limits {
            l.group = format!(
                "kiln-{}-{key}-a{attempt}-{}-{gen}",
                self.cfg.instance, slot.rec.task
            );
        }
        if let Err(e) = dir.write_launch(&launch) {
            let end = task_lost(&format!("cannot write its launch record: {e}"));
            self.record_end(key, i, end, change);
            return;
        }
        slot.rec.state = TaskState::Running;
        slot.rec.exit_code = None;
        slot.rec.signal = None;
        slot.rec.reason = None;
        slot.rec.started_at_ms = Some(now_ms());
        slot.rec.finished_at_ms = None;
        slot.rec.dir = Some(dir.path().display().to_string());
        let mut recorded = std::mem::take(change);
        recorded.tasks.push(slot.rec.clone());
        recorded.events.push(ev);
        self.apply(key, &recorded);
        self.spawn(key, attempt, i, gen, &dir, change);
    }

    fn finish_unstarted(&mut self, key: i64, state: JobState, reason: String) {
        self.apply(
            key,
            &Change {
                job: JobPatch {
                    state: Some(state),
                    reason: Some(Some(reason.clone())),
                    pending_reason: Some(None),
                    finished_at_ms: Some(Some(now_ms())),
                    ..Default::default()
                },
                events: vec![event("finished", format!("{}: {reason}", state.as_str()))],
                ..Default::default()
            },
        );
    }

    // ----- task exits and the completion policy ---------------------------

    fn on_task_exited(&mut self, key: i64, attempt: u32, i: usize, gen: u32) {
        let Some(a) = self.active.get(&key) else {
            return;
        };
        let Some(slot) = a.slots.get(i) else {
            return;
        };
        // A task in its back-off has had its end counted already.
        if a.job.attempt != attempt
            || slot.gen != gen
            || slot.rec.state.is_finished()
            || slot.rec.restart_at_ms.is_some()
        {
            return;
        }
        let Some(dir) = slot.rec.dir.clone().map(TaskDir::new) else {
            return;
        };
        let mut change = Change::default();
        if let Ok(Some(started)) = dir.read_started() {
            if let Some(note) = started.limits_note {
                change.events.push(task_event(
                    attempt,
                    &slot.rec.task,
                    "limits",
                    format!("{}: {note}", slot.rec.task),
                ));
            }
        }
        let end = match dir.read_exit() {
            Ok(Some(exit)) => task_end(&exit),
            Ok(None) => task_lost("its supervisor ended without recording how the task ended"),
            Err(e) => task_lost(&format!("its exit record is unreadable: {e}")),
        };
        let finished_at = dir.read_exit().ok().flatten().map(|e| e.finished_at_ms);
        self.record_end(key, i, end, &mut change);
        if let (Some(at), Some(a)) = (finished_at, self.active.get_mut(&key)) {
            a.slots[i].rec.finished_at_ms = Some(at);
            if let Some(t) = change.tasks.last_mut() {
                t.finished_at_ms = Some(at);
            }
        }
        // Recorded with what the policy makes of it (a back-off), at once.
        self.evaluate_with(key, change);
    }

    fn record_end(&mut self, key: i64, i: usize, mut end: TaskEnd, change: &mut Change) {
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        // Only kiln's own stop makes a stopped task: a SIGTERM from anyone
        // else (an operator, a service manager stopping everything) ended
        // the task early, which is a failure, not a finish.
        if end.state == TaskState::Stopped && a.ending.is_none() && !a.job.stop_requested {
            end.state = TaskState::Failed;
            end.reason = Some(
                "killed from outside kiln: its supervisor got SIGTERM without a stop request"
                    .into(),
            );
        }
        let debug = is_debug(&a.spec);
        let attempt = a.job.attempt;
        let slot = &mut a.slots[i];
        slot.sup = None;
        slot.rec.state = end.state;
        slot.rec.exit_code = end.exit_code;
        slot.rec.signal = end.signal;
        slot.rec.reason = end.reason.clone();
        slot.rec.finished_at_ms = Some(now_ms());
        if end.platform {
            slot.platform_failure = end.reason.clone().or(Some("platform failure".into()));
        }
        change.tasks.push(slot.rec.clone());
        change.events.push(task_event(
            attempt,
            &slot.rec.task,
            "exited",
            describe_end(&slot.rec.task, &end),
        ));
        // The task's scratch space is emptied, except a failed task's under isDebug.
        if let Some(dir) = &slot.rec.dir {
            let dir = PathBuf::from(dir);
            if debug && end.state == TaskState::Failed {
                change.events.push(task_event(
                    attempt,
                    &slot.rec.task,
                    "debug",
                    format!(
                        "{} failed; its folder is kept for debugging at {} (isDebug)",
                        slot.rec.task,
                        dir.display()
                    ),
                ));
            } else {
                empty_scratch(dir.join("tmp"));
            }
        }
    }

    /// Applies the completion policy to the current attempt, and ends it once
    /// it is decided and its last task is gone.
    fn evaluate(&mut self, key: i64) {
        self.evaluate_with(key, Change::default());
    }

    /// [`Self::evaluate`] with what `change` holds recorded in the same
    /// transaction.
    fn evaluate_with(&mut self, key: i64, mut change: Change) {
        let Some(a) = self.active.get_mut(&key) else {
            if !change.tasks.is_empty() || !change.events.is_empty() {
                self.apply(key, &change);
            }
            return;
        };
        if a.ending.is_none() {
            if let Some(why) = a.slots.iter().find_map(|s| s.platform_failure.clone()) {
                a.ending = Some(Outcome::Failed {
                    reason: why,
                    platform: true,
                });
            } else {
                let statuses: Vec<TaskStatus> = a
                    .slots
                    .iter()
                    .map(|s| TaskStatus {
                        task: s.rec.task.clone(),
                        state: s.rec.state,
                        exit_code: s.rec.exit_code,
                        signal: s.rec.signal,
                        // A restart decided and waiting out its back-off
                        // is spent from the budget already.
                        restarts: s.rec.restarts + u32::from(s.rec.restart_at_ms.is_some()),
                    })
                    .collect();
                let d = decide(&a.spec, &statuses, a.job.stop_requested);
                let reason = d.reason.clone().unwrap_or_default();
                a.ending = match d.state {
                    AttemptState::Running => None,
                    AttemptState::Succeeded => Some(Outcome::Succeeded(reason)),
                    AttemptState::Failed => Some(Outcome::Failed {
                        reason,
                        platform: false,
                    }),
                    AttemptState::Stopped => Some(Outcome::Stopped(reason)),
                };
                if a.ending.is_none() && !d.restart.is_empty() {
                    let restart: Vec<usize> = a
                        .slots
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| d.restart.contains(&s.rec.task))
                        .map(|(i, _)| i)
                        .collect();
                    for i in restart {
                        self.back_off(key, i, &mut change);
                    }
                    self.apply(key, &change);
                    return;
                }
            }
            if let Some(a) = self.active.get(&key) {
                if a.ending.is_some() {
                    stop_unfinished(a);
                }
            }
        }
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        if a.ending.is_some() {
            restarts::cancel_backoffs(a, &mut change);
        }
        let all_done = a.slots.iter().all(|s| s.rec.state.is_finished());
        if a.ending.is_some() && all_done {
            self.finish_attempt(key, change);
        } else if !change.tasks.is_empty() || !change.events.is_empty() {
            self.apply(key, &change);
        }
    }

    fn finish_attempt(&mut self, key: i64, mut change: Change) {
        let Some(a) = self.active.get(&key) else {
            return;
        };
        let Some(mut outcome) = a.ending.clone() else {
            return;
        };
        // A stop request outranks a failure that would be retried.
        if a.job.stop_requested {
            if let Outcome::Failed { reason, .. } = &outcome {
                outcome = Outcome::Stopped(format!(
                    "stopped on request while the attempt was ending ({reason})"
                ));
            }
        }
        let next = after_attempt(&a.spec, a.job.attempt, a.job.failed_attempts, &outcome);
        let now = now_ms();
        let retry = match next {
            Next::Finish { state, reason } => {
                change.job = JobPatch {
                    state: Some(state),
                    reason: Some(Some(reason.clone())),
                    finished_at_ms: Some(Some(now)),
                    ..Default::default()
                };
                change
                    .events
                    .push(event("finished", format!("{}: {reason}", state.as_str())));
                false
            }
            Next::Retry {
                attempt,
                failed_attempts,
                reason,
            } => {
                change.job = JobPatch {
                    state: Some(JobState::Waiting),
                    reason: Some(Some(reason.clone())),
                    attempt: Some(attempt),
                    failed_attempts: Some(failed_attempts),
                    deadline_at_ms: Some(None),
                    stop_requested: Some(false),
                    pending_reason: Some(Some(format!("queued for attempt {attempt}"))),
                    ..Default::default()
                };
                change.events.push(event("retried", reason));
                true
            }
        };
        let Some(job) = self.apply(key, &change) else {
            // The job stays as it is, in memory and in the store, and the
            // loop tries again shortly.
            self.later(key);
            return;
        };
        let Some(a) = self.active.remove(&key) else {
            return;
        };
        self.dirty = true;
        let ports: Vec<u16> = a
            .slots
            .iter()
            .flat_map(|s| s.rec.ports.values().flatten().copied())
            .chain(a.master_port)
            .collect();
        self.ports.release(ports);
        if retry {
            let request = request_of(&job, &a.spec);
            self.waiting.insert(
                key,
                Waiting {
                    job,
                    spec: a.spec,
                    request,
                },
            );
        }
    }

    /// Comes back to a job after a store failure.
    fn later(&mut self, key: i64) {
        self.retry_later.insert(key);
        self.recheck_at = Some(now_ms() + RECHECK_MS);
    }

    fn retry_pending(&mut self) {
        for key in std::mem::take(&mut self.retry_later) {
            if self.active.contains_key(&key) {
                self.evaluate(key);
            } else if !self.waiting.contains_key(&key) {
                self.on_submitted(key);
            }
        }
    }

    // ----- stop and deadlines ---------------------------------------------

    fn on_stop(&mut self, key: i64, by: &str) -> Result<JobRecord, ControlError> {
        if self.waiting.remove(&key).is_some() {
            self.dirty = true;
            let reason = format!("stopped by {by} before it started");
            let change = Change {
                job: JobPatch {
                    state: Some(JobState::Stopped),
                    stop_requested: Some(true),
                    reason: Some(Some(reason.clone())),
                    pending_reason: Some(None),
                    finished_at_ms: Some(Some(now_ms())),
                    ..Default::default()
                },
                events: vec![event("stopped", reason)],
                ..Default::default()
            };
            return self
                .apply(key, &change)
                .ok_or_else(|| ControlError::Internal("cannot record the stop".into()));
        }
        if let Some(a) = self.active.get_mut(&key) {
            if a.job.stop_requested {
                return Ok(a.job.clone());
            }
            a.job.stop_requested = true;
            let reason = format!("stopped by {by}");
            if !matches!(
                a.ending,
                Some(Outcome::Succeeded(_) | Outcome::Failed { .. })
            ) {
                a.ending = Some(Outcome::Stopped(reason.clone()));
            }
            stop_unfinished(a);
            let change = Change {
                job: JobPatch {
                    state: Some(JobState::Stopping),
                    stop_requested: Some(true),
                    ..Default::default()
                },
                events: vec![event("stop-requested", format!("stop requested by {by}"))],
                ..Default::default()
            };
            let job = self
                .apply(key, &change)
                .ok_or_else(|| ControlError::Internal("cannot record the stop".into()))?;
            if let Some(a) = self.active.get_mut(&key) {
                a.job = job.clone();
            }
            self.evaluate(key);
            return Ok(job);
        }
        match self.store.job_by_key(key) {
            Ok(Some(j)) => Err(ControlError::Conflict(format!(
                "job {} is already {}",
                j.id,
                j.state.as_str()
            ))),
            Ok(None) => Err(ControlError::NotFound(format!("job #{key}"))),
            Err(e) => Err(ControlError::Internal(e.to_string())),
        }
    }

    fn on_deadline_change(
        &mut self,
        key: i64,
        by: &str,
        change: DeadlineChange,
    ) -> Result<JobRecord, ControlError> {
        let Some(a) = self.active.get_mut(&key) else {
            return match self.store.job_by_key(key) {
                Ok(Some(j)) => Err(ControlError::Conflict(format!(
                    "job {} is {}; only a running job's max duration can change (a waiting job's clock has not started)",
                    j.id,
                    j.state.as_str()
                ))),
                Ok(None) => Err(ControlError::NotFound(format!("job #{key}"))),
                Err(e) => Err(ControlError::Internal(e.to_string())),
            };
        };
        if a.ending.is_some() {
            return Err(ControlError::Conflict(format!(
                "job {} is already ending",
                a.job.id
            )));
        }
        let started = a.job.started_at_ms.unwrap_or_else(now_ms);
        let (deadline, message) = match change {
            DeadlineChange::ExtendBy(secs) => {
                let Some(d) = a.job.deadline_at_ms else {
                    return Err(ControlError::Invalid(format!(
                        "job {} has no max duration to extend; set one with maxDuration",
                        a.job.id
                    )));
                };
                let d = d.saturating_add(secs.saturating_mul(1000));
                (
                    d,
                    format!(
                        "max duration extended by {} by {by}, to {} in all",
                        format_duration_secs(secs),
                        format_duration_secs(d.saturating_sub(started) / 1000)
                    ),
                )
            }
            DeadlineChange::Total(secs) => (
                started.saturating_add(secs.saturating_mul(1000)),
                format!("max duration set to {} by {by}", format_duration_secs(secs)),
            ),
        };
        let ch = Change {
            job: JobPatch {
                deadline_at_ms: Some(Some(deadline)),
                ..Default::default()
            },
            events: vec![event("extended", message)],
            ..Default::default()
        };
        let job = self
            .apply(key, &ch)
            .ok_or_else(|| ControlError::Internal("cannot record the new deadline".into()))?;
        if let Some(a) = self.active.get_mut(&key) {
            a.job = job.clone();
        }
        self.dirty = true;
        Ok(job)
    }

    fn next_deadline(&self) -> Option<u64> {
        self.active
            .values()
            .filter(|a| a.ending.is_none())
            .filter_map(|a| a.job.deadline_at_ms)
            .chain(self.recheck_at)
            .chain(self.next_restart())
            .min()
    }

    fn fire_deadlines(&mut self) {
        let now = now_ms();
        let due: Vec<i64> = self
            .active
            .values()
            .filter(|a| a.ending.is_none() && a.job.deadline_at_ms.is_some_and(|d| d <= now))
            .map(|a| a.job.key)
            .collect();
        for key in due {
            let Some(a) = self.active.get_mut(&key) else {
                continue;
            };
            let max_secs = a
                .job
                .deadline_at_ms
                .zip(a.job.started_at_ms)
                .map_or(0, |(d, s)| d.saturating_sub(s) / 1000);
            a.ending = Some(Outcome::DeadlineExceeded { max_secs });
            stop_unfinished(a);
            let change = Change {
                events: vec![event(
                    "deadline",
                    format!(
                        "ran past its max duration of {}; stopping its tasks",
                        format_duration_secs(max_secs)
                    ),
                )],
                ..Default::default()
            };
            self.apply(key, &change);
            self.evaluate(key);
        }
    }

    // ----- what the API shows ---------------------------------------------

    fn publish(&self) {
        let node = &self.cfg.discovered.node;
        let mut gpu_jobs = HashMap::new();
        let (mut cpus, mut mem) = (0u64, 0u64);
        for a in self.active.values() {
            for s in &a.slots {
                for g in &s.placed.gpus {
                    gpu_jobs.insert(*g, a.job.id.to_string());
                }
                cpus += u64::from(s.placed.cpus);
                mem += s.placed.memory_mb;
            }
        }
        let cg = &self.cfg.discovered.cgroups;
        let limits = match (&cg.note, cg.version) {
            (Some(note), _) => format!("not enforced: {note}"),
            (None, Some(v)) => format!("enforced with cgroup v{v}"),
            (None, None) => "not enforced: no usable cgroups".into(),
        };
        let view = ClusterView {
            nodes: vec![NodeView {
                node: node.clone(),
                gpu_source: format!("{:?}", self.cfg.discovered.gpu_source),
                gpu_jobs,
                cpus_allocated: cpus,
                memory_mb_allocated: mem,
                limits,
                controllers: cg.controllers.clone(),
                pids_limit: match (&cg.pids_root, cg.version) {
                    (Some(_), Some(v)) => format!(
                        "enforced with cgroup v{v}: {} processes per task unless the job says `pids`",
                        kiln_engine::local::cgroup::DEFAULT_PIDS_MAX
                    ),
                    _ => "not enforced: no writable pids controller".into(),
                },
                isolation: self.cfg.identities.view(),
                notes: self.cfg.discovered.notes.clone(),
            }],
            waiting: self.waiting.len(),
            running: self.active.len(),
        };
        if let Ok(mut c) = self.cluster.write() {
            *c = view;
        }
    }
}

/// The GPUs placed for one task.
fn placed_gpus(placed: &[Placed], ids: &[TaskId], id: &TaskId) -> Vec<u32> {
    ids.iter()
        .position(|i| i == id)
        .and_then(|i| placed.get(i))
        .map(|p| p.gpus.clone())
        .unwrap_or_default()
}

fn is_debug(spec: &JobSpec) -> bool {
    spec.job_envs.get("isDebug").is_some_and(|v| match v {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    })
}

fn stop_unfinished(a: &Active) {
    for s in &a.slots {
        if s.rec.state.is_finished() {
            continue;
        }
        if let Some(sup) = &s.sup {
            if let Err(e) = sup.request_stop() {
                warn!(task = %s.rec.task, error = %e, "cannot signal a supervisor");
            }
        }
    }
}

/// One small thread per supervisor, blocked on its pidfd until it exits.
fn watch(tx: Sender<Msg>, sup: Arc<Supervisor>, key: i64, attempt: u32, slot: usize, gen: u32) {
    let spawned = std::thread::Builder::new()
        .name(format!("kiln-watch-{}", sup.pid()))
        .stack_size(64 * 1024)
        .spawn(move || {
            sup.wait();
            let _ = tx.send(Msg::TaskExited {
                key,
                attempt,
                slot,
                gen,
            });
        });
    if let Err(e) = spawned {
        error!(error = %e, "cannot start a watcher thread");
    }
}

/// Empties a finished task's scratch folder (its /tmp) and keeps the folder
/// itself with the task's logs. Most tasks leave it empty, and then nothing
/// is removed: no thread, and no freed inode, which ext4 without a journal
/// refuses to reuse for a minute or more and scans past on every later file
/// creation, so a freed folder per job made each next job's files slower.
/// A full one is emptied on a thread of its own: a big scratch folder must
/// not hold up the loop.
fn empty_scratch(tmp: PathBuf) {
    if !scratch_to_clear(&tmp) {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("kiln-cleanup".into())
        .spawn(move || clear_scratch(&tmp));
}

/// Whether `tmp` is a real folder with something in it. A task without a
/// sandbox may have replaced its scratch folder with a link to a folder of
/// its own choosing (`ln -s /big/scratch $TMPDIR`): only the link goes, and
/// nothing it points to is touched.
fn scratch_to_clear(tmp: &std::path::Path) -> bool {
    match std::fs::symlink_metadata(tmp) {
        Ok(m) if m.file_type().is_symlink() => {
            let _ = std::fs::remove_file(tmp);
            false
        }
        Ok(m) if m.is_dir() => std::fs::read_dir(tmp).is_ok_and(|mut d| d.next().is_some()),
        _ => false,
    }
}

/// Removes what is in the scratch folder; links in it are removed as links
/// (`remove_dir_all` does not follow them either).
fn clear_scratch(tmp: &std::path::Path) {
    // Looked at again: it may have changed since the check on the loop.
    if !std::fs::symlink_metadata(tmp).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let res = if is_dir {
            std::fs::remove_dir_all(e.path())
        } else {
            std::fs::remove_file(e.path())
        };
        if let Err(err) = res {
            warn!(path = %e.path().display(), error = %err, "cannot clear a task's scratch folder");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_folder_is_emptied_and_a_link_in_its_place_only_unlinked() {
        let d = tempfile::tempdir().expect("tmp");
        let outside = d.path().join("shared-scratch");
        std::fs::create_dir_all(outside.join("keep")).expect("mkdir");
        std::fs::write(outside.join("data.bin"), b"x").expect("write");

        // A real folder with files, a subfolder and a link to the outside.
        let tmp = d.path().join("task/tmp");
        std::fs::create_dir_all(tmp.join("sub")).expect("mkdir");
        std::fs::write(tmp.join("sub/a.txt"), b"a").expect("write");
        std::os::unix::fs::symlink(&outside, tmp.join("link")).expect("symlink");
        assert!(scratch_to_clear(&tmp));
        clear_scratch(&tmp);
        assert!(tmp.is_dir());
        assert_eq!(std::fs::read_dir(&tmp).expect("read").count(), 0);
        assert!(outside.join("data.bin").exists() && outside.join("keep").is_dir());

        // Empty: nothing to do.
        assert!(!scratch_to_clear(&tmp));

        // The folder itself replaced by a link: the link goes, the target stays.
        std::fs::remove_dir(&tmp).expect("rmdir");
        std::os::unix::fs::symlink(&outside, &tmp).expect("symlink");
        assert!(!scratch_to_clear(&tmp));
        assert!(std::fs::symlink_metadata(&tmp).is_err());
        clear_scratch(&tmp);
        assert!(outside.join("data.bin").exists() && outside.join("keep").is_dir());
    }
}
