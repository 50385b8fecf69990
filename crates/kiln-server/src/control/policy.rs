//! The control loop's decisions as pure functions: how a task's end reads,
//! and what a finished attempt means for its job. No I/O, no clock.

use kiln_engine::engine::{ExitCause, TaskExit};
use kiln_spec::completion::{should_retry, JobState, TaskState};
use kiln_spec::quantity::format_duration_secs;
use kiln_spec::{JobSpec, TaskId};

/// Failures of the platform (a task that could not be started, a
/// supervisor that vanished) retried in a row before the job fails anyway:
/// a broken machine must not loop forever.
pub const MAX_PLATFORM_RETRIES: u32 = 3;

/// How one task ended, in the store's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnd {
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// `OOMKilled`, a launch error, ... for people and the UI.
    pub reason: Option<String>,
    /// Not the user's fault: retried without using up `retryCount`.
    pub platform: bool,
}

pub fn task_end(exit: &TaskExit) -> TaskEnd {
    let mut end = TaskEnd {
        state: TaskState::Failed,
        exit_code: exit.exit_code,
        signal: exit.signal,
        reason: None,
        platform: false,
    };
    if let Some(ExitCause::LaunchFailed { message, refused }) = &exit.cause {
        end.reason = Some(format!("LaunchFailed: {message}"));
        // A launch refused for what the user's files hold fails like the
        // user's own code would; kiln's own failures are retried for free.
        end.platform = !refused;
    } else if exit.stop_requested {
        end.state = TaskState::Stopped;
        end.reason = Some("Stopped".into());
    } else if exit.cause == Some(ExitCause::TimeLimit) {
        // The engine's own limit, a backstop past kiln's deadline.
        end.reason = Some("DeadlineExceeded: the engine's time limit ended it".into());
    } else if exit.cause == Some(ExitCause::OomKilled) {
        end.reason = Some("OOMKilled".into());
    } else if exit.cause == Some(ExitCause::PidsLimitReached) && exit.exit_code != Some(0) {
        // A fork that failed for the task's limit on processes is the
        // likeliest cause of the failure, as OOMKilled is for memory.
        end.reason = Some("PidsLimitReached".into());
    } else if exit.exit_code == Some(0) {
        end.state = TaskState::Succeeded;
    } else if let Some(sig) = exit.signal {
        end.reason = Some(format!("killed by signal {sig}"));
    } else if let Some(code) = exit.exit_code {
        end.reason = Some(format!("exit code {code}"));
    }
    end
}

/// A task whose supervisor is gone without a record of how the task ended.
pub fn task_lost(why: &str) -> TaskEnd {
    TaskEnd {
        state: TaskState::Failed,
        exit_code: None,
        signal: None,
        reason: Some(format!("Lost: {why}")),
        platform: true,
    }
}

/// One line for the job's event history.
pub fn describe_end(task: &TaskId, end: &TaskEnd) -> String {
    match (end.state, end.exit_code, end.signal, &end.reason) {
        (TaskState::Succeeded, _, _, _) => format!("{task} exited with code 0"),
        (TaskState::Stopped, _, _, _) => format!("{task} stopped"),
        (_, _, _, Some(r)) if r == "OOMKilled" => {
            format!("{task} was killed for exceeding its memory limit (OOMKilled)")
        }
        // A shell or the sandbox reports its child's death by signal N as
        // exit code 128 + N, as Docker and Kubernetes do: say which signal.
        (_, Some(code), _, _) if (129..=128 + 64).contains(&code) => {
            let sig = code - 128;
            format!(
                "{task} exited with code {code} (128 + signal {sig}{})",
                signal_name(sig)
                    .map(|n| format!(", {n}"))
                    .unwrap_or_default()
            )
        }
        (_, Some(code), _, _) => format!(
            "{task} exited with code {code}{}",
            shell_meaning(code)
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ),
        (_, None, Some(sig), _) => format!(
            "{task} was killed by signal {sig}{}",
            signal_name(sig)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        (_, _, _, Some(r)) => format!("{task} failed: {r}"),
        _ => format!("{task} failed"),
    }
}

/// What bash means by an exit code of its own: the command never ran.
fn shell_meaning(code: i32) -> Option<&'static str> {
    match code {
        126 => Some("not executable"),
        127 => Some("command not found"),
        _ => None,
    }
}

/// A task's end in a few words, after "last exit": `127 (command not
/// found)`, `137 (128 + SIGKILL)`, `signal 9 (SIGKILL)`, `OOMKilled`.
pub fn exit_brief(end: &TaskEnd) -> String {
    if end.reason.as_deref() == Some("OOMKilled") {
        return "OOMKilled".into();
    }
    match (end.exit_code, end.signal, &end.reason) {
        (Some(code), _, _) if (129..=128 + 64).contains(&code) => match signal_name(code - 128) {
            Some(name) => format!("{code} (128 + {name})"),
            None => format!("{code} (128 + signal {})", code - 128),
        },
        (Some(code), _, _) => match shell_meaning(code) {
            Some(m) => format!("{code} ({m})"),
            None => code.to_string(),
        },
        (None, Some(sig), _) => match signal_name(sig) {
            Some(name) => format!("signal {sig} ({name})"),
            None => format!("signal {sig}"),
        },
        (None, None, Some(r)) => r.clone(),
        (None, None, None) => "unknown".into(),
    }
}

