//! Each rule of the completion policy (DESIGN.md, Semantics), on plain data.

use kiln_spec::completion::{decide, should_retry, AttemptState, TaskState, TaskStatus};
use kiln_spec::{parse, JobSpec};

fn job(text: &str) -> JobSpec {
    parse(text.as_bytes()).expect("valid spec").job
}

fn task(id: &str, state: TaskState) -> TaskStatus {
    TaskStatus {
        task: id.parse().expect("task id"),
        state,
        exit_code: match state {
            TaskState::Succeeded => Some(0),
            TaskState::Failed => Some(1),
            _ => None,
        },
        signal: None,
        restarts: 0,
    }
}

fn ids(list: &[kiln_spec::TaskId]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

use TaskState::*;

const TWO_ROLES: &str = "name: j\nroles:\n  - {name: master, command: x}\n  - {name: worker, replicas: 3, command: x}\n";

#[test]
fn rule1_a_stop_request_ends_the_attempt_as_stopped() {
    let j = job(TWO_ROLES);
    let tasks = [
        task("master-0", Succeeded),
        task("worker-0", Running),
        task("worker-1", Waiting),
        task("worker-2", Failed),
    ];
    let d = decide(&j, &tasks, true);
    assert_eq!(d.state, AttemptState::Stopped);
    assert_eq!(ids(&d.stop), ["worker-0", "worker-1"]);
}

#[test]
fn rule2_min_failed_fails_the_attempt_at_once_and_stops_the_rest() {
    let j = job(TWO_ROLES);
    let tasks = [
        task("master-0", Running),
        task("worker-0", Failed),
        task("worker-1", Running),
        task("worker-2", Succeeded),
    ];
    let d = decide(&j, &tasks, false);
    assert_eq!(d.state, AttemptState::Failed);
    assert_eq!(ids(&d.stop), ["master-0", "worker-1"]);
    let reason = d.reason.expect("a reason");
    assert!(
        reason.contains("worker") && reason.contains("worker-0 exited with code 1"),
        "{reason}"
    );
}

#[test]
fn rule2_waits_for_min_failed_failures() {
    let j = job("name: j\nroles:\n  - {name: w, replicas: 3, minFailed: 2, command: x}\n");
    let one = [
        task("w-0", Failed),
        task("w-1", Running),
        task("w-2", Running),
    ];
    assert_eq!(decide(&j, &one, false).state, AttemptState::Running);
    let two = [
        task("w-0", Failed),
        task("w-1", Failed),
        task("w-2", Running),
    ];
    let d = decide(&j, &two, false);
    assert_eq!(d.state, AttemptState::Failed);
    assert_eq!(ids(&d.stop), ["w-2"]);
}

#[test]
fn rule2_null_min_failed_means_failures_never_fail_the_job() {
    let j = job("name: j\nroles:\n  - {name: w, replicas: 2, minFailed: null, command: x}\n");
    let tasks = [task("w-0", Failed), task("w-1", Running)];
    assert_eq!(decide(&j, &tasks, false).state, AttemptState::Running);
    // ...and once all have finished, rule 4 makes it a success.
    let tasks = [task("w-0", Failed), task("w-1", Failed)];
    assert_eq!(decide(&j, &tasks, false).state, AttemptState::Succeeded);
}

#[test]
fn rule3_min_succeeded_succeeds_the_attempt_at_once() {
    let j = job("name: j\nroles:\n  - {name: master, command: x, minSucceeded: 1}\n  - {name: worker, replicas: 2, command: x}\n");
    let tasks = [
        task("master-0", Succeeded),
        task("worker-0", Running),
        task("worker-1", Waiting),
    ];
    let d = decide(&j, &tasks, false);
    assert_eq!(d.state, AttemptState::Succeeded);
    assert_eq!(ids(&d.stop), ["worker-0", "worker-1"]);
}

#[test]
fn rule3_min_failed_is_checked_before_min_succeeded() {
    let j = job("name: j\nroles:\n  - {name: master, command: x, minSucceeded: 1}\n  - {name: worker, replicas: 2, command: x}\n");
    let tasks = [
        task("master-0", Succeeded),
        task("worker-0", Failed),
        task("worker-1", Running),
    ];
    assert_eq!(decide(&j, &tasks, false).state, AttemptState::Failed);
}

#[test]
fn rule4_the_attempt_succeeds_when_every_task_has_finished() {
    let j = job(TWO_ROLES);
    let mut tasks = vec![
        task("master-0", Succeeded),
        task("worker-0", Succeeded),
        task("worker-1", Succeeded),
        task("worker-2", Running),
    ];
    let d = decide(&j, &tasks, false);
    assert_eq!(d.state, AttemptState::Running);
    assert!(d.stop.is_empty() && d.restart.is_empty());
    tasks[3].state = Succeeded;
    let d = decide(&j, &tasks, false);
    assert_eq!(d.state, AttemptState::Succeeded);
    assert!(d.stop.is_empty());
}

#[test]
fn kubeflow_imports_succeed_when_the_master_succeeds() {
    let j = job(include_str!(
        "../../../examples/kubeflow/pytorch-simple.yaml"
    ));
    let tasks = [task("master-0", Succeeded), task("worker-0", Running)];
    let d = decide(&j, &tasks, false);
    assert_eq!(d.state, AttemptState::Succeeded);
    assert_eq!(ids(&d.stop), ["worker-0"]);
}

#[test]
fn on_failure_restarts_in_place_within_the_budget() {
    let j = job("name: j\nmaxRestarts: 2\nroles:\n  - {name: w, replicas: 2, restartPolicy: OnFailure, command: x}\n");
    let mut tasks = vec![task("w-0", Failed), task("w-1", Running)];
    let d = decide(&j, &tasks, false);
    assert_eq!(d.state, AttemptState::Running);
    assert_eq!(ids(&d.restart), ["w-0"]);

    // Two restarts used: the next failure counts.
    tasks[0].restarts = 2;
    let d = decide(&j, &tasks, false);
    assert_eq!(d.state, AttemptState::Failed);
    assert!(d.restart.is_empty());
}

#[test]
fn exit_code_policy_restarts_only_retryable_exits() {
    let j = job("name: j\nroles:\n  - {name: w, restartPolicy: ExitCode, command: x}\n");
    let mut t = task("w-0", Failed);
    t.exit_code = Some(137);
    assert_eq!(ids(&decide(&j, &[t.clone()], false).restart), ["w-0"]);
    t.exit_code = None;
    t.signal = Some(9);
    assert_eq!(ids(&decide(&j, &[t.clone()], false).restart), ["w-0"]);
    t.signal = None;
    t.exit_code = Some(2);
    assert_eq!(decide(&j, &[t], false).state, AttemptState::Failed);
}

#[test]
fn retries_run_until_retry_count_failed_attempts_have_been_retried() {
    let j = job("name: j\nretryCount: 2\ncommand: x\n");
    assert!(should_retry(&j, 1));
    assert!(should_retry(&j, 2));
    assert!(!should_retry(&j, 3));
    let none = job("name: j\ncommand: x\n");
    assert!(!should_retry(&none, 1));
}
