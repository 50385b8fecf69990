//! The rows of the store as plain data.

use std::collections::BTreeMap;

use kiln_spec::completion::{JobState, TaskState};
use kiln_spec::{JobId, TaskId};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub id: JobId,
    /// The canonical job in kiln's JSON (export::to_json).
    pub spec_json: String,
    /// The format it was submitted in.
    pub format: String,
    pub queue: String,
    pub priority: i32,
    pub pending_reason: String,
    pub submitted_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// Row key: stable, ordered by submission.
    pub key: i64,
    pub id: JobId,
    pub state: JobState,
    pub pending_reason: Option<String>,
    /// Why the job is where it is (failed because..., stopped by...).
    pub reason: Option<String>,
    /// The current (or last) attempt, 0-based.
    pub attempt: u32,
    /// Attempts that failed through the user's code (retryCount counts these).
    pub failed_attempts: u32,
    pub queue: String,
    pub priority: i32,
    pub format: String,
    #[serde(skip)]
    pub spec_json: String,
    pub submitted_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// When the max duration runs out (extendable).
    pub deadline_at_ms: Option<u64>,
    pub stop_requested: bool,
    /// The current attempt started ahead of a blocked job without a promise
    /// not to delay it: jobs of higher standing may preempt it.
    pub opportunistic: bool,
    /// The job whose need preempted the last attempt; set while that
    /// attempt stops and through the next (`KILN_PREEMPTED=1`).
    pub preempted_by: Option<String>,
    /// Attempts ended by preemption (they do not count against retryCount).
    pub preemptions: u32,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobPatch {
    pub state: Option<JobState>,
    pub pending_reason: Option<Option<String>>,
    pub reason: Option<Option<String>>,
    pub attempt: Option<u32>,
    pub failed_attempts: Option<u32>,
    pub started_at_ms: Option<Option<u64>>,
    pub finished_at_ms: Option<Option<u64>>,
    pub deadline_at_ms: Option<Option<u64>>,
    pub stop_requested: Option<bool>,
    pub opportunistic: Option<bool>,
    pub preempted_by: Option<Option<String>>,
    pub preemptions: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub attempt: u32,
    pub task: TaskId,
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// e.g. OOMKilled, or a launch error.
    pub reason: Option<String>,
    pub host: String,
    pub gpus: Vec<u32>,
    pub ports: BTreeMap<String, Vec<u16>>,
    pub restarts: u32,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// The task's run folder (logs, exit file).
    pub dir: Option<String>,
    /// A failed task waiting out its back-off starts again at this time.
    /// Kept in the store so a restart of kiln neither forgets the restart
    /// nor starts it early.
    pub restart_at_ms: Option<u64>,
    /// Restarts in a row since the task last ran long enough to reset its
    /// back-off: the doubling goes on from here after a restart of kiln.
    pub restart_streak: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub seq: i64,
    pub at_ms: u64,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub at_ms: u64,
    /// A short word: submitted, placed, started, exited, retried, stopped...
    pub kind: String,
    pub message: String,
    /// Events of a job with the same line are one line of its history:
    /// a new one replaces the last and goes to the end. A task restarted
    /// a thousand times is one line with a count, not a thousand.
    pub line: Option<String>,
}

/// One atomic step of a job's life.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    pub job: JobPatch,
    /// Inserted, or replaced when (attempt, task) exists.
    pub tasks: Vec<TaskRecord>,
    pub events: Vec<NewEvent>,
    /// A user's fair-share usage after this change (decayed to `at_ms`).
    pub usage: Option<Usage>,
}

/// A user's decayed usage (GPU-seconds, see kiln-sched's `fair`) as of a
/// moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub user: String,
    pub value: f64,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFilter {
    pub user: Option<String>,
    pub state: Option<JobState>,
    /// Jobs whose name contains this, ASCII letters in any case.
    pub name: Option<String>,
    pub limit: u32,
    /// Pagination: only jobs with a key below this (the last page's last key).
    pub before_key: Option<i64>,
}

impl Default for JobFilter {
    fn default() -> Self {
        Self {
            user: None,
            state: None,
            name: None,
            limit: 100,
            before_key: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub name: String,
    pub is_admin: bool,
    /// argon2 hash; None for users who only use tokens.
    #[serde(skip)]
    pub password_hash: Option<String>,
    pub created_at_ms: u64,
    /// Who the user's tasks run as on the machine; None until assigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

/// A kiln user's own uid and gid on the machine: the Unix account the admin
/// mapped, or ids kiln allocated from its range and recorded here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// The Unix account these ids are of; None: allocated by kiln.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_user: Option<String>,
}

/// When a token was made and until when it works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenLife {
    pub created_at_ms: u64,
    /// None: until revoked (API tokens); sign-ins from the web UI expire.
    pub expires_at_ms: Option<u64>,
}

impl TokenLife {
    pub fn until_revoked(created_at_ms: u64) -> Self {
        TokenLife {
            created_at_ms,
            expires_at_ms: None,
        }
    }
}

/// Which of a user's tokens to forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    /// Every token: API tokens and sign-ins.
    All,
    /// Only those with an expiry: the sign-ins (e.g. after a password change).
    Expiring,
}

/// A queue the admin made: its guaranteed share, its per-user GPU limit and
/// who besides the admin may submit to it (everyone may use `default`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueRecord {
    pub name: String,
    pub quota: kiln_sched::Quota,
    pub user_max_gpus: Option<u64>,
    /// Users granted this queue, sorted.
    pub users: Vec<String>,
    pub created_at_ms: u64,
}

impl QueueRecord {
    /// The scheduler's view of it (without the users, which only admission
    /// cares about).
    pub fn to_queue(&self) -> kiln_sched::Queue {
        kiln_sched::Queue {
            name: self.name.clone(),
            quota: self.quota.clone(),
            user_max_gpus: self.user_max_gpus,
        }
    }
}

/// A user's credential for a container registry ("ghcr.io",
/// "registry.lab:5000"). `secret` is the password or token: used for the
/// user's pulls, never shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    pub user: String,
    pub registry: String,
    pub username: String,
    pub secret: String,
    pub updated_at_ms: u64,
}