/// The usual name of a signal people meet in task deaths.
fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded(String),
    Failed {
        reason: String,
        platform: bool,
    },
    Stopped(String),
    /// Ran past its max duration (Kubeflow's DeadlineExceeded): not retried.
    DeadlineExceeded {
        max_secs: u64,
    },
    /// Stopped to make room for the job `by`: requeued as a new attempt
    /// that does not count against retryCount.
    Preempted {
        by: String,
    },
}

/// What becomes of the job after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Finish {
        state: JobState,
        reason: String,
    },
    Retry {
        attempt: u32,
        failed_attempts: u32,
        reason: String,
    },
}

/// `attempt` is the 0-based attempt that just ended; `failed_attempts`
/// counts the user's failed attempts before it.
pub fn after_attempt(
    spec: &JobSpec,
    attempt: u32,
    failed_attempts: u32,
    outcome: &Outcome,
) -> Next {
    match outcome {
        Outcome::Succeeded(why) => Next::Finish {
            state: JobState::Succeeded,
            reason: why.clone(),
        },
        Outcome::Stopped(why) => Next::Finish {
            state: JobState::Stopped,
            reason: why.clone(),
        },
        Outcome::DeadlineExceeded { max_secs } => Next::Finish {
            state: JobState::Failed,
            reason: format!(
                "DeadlineExceeded: ran past its max duration of {}",
                format_duration_secs(*max_secs)
            ),
        },
        Outcome::Preempted { by } => Next::Retry {
            attempt: attempt + 1,
            failed_attempts,
            reason: format!(
                "preempted to make room for {by}; requeued as attempt {} (not counted against retryCount)",
                attempt + 1
            ),
        },
        Outcome::Failed { reason, platform } => {
            let platform_failures = attempt.saturating_sub(failed_attempts);
            if *platform {
                if platform_failures < MAX_PLATFORM_RETRIES {
                    return Next::Retry {
                        attempt: attempt + 1,
                        failed_attempts,
                        reason: format!("platform failure, retried without counting: {reason}"),
                    };
                }
                return Next::Finish {
                    state: JobState::Failed,
                    reason: format!(
                        "{reason} (the platform failed {} times in a row)",
                        platform_failures + 1
                    ),
                };
            }
            let failed = failed_attempts + 1;
            if should_retry(spec, failed) {
                Next::Retry {
                    attempt: attempt + 1,
                    failed_attempts: failed,
                    reason: format!(
                        "attempt {attempt} failed ({reason}); retry {failed} of {}",
                        spec.retry_count
                    ),
                }
            } else {
                Next::Finish {
                    state: JobState::Failed,
                    reason: reason.clone(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: Option<i32>, signal: Option<i32>) -> TaskExit {
        TaskExit {
            exit_code: code,
            signal,
            stop_requested: false,
            cause: None,
            finished_at_ms: 1,
        }
    }

    fn spec(retry_count: u32) -> JobSpec {
        JobSpec {
            name: "j".into(),
            retry_count,
            ..Default::default()
        }
    }

    #[test]
    fn signal_deaths_are_named_directly_or_through_the_shell() {
        let t: TaskId = "main-0".parse().expect("task id");
        let say = |code, sig| describe_end(&t, &task_end(&exit(code, sig)));
        assert_eq!(
            say(None, Some(9)),
            "main-0 was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(say(None, Some(40)), "main-0 was killed by signal 40");
        assert_eq!(
            say(Some(139), None),
            "main-0 exited with code 139 (128 + signal 11, SIGSEGV)"
        );
        assert_eq!(say(Some(128), None), "main-0 exited with code 128");
        assert_eq!(say(Some(2), None), "main-0 exited with code 2");
        assert_eq!(
            say(Some(127), None),
            "main-0 exited with code 127 (command not found)"
        );
        assert_eq!(
            say(Some(126), None),
            "main-0 exited with code 126 (not executable)"
        );
    }

    #[test]
    fn a_last_exit_reads_in_a_few_words() {
        let brief = |code, sig| exit_brief(&task_end(&exit(code, sig)));
        assert_eq!(brief(Some(127), None), "127 (command not found)");
        assert_eq!(brief(Some(126), None), "126 (not executable)");
        assert_eq!(brief(Some(1), None), "1");
        assert_eq!(brief(Some(137), None), "137 (128 + SIGKILL)");
        assert_eq!(brief(None, Some(11)), "signal 11 (SIGSEGV)");
        assert_eq!(brief(None, Some(40)), "signal 40");
        let mut oom = exit(None, Some(9));
        oom.cause = Some(ExitCause::OomKilled);
        assert_eq!(exit_brief(&task_end(&oom)), "OOMKilled");
        assert_eq!(exit_brief(&task_lost("gone")), "Lost: gone");
    }

    #[test]
    fn task_ends_read_as_people_expect() {
        assert_eq!(task_end(&exit(Some(0), None)).state, TaskState::Succeeded);
        let e = task_end(&exit(Some(3), None));
        assert_eq!(
            (e.state, e.reason.as_deref()),
            (TaskState::Failed, Some("exit code 3"))
        );
        let mut oom = exit(None, Some(9));
        oom.cause = Some(ExitCause::OomKilled);
        assert_eq!(task_end(&oom).reason.as_deref(), Some("OOMKilled"));
        // The engine's own time limit (Slurm's TIMEOUT) reads as the deadline,
        // the user's to fix, not a platform failure retried for free.
        let mut timeout = exit(None, None);
        timeout.cause = Some(ExitCause::TimeLimit);
        let end = task_end(&timeout);
        assert!(end
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("DeadlineExceeded")));
        assert!(!end.platform && end.state == TaskState::Failed);
        // A fork refused for the pids limit explains a failure, not a success.
        let mut forks = exit(Some(1), None);
        forks.cause = Some(ExitCause::PidsLimitReached);
        assert_eq!(task_end(&forks).reason.as_deref(), Some("PidsLimitReached"));
        forks.exit_code = Some(0);
        assert_eq!(task_end(&forks).state, TaskState::Succeeded);
        let mut stopped = exit(None, Some(15));
        stopped.stop_requested = true;
        assert_eq!(task_end(&stopped).state, TaskState::Stopped);
        let mut launch = exit(None, None);
        launch.cause = Some(ExitCause::LaunchFailed {
            message: "no bash".into(),
            refused: false,
        });
        assert!(task_end(&launch).platform);
        launch.cause = Some(ExitCause::LaunchFailed {
            message: "no bash".into(),
            refused: true,
        });
        assert!(
            !task_end(&launch).platform,
            "a link out of the space is the user's"
        );
        // A stop that raced a natural exit still reads as a stop.
        let mut both = exit(Some(0), None);
        both.stop_requested = true;
        assert_eq!(task_end(&both).state, TaskState::Stopped);
    }

    #[test]
    fn a_preempted_attempt_is_retried_without_counting() {
        let next = after_attempt(
            &spec(0),
            2,
            1,
            &Outcome::Preempted {
                by: "bob~big".into(),
            },
        );
        assert_eq!(
            next,
            Next::Retry {
                attempt: 3,
                failed_attempts: 1,
                reason: "preempted to make room for bob~big; requeued as attempt 3 (not counted against retryCount)".into(),
            }
        );
    }

    #[test]
    fn user_failures_use_up_retry_count() {
        let s = spec(2);
        let failed = Outcome::Failed {
            reason: "x".into(),
            platform: false,
        };
        assert!(matches!(
            after_attempt(&s, 0, 0, &failed),
            Next::Retry {
                attempt: 1,
                failed_attempts: 1,
                ..
            }
        ));
        assert!(matches!(
            after_attempt(&s, 1, 1, &failed),
            Next::Retry {
                attempt: 2,
                failed_attempts: 2,
                ..
            }
        ));
        assert!(matches!(
            after_attempt(&s, 2, 2, &failed),
            Next::Finish {
                state: JobState::Failed,
                ..
            }
        ));
        assert!(matches!(
            after_attempt(&spec(0), 0, 0, &failed),
            Next::Finish {
                state: JobState::Failed,
                ..
            }
        ));
    }

    #[test]
    fn platform_failures_do_not_count_but_do_not_loop_forever() {
        let s = spec(0);
        let platform = Outcome::Failed {
            reason: "lost".into(),
            platform: true,
        };
        assert!(matches!(
            after_attempt(&s, 0, 0, &platform),
            Next::Retry {
                attempt: 1,
                failed_attempts: 0,
                ..
            }
        ));
        assert!(matches!(
            after_attempt(&s, MAX_PLATFORM_RETRIES, 0, &platform),
            Next::Finish {
                state: JobState::Failed,
                ..
            }
        ));
    }

    #[test]
    fn deadlines_and_stops_are_final() {
        let s = spec(5);
        assert!(matches!(
            after_attempt(&s, 0, 0, &Outcome::DeadlineExceeded { max_secs: 30 }),
            Next::Finish { state: JobState::Failed, reason } if reason.starts_with("DeadlineExceeded")
        ));
        assert!(matches!(
            after_attempt(&s, 0, 0, &Outcome::Stopped("stopped by alice".into())),
            Next::Finish {
                state: JobState::Stopped,
                ..
            }
        ));
    }
}
