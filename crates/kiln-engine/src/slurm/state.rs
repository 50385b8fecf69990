//! Slurm's job states in kiln's terms. The engine only needs to know whether a job
//! still waits, holds its allocation, or has ended and how; exits themselves come
//! from the task folders (docs/engines.md 3.5). As in HyperQueue, a state this build
//! does not know is an error rather than a guess: guessing "ended" would lose tasks,
//! guessing "running" would wait forever.

use serde::{Deserialize, Serialize};

use crate::engine::ExitCause;
use crate::EngineError;

/// How a Slurm job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EndKind {
    Completed,
    Cancelled,
    Failed,
    Timeout,
    Preempted,
    NodeFail,
    BootFail,
    OutOfMemory,
    Deadline,
}

impl EndKind {
    /// Slurm's own word, for messages: "its Slurm job 4711 ended (FAILED)".
    pub fn slurm_word(self) -> &'static str {
        match self {
            EndKind::Completed => "COMPLETED",
            EndKind::Cancelled => "CANCELLED",
            EndKind::Failed => "FAILED",
            EndKind::Timeout => "TIMEOUT",
            EndKind::Preempted => "PREEMPTED",
            EndKind::NodeFail => "NODE_FAIL",
            EndKind::BootFail => "BOOT_FAIL",
            EndKind::OutOfMemory => "OUT_OF_MEMORY",
            EndKind::Deadline => "DEADLINE",
        }
    }

    /// Ends where the platform failed, not the user's program: kiln retries these
    /// without using the job's retryCount.
    pub fn is_platform_failure(self) -> bool {
        matches!(self, EndKind::NodeFail | EndKind::BootFail)
    }
}

/// What kiln makes of a Slurm job state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobView {
    /// In the queue: no allocation yet, or put back into it.
    Pending,
    /// Holds its allocation: configuring, running, suspended or completing. Steps
    /// may still write their exit files.
    Running,
    /// Gone from the nodes.
    Ended(EndKind),
}

/// Maps a job's state words (22.05 prints one, 23.02 and later a list of the base
/// state and its flags) to kiln's view. A flag that means the job still holds nodes
/// (`COMPLETING`, `CONFIGURING`) wins over the base state, so a job is not called
/// ended while its steps may still write files.
pub fn job_view(job: &str, states: &[String]) -> Result<JobView, EngineError> {
    let unknown = |state: &str| EngineError::SlurmUnknownState {
        job: job.to_string(),
        state: state.to_string(),
    };
    let mut base = None;
    let mut holds_nodes = false;
    let mut requeued = false;
    for s in states {
        match s.to_ascii_uppercase().as_str() {
            "COMPLETING" | "CONFIGURING" | "SIGNALING" | "STAGE_OUT" | "RESIZING" => {
                holds_nodes = true
            }
            "REQUEUED" | "REQUEUE_FED" | "REQUEUE_HOLD" | "RESV_DEL_HOLD" | "SPECIAL_EXIT" => {
                requeued = true
            }
            // Flags that say nothing about where the job stands.
            "LAUNCH_FAILED" | "UPDATE_DB" | "POWER_UP_NODE" | "RECONFIG_FAIL" => {}
            "PENDING" => base = Some(JobView::Pending),
            "RUNNING" | "SUSPENDED" | "STOPPED" => base = Some(JobView::Running),
            other => base = Some(JobView::Ended(end_kind(other).ok_or_else(|| unknown(s))?)),
        }
    }
    if holds_nodes {
        return Ok(JobView::Running);
    }
    if requeued {
        return Ok(JobView::Pending);
    }
    base.ok_or_else(|| unknown(&states.join(",")))
}

/// How a launched task ended when it left no exit record and its Slurm job
/// is over: from how the job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnrecordedEnd {
    /// An end with a known cause: Slurm's time limit, its memory limit.
    Exited(ExitCause),
    /// A platform failure, retried without using up retryCount.
    Lost(String),
}

/// Maps the end of a task's Slurm job (Slurm's word, or kiln's "gone from
/// squeue") for a task that recorded no exit: TIMEOUT and DEADLINE are the
/// time limit, OUT_OF_MEMORY is OOMKilled, node failures and preemption are
/// the platform's, said plainly; the rest is a lost task naming the state.
pub fn unrecorded_end(job: u64, word: &str) -> UnrecordedEnd {
    use UnrecordedEnd::{Exited, Lost};
    match end_kind(word) {
        Some(EndKind::Timeout | EndKind::Deadline) => Exited(ExitCause::TimeLimit),
        Some(EndKind::OutOfMemory) => Exited(ExitCause::OomKilled),
        Some(EndKind::NodeFail) => Lost(format!(
            "its node failed: Slurm job {job} ended NODE_FAIL before the task recorded how it ended"
        )),
        Some(EndKind::BootFail) => Lost(format!(
            "its node failed to boot: Slurm job {job} ended BOOT_FAIL"
        )),
        Some(EndKind::Preempted) => Lost(format!(
            "Slurm preempted its job {job} (PREEMPTED) for another job"
        )),
        _ => Lost(format!(
            "its Slurm job {job} ended ({word}) without recording how the task ended"
        )),
    }
}

