//! The JSON shapes of the API (camelCase, as DESIGN.md fixes them). The CLI's
//! `-o json` prints these same objects.

use std::collections::BTreeMap;

use kiln_store::{Event, JobRecord, TaskRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// `user~name`.
    pub id: String,
    pub name: String,
    pub user: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    /// The same reason as data, for showing it in another language:
    /// `{code, ...}` with code taskTooBig, jobTooBig, short (with
    /// `missing: [{resource: gpus|cpus|memory, ...}]`), scattered,
    /// behindHead, wouldDelay, userLimit, overQuota or preempting, and
    /// `ahead`, `queue` (and, where the admin made queues, `share`) for
    /// those that wait their turn (docs/scheduling.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub pending_detail: Option<kiln_sched::Reason>,
    /// Why it ended (or why the last attempt was retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempt: u32,
    pub failed_attempts: u32,
    pub queue: String,
    pub priority: i32,
    /// GPUs it asks for, all its tasks together.
    pub total_gpus: u64,
    /// The format it was submitted in.
    pub format: String,
    pub submitted_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// When its max duration runs out, while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_at_ms: Option<u64>,
    pub stop_requested: bool,
    /// The current attempt started on idle resources ahead of a job that
    /// waits for more: a job of higher standing may preempt it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub opportunistic: bool,
    /// The job that preempted the last attempt (set while it stops and
    /// through the next attempt, which sees `KILN_PREEMPTED=1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempted_by: Option<String>,
    /// Attempts ended by preemption; they do not count against retryCount.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub preemptions: u32,
    pub tasks: Vec<TaskView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventView>>,
    /// What needs the owner's attention while it runs (GPUs held but
    /// idle). Not `warnings`: the answer to a submission uses that name
    /// for the spec's warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// Earlier attempts (retries), oldest first, with how their tasks ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub attempt: u32,
    pub tasks: Vec<TaskView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// `<role>-<index>`.
    pub id: String,
    pub role: String,
    pub index: u32,
    pub attempt: u32,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub host: String,
    pub gpus: Vec<u32>,
    pub ports: BTreeMap<String, Vec<u16>>,
    pub restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// A task waiting out its back-off (state WAITING, the wait in its
    /// reason) starts again at this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub seq: i64,
    pub at_ms: u64,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobList {
    pub items: Vec<JobView>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

impl TaskView {
    pub fn from_record(t: &TaskRecord) -> Self {
        TaskView {
            id: t.task.to_string(),
            role: t.task.role().to_owned(),
            index: t.task.index(),
            attempt: t.attempt,
            state: t.state.as_str().to_owned(),
            exit_code: t.exit_code,
            signal: t.signal,
            reason: t.reason.clone(),
            host: t.host.clone(),
            gpus: t.gpus.clone(),
            ports: t.ports.clone(),
            restarts: t.restarts,
            started_at_ms: t.started_at_ms,
            finished_at_ms: t.finished_at_ms,
            restart_at_ms: t.restart_at_ms,
        }
    }
}

impl EventView {
    pub fn from_record(e: &Event) -> Self {
        EventView {
            seq: e.seq,
            at_ms: e.at_ms,
            kind: e.kind.clone(),
            message: e.message.clone(),
        }
    }
}

impl JobView {
    pub fn new(
        j: &JobRecord,
        live_reason: Option<crate::control::Pending>,
        tasks: &[TaskRecord],
    ) -> Self {
        let waiting = j.state == kiln_spec::completion::JobState::Waiting;
        let live_reason = live_reason.filter(|_| waiting);
        JobView {
            id: j.id.to_string(),
            name: j.id.name().to_owned(),
            user: j.id.user().to_owned(),
            state: j.state.as_str().to_owned(),
            pending_reason: match &live_reason {
                Some(p) => Some(p.text()),
                None if waiting => j.pending_reason.clone(),
                None => None,
            },
            pending_detail: live_reason.as_ref().and_then(|p| p.detail().cloned()),
            reason: j.reason.clone(),
            attempt: j.attempt,
            failed_attempts: j.failed_attempts,
            queue: j.queue.clone(),
            priority: j.priority,
            total_gpus: total_gpus(&j.spec_json),
            format: j.format.clone(),
            submitted_at_ms: j.submitted_at_ms,
            started_at_ms: j.started_at_ms,
            finished_at_ms: j.finished_at_ms,
            deadline_at_ms: j.deadline_at_ms,
            stop_requested: j.stop_requested,
            opportunistic: j.opportunistic,
            preempted_by: j.preempted_by.clone(),
            preemptions: j.preemptions,
            tasks: tasks.iter().map(TaskView::from_record).collect(),
            events: None,
            notices: Vec::new(),
            attempts: Vec::new(),
        }
    }
}

/// GPUs a stored spec (kiln's own JSON) asks for, read without building the
/// whole spec: the job list shows it for every row.
fn total_gpus(spec_json: &str) -> u64 {
    #[derive(Deserialize)]
    struct Shape {
        #[serde(default)]
        roles: Vec<Role>,
    }
    #[derive(Deserialize)]
    struct Role {
        #[serde(default = "one")]
        replicas: u32,
        #[serde(default)]
        gpus: u32,
    }
    fn one() -> u32 {
        1
    }
    serde_json::from_str::<Shape>(spec_json).map_or(0, |s| {
        s.roles
            .iter()
            .map(|r| u64::from(r.replicas) * u64::from(r.gpus))
            .sum()
    })
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod gpu_tests {
    #[test]
    fn totals_agree_with_the_spec() {
        let text = "name: ddp\nroles:\n  - {name: master, gpus: 2, command: x}\n  - {name: worker, replicas: 3, gpus: 4, command: x}\n";
        let parsed = kiln_spec::parse(text.as_bytes()).expect("parsed");
        let json = kiln_spec::export::to_json(&parsed.job).expect("json");
        assert_eq!(super::total_gpus(&json), parsed.job.total_gpus());
        assert_eq!(super::total_gpus(&json), 14);
        assert_eq!(super::total_gpus("not json"), 0);
    }
}
