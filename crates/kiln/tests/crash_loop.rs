//! Crash loops (issue 16): a task whose command cannot even start, under a
//! restart policy that restarts it in place, must back off between restarts
//! instead of restarting as fast as the machine allows, stop at the job's
//! restart budget (Kubeflow's `backoffLimit`, kiln's `maxRestarts`), show
//! its restarts as one event line with a count, and not keep a folder per
//! restart.
//!
//! The server runs with a short first back-off (`--restart-backoff 100ms`,
//! so the cap is 3 s): the same doubling as the 10 s default, in a test's
//! time.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{events, task, until, Server};
use serde_json::Value;

/// The first back-off of these tests; DESIGN's default is 10 s.
const FIRST_MS: u64 = 100;

/// `Server::start` starts restarts in place with a back-off of 100 ms.
fn server() -> Server {
    Server::start()
}

/// The task's restarts; 0 before the job has tasks (it may still wait for
/// its first placement when the test first looks).
fn restarts(j: &Value, id: &str) -> u64 {
    j["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == id))
        .and_then(|t| t["restarts"].as_u64())
        .unwrap_or_default()
}

/// The task folders of the job's first attempt (there is one job per server).
fn task_folders(s: &Server) -> Vec<String> {
    let jobs = s.data.path().join("jobs");
    let mut out = Vec::new();
    for job in std::fs::read_dir(&jobs).into_iter().flatten().flatten() {
        let attempt: PathBuf = job.path().join("attempt-0");
        for t in std::fs::read_dir(&attempt).into_iter().flatten().flatten() {
            out.push(t.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[test]
fn a_command_that_is_not_found_backs_off_and_shows_one_line_with_a_count() {
    let s = server();
    let submitted = Instant::now();
    let id = s.submit(
        "loop",
        "name: loop\nrestartPolicy: OnFailure\ncommand: kiln-test-no-such-command\n",
    );

    // 100, 200, 400, 800 and 1600 ms between the five first restarts: at
    // least 3.1 s in all, where restarting at once takes a fraction of that.
    let j = s.wait_job(&id, 30, "restarted 5 times", |j| restarts(j, "main-0") >= 5);
    let took = submitted.elapsed();
    assert!(
        took >= Duration::from_millis(31 * FIRST_MS - 100),
        "5 restarts in {took:?}: no back-off between them: {j:#}"
    );
    assert!(
        restarts(&j, "main-0") <= 6,
        "far more restarts than the back-off allows in {took:?}: {j:#}"
    );
    assert_eq!(j["state"], "RUNNING", "{j:#}");

    // One line for all the restarts, updated with the count.
    let lines: Vec<String> = events(&j)
        .into_iter()
        .filter(|(k, _)| k == "restarted")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(lines.len(), 1, "one event line for the restarts: {lines:?}");
    assert!(
        lines[0].contains("main-0 restarted")
            && lines[0].contains("times; last exit 127 (command not found)"),
        "{lines:?}"
    );
    let exits = events(&j).iter().filter(|(k, _)| k == "exited").count();
    assert!(exits <= 1, "an event per exit: {:#}", j["events"]);

    // Waiting out its back-off, the task says so and why.
    let j = s.wait_job(&id, 30, "in its back-off", |j| {
        task(j, "main-0")["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("back-off of "))
    });
    let reason = task(&j, "main-0")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("last exit 127 (command not found)"),
        "{reason}"
    );
    assert_eq!(task(&j, "main-0")["state"], "WAITING", "{j:#}");
    assert!(task(&j, "main-0")["restartAtMs"].is_u64(), "{j:#}");

    // The first run's folder and the last three are kept, no more.
    // Old folders go on a thread of their own: wait for it, with a deadline.
    let folders = common::until(10, "a folder per restart kept", || {
        let f = task_folders(&s);
        if f.len() <= 4 {
            Ok(f)
        } else {
            Err(format!("{f:?}"))
        }
    });
    assert!(folders.contains(&"main-0".to_owned()), "{folders:?}");

    // A stop during the back-off ends the job at once: no task is running.
    s.ok(&["stop", &id]);
    let j = s.wait_state(&id, "STOPPED", 10);
    assert_eq!(task(&j, "main-0")["state"], "STOPPED", "{j:#}");
}

#[test]
fn kubeflow_backoff_limit_fails_the_job_after_that_many_restarts_across_a_server_restart() {
    let mut s = server();
    let submitted = Instant::now();
    let spec = r#"
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata: {name: crashing}
spec:
  runPolicy: {backoffLimit: 3}
  pytorchReplicaSpecs:
    Master:
      replicas: 1
      template:
        spec:
          containers:
            - name: pytorch
              image: pytorch/pytorch:2.4
              command: [kiln-test-no-such-command]
              resources: {limits: {cpu: 1, memory: 128Mi}}
"#;
    let id = s.submit("crashing", spec);
    s.wait_job(&id, 30, "restarted once", |j| {
        restarts(j, "master-0") >= 1 || j["state"] == "FAILED"
    });

    // What was decided (the count, the back-off) outlives the server.
    s.kill9();
    s.boot();

    let j = s.wait_state(&id, "FAILED", 30);
    let took = submitted.elapsed();
    assert_eq!(restarts(&j, "master-0"), 3, "backoffLimit 3: {j:#}");
    assert_eq!(j["attempt"], 0, "restarted in place, not retried: {j:#}");
    assert!(
        took >= Duration::from_millis(7 * FIRST_MS - 50),
        "3 restarts in {took:?}: no back-off between them"
    );
    let ev = events(&j);
    let lines: Vec<&String> = ev
        .iter()
        .filter(|(k, _)| k == "restarted")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(lines.len(), 1, "{ev:?}");
    assert!(
        lines[0].contains("master-0 restarted 3 times; last exit 127 (command not found)"),
        "{lines:?}"
    );
    // The exit that used up the budget is the one the job failed with.
    assert!(
        ev.iter()
            .any(|(k, m)| k == "exited" && m.contains("master-0 exited with code 127")),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|(k, m)| k == "finished" && m.starts_with("FAILED")),
        "{ev:?}"
    );
    common::until(10, "old restart folders removed", || {
        let f = task_folders(&s);
        if f.len() <= 4 {
            Ok(())
        } else {
            Err(format!("{f:?}"))
        }
    });
    until(5, "nothing left running", || {
        let j = s.job(&id);
        if task(&j, "master-0")["state"] == "FAILED" {
            Ok(())
        } else {
            Err(format!("{j:#}"))
        }
    });
}
