//! The control loop: one thread that owns every running and waiting job in
//! memory, takes messages (a submission, a stop, a task's exit, a deadline),
//! writes each resulting change to the store in one transaction, and starts
//! or stops tasks. The store is the source of truth: on start the loop
//! rebuilds its memory from the store and from the task folders, so a
//! restart at any moment converges without running anything twice.
//!
//! It runs on a plain thread rather than the async runtime because every
//! step is a short blocking call (SQLite, fork/exec, small files) and one
//! owner of the state needs no locks.
//! The one step that can take long, a scheduling pass over a long queue,
//! runs beside it on the `kiln-sched` thread, over a snapshot (pass.rs).

pub mod backoff;
mod policy;
mod run;

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};

use kiln_sched::Node;
use kiln_store::JobRecord;
use serde::Serialize;

pub use run::{auth_file_in_space, start, ControlConfig, QueuesLive};

/// Why a job waits: the scheduler's reason as data, or a launch failure
/// in words. Kept as data and put into words only when someone asks, so a
/// pass over a long queue formats nothing.
#[derive(Debug, Clone)]
pub enum Pending {
    Plan(kiln_sched::Reason),
    Text(String),
}

impl Pending {
    pub fn text(&self) -> String {
        match self {
            Pending::Plan(r) => r.to_string(),
            Pending::Text(t) => t.clone(),
        }
    }

    pub fn detail(&self) -> Option<&kiln_sched::Reason> {
        match self {
            Pending::Plan(r) => Some(r),
            Pending::Text(_) => None,
        }
    }
}

/// Why the loop refused a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the control loop has stopped")]
    Gone,
}

pub type Reply = tokio::sync::oneshot::Sender<Result<JobRecord, ControlError>>;

/// How a deadline changes.
#[derive(Debug, Clone, Copy)]
pub enum DeadlineChange {
    /// Adds to the job's max duration (`kiln extend JOB 1h`).
    ExtendBy(u64),
    /// Sets the max duration, counted from the attempt's start.
    Total(u64),
}

pub(crate) enum Msg {
    Submitted(i64),
    Stop {
        key: i64,
        by: String,
        reply: Reply,
    },
    Deadline {
        key: i64,
        by: String,
        change: DeadlineChange,
        reply: Reply,
    },
    /// What the engine reports (a task's exit, an allocation, ...).
    Engine(kiln_engine::engine::EngineEvent),
    /// An event from outside the loop (the sampler's idle-GPU notice),
    /// recorded in order with the job's own.
    Note {
        key: i64,
        kind: &'static str,
        message: String,
    },
    Release {
        key: i64,
        attempt: u32,
        by: String,
    },
    /// A scheduling pass came back from the scheduler thread.
    Planned(Box<run::pass::Planned>),
    /// The admin changed the queues: the loop reads them again.
    QueuesChanged,
    Shutdown,
}

/// What the API shows of the machine: the node, and who holds each GPU.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    pub waiting: usize,
    pub running: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    #[serde(flatten)]
    pub node: Node,
    /// GPU index → the job holding it.
    pub gpu_jobs: HashMap<u32, String>,
    pub cpus_allocated: u64,
    pub memory_mb_allocated: u64,
    /// How tasks of different users are kept apart here.
    pub isolation: crate::identity::IsolationView,
    /// The engine's own words about the node (GPU source, limits and
    /// controllers, the pids limit, notes).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The API's handle on the loop.
#[derive(Clone)]
pub struct Control {
    tx: mpsc::Sender<Msg>,
    reasons: Arc<RwLock<HashMap<i64, Pending>>>,
    cluster: Arc<RwLock<ClusterView>>,
    queues: Arc<RwLock<run::QueuesLive>>,
}

impl Control {
    /// Queues' use, users' fair-share usage and the waiting order, as of
    /// the last scheduling pass.
    pub fn queues_live(&self) -> run::QueuesLive {
        self.queues.read().map(|q| q.clone()).unwrap_or_default()
    }

    pub fn submitted(&self, key: i64) {
        let _ = self.tx.send(Msg::Submitted(key));
    }

    /// Says the queues changed, so the next pass reads them again instead
    /// of the ones the loop keeps.
    pub fn queues_changed(&self) {
        let _ = self.tx.send(Msg::QueuesChanged);
    }

    /// Records an event on a job, without waiting.
    pub fn note(&self, key: i64, kind: &'static str, message: String) {
        let _ = self.tx.send(Msg::Note { key, kind, message });
    }

    /// Asks the loop to stop a job's attempt `attempt`, without waiting
    /// (the sampler's idle-GPU release). Nothing happens should that
    /// attempt have ended meanwhile: its retry is not the one found idle.
    pub fn release(&self, key: i64, attempt: u32, by: &str) {
        let _ = self.tx.send(Msg::Release {
            key,
            attempt,
            by: by.to_owned(),
        });
    }

    pub async fn stop(&self, key: i64, by: &str) -> Result<JobRecord, ControlError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Msg::Stop {
                key,
                by: by.to_owned(),
                reply,
            })
            .map_err(|_| ControlError::Gone)?;
        rx.await.map_err(|_| ControlError::Gone)?
    }

    pub async fn change_deadline(
        &self,
        key: i64,
        by: &str,
        change: DeadlineChange,
    ) -> Result<JobRecord, ControlError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Msg::Deadline {
                key,
                by: by.to_owned(),
                change,
                reply,
            })
            .map_err(|_| ControlError::Gone)?;
        rx.await.map_err(|_| ControlError::Gone)?
    }

    /// Why a waiting job waits, as of the last scheduling pass.
    pub fn pending_reason(&self, key: i64) -> Option<Pending> {
        self.reasons.read().ok()?.get(&key).cloned()
    }

    pub fn cluster(&self) -> ClusterView {
        self.cluster.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Stops the loop; running tasks keep running under their supervisors.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Shutdown);
    }
}
