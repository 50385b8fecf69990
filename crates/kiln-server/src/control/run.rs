//! The loop itself: state in memory, one handler per message, one store
//! transaction per handled message and job. What runs tasks is the
//! [`Engine`] the loop was started with; this module and its children never
//! name one (docs/engines.md).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use indexmap::IndexMap;
use kiln_engine::engine::{
    AttemptRef, Engine, EngineEvent, EngineInfo, EventSink, KnownTask, Placement, TaskRef,
};
use kiln_sched::{JobRequest, Placed, RunningJob};
use kiln_spec::completion::{decide, AttemptState, JobState, TaskState, TaskStatus};
use kiln_spec::quantity::format_duration_secs;
use kiln_spec::{JobSpec, TaskId};
use kiln_store::{Change, JobPatch, JobRecord, NewEvent, Store, TaskRecord};
use tracing::{error, info, warn};

use super::backoff::Backoff;
use super::policy::{after_attempt, describe_end, task_end, task_lost, Next, Outcome, TaskEnd};
use super::{ClusterView, Control, ControlError, DeadlineChange, Msg, NodeView, Pending};
use crate::layout::Layout;
use crate::now_ms;

/// What the loop needs besides its engine.
pub struct ControlConfig {
    pub layout: Layout,
    /// Where scheduling pass times go (Prometheus).
    pub schedule_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
    /// Who each user's tasks run as.
    pub identities: Arc<crate::identity::Identities>,
    /// How long restarts in place wait (DESIGN: 10 s doubling to 5 min).
    pub restart_backoff: Backoff,
    /// Fair share forgets usage with this half-life (Slurm's
    /// PriorityDecayHalfLife; 7 days by default).
    pub fair_share_half_life_secs: u64,
    /// Test-only (env `KILN_TEST_PASS_DELAY_MS`, read once at start): the
    /// scheduler thread sleeps this long before each pass, so a test can
    /// show the loop answering while a long pass runs. None in production.
    pub test_pass_delay: Option<Duration>,
}

/// Restarts in place: back-off, one event line (issue 16).
#[path = "restarts.rs"]
mod restarts;

/// Rebuilding memory from the store after a restart of kiln.
#[path = "recovery.rs"]
mod recovery;

/// Submissions, scheduling and the hold → render → launch handshake.
#[path = "start.rs"]
mod start;

/// Task exits, the completion policy and the end of attempts.
#[path = "exits.rs"]
mod exits;

/// Whose credentials pull a task's image.
#[path = "images.rs"]
mod images;
pub use images::auth_file_in_space;

/// The scheduling pass on its own thread, over a snapshot.
#[path = "pass.rs"]
pub(super) mod pass;

/// Stop requests and max durations.
#[path = "stop.rs"]
mod stop;

/// What the API shows of the nodes.
#[path = "view.rs"]
mod view;

/// Queues, fair share and preemption.
#[path = "share.rs"]
mod share;
pub use share::QueuesLive;

/// The loop against a fake engine that places (docs/engines.md section 5).
#[cfg(test)]
#[path = "engine_tests.rs"]
mod engine_tests;

struct Waiting {
    job: JobRecord,
    spec: Arc<JobSpec>,
    request: JobRequest,
    /// The pass that starts it starts it ahead of a blocked job without a
    /// promise: jobs of higher standing may preempt it.
    opportunistic: bool,
    /// Handed to an engine that places ([`Placement::Engine`]): its
    /// allocation comes as an event.
    submitted: bool,
}

struct Slot {
    rec: TaskRecord,
    placed: Placed,
    gen: u32,
    /// Set once it ended as a failure of the platform.
    platform_failure: Option<String>,
    /// How its last run ended, in a few words, while it waits to restart.
    last_exit: Option<String>,
}

struct Active {
    job: JobRecord,
    spec: Arc<JobSpec>,
    slots: Vec<Slot>,
    /// Once decided, the attempt ends as this when its last task is gone.
    ending: Option<Outcome>,
}

impl Active {
    fn attempt(&self) -> AttemptRef {
        AttemptRef {
            key: self.job.key,
            attempt: self.job.attempt,
        }
    }

    fn task_ref(&self, i: usize) -> Option<TaskRef> {
        self.slots.get(i).map(|s| TaskRef {
            attempt: self.attempt(),
            task: s.rec.task.clone(),
            gen: s.gen,
        })
    }

    /// The current runs of the tasks that have not finished.
    fn unfinished(&self) -> Vec<TaskRef> {
        (0..self.slots.len())
            .filter(|&i| !self.slots[i].rec.state.is_finished())
            .filter_map(|i| self.task_ref(i))
            .collect()
    }
}