fn end_kind(state: &str) -> Option<EndKind> {
    Some(match state {
        "COMPLETED" => EndKind::Completed,
        "CANCELLED" => EndKind::Cancelled,
        "FAILED" => EndKind::Failed,
        "TIMEOUT" => EndKind::Timeout,
        "PREEMPTED" => EndKind::Preempted,
        "NODE_FAIL" => EndKind::NodeFail,
        "BOOT_FAIL" => EndKind::BootFail,
        "OUT_OF_MEMORY" => EndKind::OutOfMemory,
        "DEADLINE" => EndKind::Deadline,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(states: &[&str]) -> Result<JobView, EngineError> {
        let states: Vec<String> = states.iter().map(|s| s.to_string()).collect();
        job_view("7", &states)
    }

    #[test]
    fn maps_every_state_kiln_acts_on() {
        use EndKind::*;
        use JobView::*;
        let cases: &[(&[&str], JobView)] = &[
            (&["PENDING"], Pending),
            (&["CONFIGURING"], Running),
            (&["RUNNING"], Running),
            (&["COMPLETING"], Running),
            (&["SUSPENDED"], Running),
            (&["COMPLETED"], Ended(Completed)),
            (&["CANCELLED"], Ended(Cancelled)),
            (&["FAILED"], Ended(Failed)),
            (&["TIMEOUT"], Ended(Timeout)),
            (&["PREEMPTED"], Ended(Preempted)),
            (&["NODE_FAIL"], Ended(NodeFail)),
            (&["BOOT_FAIL"], Ended(BootFail)),
            (&["OUT_OF_MEMORY"], Ended(OutOfMemory)),
            (&["DEADLINE"], Ended(Deadline)),
            // 23.02 and later: the base state and its flags.
            (&["RUNNING", "CONFIGURING"], Running),
            (&["CANCELLED", "COMPLETING"], Running),
            (&["PENDING", "REQUEUED"], Pending),
            (&["FAILED", "LAUNCH_FAILED"], Ended(Failed)),
            (&["running"], Running),
        ];
        for (states, want) in cases {
            assert_eq!(view(states).unwrap(), *want, "{states:?}");
        }
    }

    #[test]
    fn an_unknown_state_is_an_error_that_names_it() {
        let err = view(&["WIBBLING"]).unwrap_err().to_string();
        assert_eq!(
            err,
            "Slurm job 7 is in state WIBBLING, which kiln does not know"
        );
        assert!(view(&[]).is_err());
    }

    #[test]
    fn a_task_without_an_exit_record_ends_as_its_slurm_job_did() {
        use UnrecordedEnd::*;
        assert_eq!(unrecorded_end(7, "TIMEOUT"), Exited(ExitCause::TimeLimit));
        assert_eq!(unrecorded_end(7, "DEADLINE"), Exited(ExitCause::TimeLimit));
        assert_eq!(
            unrecorded_end(7, "OUT_OF_MEMORY"),
            Exited(ExitCause::OomKilled)
        );
        let lost = |word: &str| match unrecorded_end(7, word) {
            Lost(why) => why,
            other => panic!("{word}: {other:?}"),
        };
        assert_eq!(
            lost("NODE_FAIL"),
            "its node failed: Slurm job 7 ended NODE_FAIL before the task recorded how it ended"
        );
        assert!(lost("BOOT_FAIL").contains("failed to boot"));
        assert!(lost("PREEMPTED").contains("Slurm preempted its job 7"));
        for word in ["COMPLETED", "CANCELLED", "FAILED", "gone from squeue"] {
            assert_eq!(
                lost(word),
                format!("its Slurm job 7 ended ({word}) without recording how the task ended")
            );
        }
    }

    #[test]
    fn platform_failures_are_node_and_boot_failures() {
        assert!(EndKind::NodeFail.is_platform_failure());
        assert!(EndKind::BootFail.is_platform_failure());
        assert!(!EndKind::Failed.is_platform_failure());
        assert_eq!(EndKind::OutOfMemory.slurm_word(), "OUT_OF_MEMORY");
    }
}
