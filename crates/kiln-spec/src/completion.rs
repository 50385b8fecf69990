//! The completion policy (OpenPAI / FrameworkController semantics): given the
//! tasks of an attempt, decide whether the attempt goes on, succeeded, failed
//! or was stopped, and which tasks to stop or restart. The engine calls
//! [`decide`] after every task exit and acts on the answer.

use serde::{Deserialize, Serialize};

use crate::ids::TaskId;
use crate::model::{JobSpec, RestartPolicy};

/// States of a job (DESIGN.md): a WAITING job always has a pending reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Waiting,
    Running,
    Stopping,
    Succeeded,
    Failed,
    Stopped,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Waiting,
        JobState::Running,
        JobState::Stopping,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Stopped,
    ];

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Stopped
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "WAITING",
            JobState::Running => "RUNNING",
            JobState::Stopping => "STOPPING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Stopped => "STOPPED",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    Waiting,
    Running,
    Succeeded,
    Failed,
    Stopped,
}

impl TaskState {
    pub const ALL: [TaskState; 5] = [
        TaskState::Waiting,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "WAITING",
            TaskState::Running => "RUNNING",
            TaskState::Succeeded => "SUCCEEDED",
            TaskState::Failed => "FAILED",
            TaskState::Stopped => "STOPPED",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Stopped
        )
    }
}

/// What the engine knows of one task of the current attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    pub task: TaskId,
    pub state: TaskState,
    pub exit_code: Option<i32>,
    /// Set when the process was killed by a signal.
    pub signal: Option<i32>,
    /// In-place restarts of this task so far in this attempt.
    pub restarts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AttemptState {
    Running,
    Succeeded,
    Failed,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: AttemptState,
    /// Why the attempt ended, for events and the UI.
    pub reason: Option<String>,
    /// Tasks still waiting or running that must be stopped now.
    pub stop: Vec<TaskId>,
    /// Failed tasks to start again in place (their role's restart policy).
    pub restart: Vec<TaskId>,
}

/// A failure worth restarting under `policy`: Kubeflow's ExitCode policy
/// treats signals and codes 128-255 as transient, 1-127 as the program's own.
fn restartable(policy: RestartPolicy, t: &TaskStatus) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => true,
        RestartPolicy::ExitCode => {
            t.signal.is_some() || t.exit_code.is_some_and(|c| (128..=255).contains(&c))
        }
    }
}

fn ended(state: AttemptState, reason: String, tasks: &[TaskStatus]) -> Decision {
    Decision {
        state,
        reason: Some(reason),
        stop: tasks
            .iter()
            .filter(|t| !t.state.is_finished())
            .map(|t| t.task.clone())
            .collect(),
        restart: Vec::new(),
    }
}

/// Applies, in order: a stop request; per role, `minFailed` failed tasks fail
/// the attempt; per role, `minSucceeded` succeeded tasks succeed it; once every
/// task has finished, the attempt succeeds.
pub fn decide(job: &JobSpec, tasks: &[TaskStatus], stop_requested: bool) -> Decision {
    if stop_requested {
        return ended(AttemptState::Stopped, "stop requested".into(), tasks);
    }

    // Failures that the restart policy absorbs, while the budget lasts.
    let mut budget = job
        .max_restarts
        .map(|max| max.saturating_sub(tasks.iter().map(|t| t.restarts).sum::<u32>()));
    let mut restart = Vec::new();
    for t in tasks.iter().filter(|t| t.state == TaskState::Failed) {
        let Some(role) = job.role(t.task.role()) else {
            continue;
        };
        if restartable(role.restart_policy, t) && budget != Some(0) {
            budget = budget.map(|b| b - 1);
            restart.push(t.task.clone());
        }
    }
    let counted_failed =
        |t: &&TaskStatus| t.state == TaskState::Failed && !restart.contains(&t.task);

    for role in &job.roles {
        let of_role = || tasks.iter().filter(|t| t.task.role() == role.name);
        let failed = of_role().filter(counted_failed).count();
        if let Some(min) = role.min_failed {
            if failed >= min as usize {
                let first = of_role()
                    .find(counted_failed)
                    .map(describe_exit)
                    .unwrap_or_default();
                return ended(
                    AttemptState::Failed,
                    format!(
                        "{failed} of {} of role {} failed (minFailed {min}); {first}",
                        crate::words::count(role.replicas, "task"),
                        role.name
                    ),
                    tasks,
                );
            }
        }
    }
    for role in &job.roles {
        let succeeded = tasks
            .iter()
            .filter(|t| t.task.role() == role.name && t.state == TaskState::Succeeded)
            .count();
        if let Some(min) = role.min_succeeded {
            if succeeded >= min as usize {
                return ended(
                    AttemptState::Succeeded,
                    format!(
                        "{succeeded} of {} of role {} succeeded (minSucceeded {min})",
                        crate::words::count(role.replicas, "task"),
                        role.name
                    ),
                    tasks,
                );
            }
        }
    }
    let all_finished =
        !tasks.is_empty() && restart.is_empty() && tasks.iter().all(|t| t.state.is_finished());
    if all_finished {
        return ended(AttemptState::Succeeded, "all tasks finished".into(), tasks);
    }
    Decision {
        state: AttemptState::Running,
        reason: None,
        stop: Vec::new(),
        restart,
    }
}

fn describe_exit(t: &TaskStatus) -> String {
    match (t.signal, t.exit_code) {
        (Some(sig), _) => format!("{} was killed by signal {sig}", t.task),
        (None, Some(code)) => format!("{} exited with code {code}", t.task),
        (None, None) => format!("{} failed", t.task),
    }
}

/// Whether a failed attempt gets another one: the job runs at most
/// `retryCount + 1` attempts that failed through the user's code.
/// `failed_attempts` counts those, including the one that just failed;
/// failures of the platform itself are not counted by the caller.
pub fn should_retry(job: &JobSpec, failed_attempts: u32) -> bool {
    failed_attempts <= job.retry_count
}