struct Loop {
    store: Arc<dyn Store>,
    cfg: ControlConfig,
    engine: Box<dyn Engine>,
    info: EngineInfo,
    waiting: BTreeMap<i64, Waiting>,
    active: HashMap<i64, Active>,
    reasons: Arc<RwLock<HashMap<i64, Pending>>>,
    cluster: Arc<RwLock<ClusterView>>,
    /// Something changed that may let a waiting job start.
    dirty: bool,
    /// A job waits for a port held outside kiln (no event says when it is
    /// let go), or a store write failed: the loop looks again after a while.
    recheck_at: Option<u64>,
    /// Jobs to come back to after a store failure.
    retry_later: std::collections::BTreeSet<i64>,
    /// Each user's fair-share usage as recorded: (value, when).
    usage: HashMap<String, (f64, u64)>,
    /// The admin's queues, read once and again after the API changes them
    /// (`Msg::QueuesChanged`), not on every pass.
    queues: Option<Vec<kiln_sched::Queue>>,
    queues_live: Arc<RwLock<QueuesLive>>,
    /// The scheduler thread and the pass in flight, if any.
    passes: pass::Passes,
    /// Jobs let wait for others' opportunistic jobs to finish, and until
    /// when (`Plan::draining_after`), kept from plan to plan.
    draining: HashMap<u64, u64>,
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
/// and from what the engine finds again. `engine` builds the engine with
/// the sink that brings its events to the loop.
pub fn start(
    store: Arc<dyn Store>,
    cfg: ControlConfig,
    engine: impl FnOnce(EventSink) -> Box<dyn Engine>,
) -> Result<Control, ControlError> {
    let (tx, rx) = mpsc::channel();
    let events_tx = tx.clone();
    let sink: EventSink = Arc::new(move |ev| {
        let _ = events_tx.send(Msg::Engine(ev));
    });
    let mut lp = Loop::new(store, cfg, engine(sink), tx.clone());
    lp.recover()?;
    // The first pass over what was recovered goes the usual way, from the
    // loop's first turn: a long queue does not hold up the server's start,
    // and there is one way passes run.
    lp.publish();
    let (reasons, cluster, queues) = (
        Arc::clone(&lp.reasons),
        Arc::clone(&lp.cluster),
        Arc::clone(&lp.queues_live),
    );
    std::thread::Builder::new()
        .name("kiln-control".into())
        .spawn(move || lp.run(rx))
        .map_err(|e| ControlError::Internal(format!("cannot start the control loop: {e}")))?;
    Ok(Control {
        tx,
        reasons,
        cluster,
        queues,
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
        user: job.id.user().to_string(),
        preemptible: spec.preemptible.unwrap_or(true),
    }
}

impl Loop {
    fn new(
        store: Arc<dyn Store>,
        cfg: ControlConfig,
        engine: Box<dyn Engine>,
        tx: mpsc::Sender<Msg>,
    ) -> Self {
        let passes = pass::Passes::new(tx, cfg.test_pass_delay, cfg.schedule_seconds.clone());
        Loop {
            passes,
            store,
            cfg,
            info: engine.info(),
            engine,
            waiting: BTreeMap::new(),
            active: HashMap::new(),
            reasons: Arc::new(RwLock::new(HashMap::new())),
            cluster: Arc::new(RwLock::new(ClusterView::default())),
            dirty: true,
            recheck_at: None,
            draining: HashMap::new(),
            retry_later: std::collections::BTreeSet::new(),
            usage: HashMap::new(),
            queues: None,
            queues_live: Arc::new(RwLock::new(QueuesLive::default())),
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            self.tick();
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
        }
    }

    /// After each batch of messages (and once at the start): deadlines,
    /// restarts, rechecks, and a scheduling pass should something have
    /// changed and none be in flight. The pass runs on the scheduler
    /// thread (pass.rs); its plan comes back as a message.
    fn tick(&mut self) {
        self.fire_deadlines();
        self.fire_restarts();
        if self.recheck_at.is_some_and(|at| at <= now_ms()) {
            self.recheck_at = None;
            self.dirty = true;
            self.retry_pending();
        }
        self.passes.watch();
        if self.dirty {
            self.schedule();
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
            Msg::Engine(ev) => self.on_engine(ev),
            Msg::Note { key, kind, message } => {
                if self.active.contains_key(&key) {
                    let change = Change {
                        events: vec![event(kind, message)],
                        ..Default::default()
                    };
                    self.apply(key, &change);
                }
            }
            Msg::QueuesChanged => {
                self.queues = None;
                self.dirty = true;
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
            Msg::Planned(p) => self.on_planned(*p),
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

    /// The slot of a task's current run, if `t` is it.
    fn slot_of(&self, t: &TaskRef) -> Option<usize> {
        let a = self.active.get(&t.attempt.key)?;
        if a.job.attempt != t.attempt.attempt {
            return None;
        }
        let i = a.slots.iter().position(|s| s.rec.task == t.task)?;
        (a.slots[i].gen == t.gen).then_some(i)
    }

    /// Asks the engine to stop the job's unfinished tasks.
    fn stop_unfinished(&mut self, key: i64) {
        if let Some(a) = self.active.get(&key) {
            let tasks = a.unfinished();
            self.engine.stop(&tasks);
        }
    }
}

fn is_debug(spec: &JobSpec) -> bool {
    spec.job_envs.get("isDebug").is_some_and(|v| match v {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    })
}
