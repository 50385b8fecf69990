//! A job's life on every engine: each completion rule, retryCount (on Slurm a
//! new sbatch per attempt), max duration and `kiln extend` (on Slurm, `--time`
//! as a backstop that extend moves), isDebug, and a job that can never fit.

use super::{slurm_jobs_of, slurm_time_limit, Eng};
use crate::common::{self, events, task, until};

fn role_job(name: &str, replicas: u32, command: &str) -> String {
    format!(
        r#"name: {name}
roles:
  - name: w
    replicas: {replicas}
    cpus: 1
    memory: 128Mi
    command: {command}
"#
    )
}

pub fn completion_rules(e: &Eng) {
    let s = e.server();
    let first_fails =
        "'if [ $PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX = 0 ]; then exit 3; fi; sleep 300'";
    let first_succeeds =
        "'if [ $PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX = 0 ]; then exit 0; fi; sleep 300'";
    let first_fails_rest_succeed =
        "'if [ $PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX = 0 ]; then exit 3; fi; sleep 0.5'";
    // minFailed 1 (default): the first failure fails the attempt, the rest are stopped.
    let failfast = s.submit("failfast", &role_job("failfast", 3, first_fails));
    // minFailed null: failures never fail the job; it succeeds when all finish.
    let tolerant = s.submit(
        "tolerant",
        &role_job("tolerant", 3, first_fails_rest_succeed)
            .replace("command:", "minFailed: null\n    command:"),
    );
    // minSucceeded 1: the first success succeeds the attempt, the rest are stopped.
    let quorum = s.submit(
        "quorum",
        &role_job("quorum", 3, first_succeeds).replace("command:", "minSucceeded: 1\n    command:"),
    );
    // Everything finished.
    let all = s.submit("all", &role_job("all", 2, "'exit 0'"));

    let j = s.wait_state(&failfast, "FAILED", e.secs(30));
    assert_eq!(task(&j, "w-0")["exitCode"], 3);
    assert_eq!(task(&j, "w-1")["state"], "STOPPED", "{j:#}");
    assert_eq!(task(&j, "w-2")["state"], "STOPPED", "{j:#}");
    assert!(
        j["reason"]
            .as_str()
            .expect("reason")
            .contains("w-0 exited with code 3"),
        "{j}"
    );

    let j = s.wait_state(&tolerant, "SUCCEEDED", e.secs(30));
    assert_eq!(task(&j, "w-0")["state"], "FAILED");
    assert_eq!(task(&j, "w-1")["state"], "SUCCEEDED");

    let j = s.wait_state(&quorum, "SUCCEEDED", e.secs(30));
    assert_eq!(task(&j, "w-0")["state"], "SUCCEEDED");
    assert_eq!(task(&j, "w-1")["state"], "STOPPED", "{j:#}");
    assert!(
        j["reason"]
            .as_str()
            .expect("reason")
            .contains("minSucceeded 1"),
        "{j}"
    );

    s.wait_state(&all, "SUCCEEDED", e.secs(30));
}

pub fn retry_count(e: &Eng) {
    let s = e.server();
    let id = s.submit(
        "retry",
        "name: retry\nretryCount: 2\ncommand: 'echo attempt $KILN_ATTEMPT; [ $KILN_ATTEMPT -ge 2 ] || exit 1'\n",
    );
    let j = s.wait_state(&id, "SUCCEEDED", e.secs(30));
    assert_eq!(j["attempt"], 2);
    assert_eq!(j["failedAttempts"], 2);
    assert_eq!(s.logs(&id, "main-0"), "attempt 2\n");
    // Earlier attempts stay visible, with how their tasks ended.
    let earlier = j["attempts"].as_array().expect("attempts");
    assert_eq!(earlier.len(), 2);
    assert_eq!(earlier[1]["attempt"], 1);
    assert_eq!(earlier[1]["tasks"][0]["exitCode"], 1);
    let (_, log) = s.api(
        "GET",
        &format!("/jobs/{id}/tasks/main-0/logs?attempt=0"),
        None,
    );
    assert_eq!(log.as_str(), Some("attempt 0\n"));
    let retried = events(&j).iter().filter(|(k, _)| k == "retried").count();
    assert_eq!(retried, 2);
    if e.slurm() {
        // Each attempt was its own sbatch.
        let mut ids = slurm_jobs_of(&e.jobs_dir(&s), &id);
        assert_eq!(ids.len(), 3, "{ids:?}");
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 3, "a new Slurm job per attempt: {ids:?}");
    }
    // Without enough retries, the job fails on its last attempt.
    let id = s.submit(
        "noretry",
        "name: noretry\nretryCount: 1\ncommand: '[ $KILN_ATTEMPT -ge 2 ] || exit 1'\n",
    );
    let j = s.wait_state(&id, "FAILED", e.secs(30));
    assert_eq!(j["attempt"], 1);
}

pub fn max_duration_and_extend(e: &Eng) {
    let s = e.server();
    let short = s.submit(
        "short",
        "name: short\nmaxDuration: 2s\ncommand: 'sleep 300'\n",
    );
    let long = s.submit("long", "name: long\nmaxDuration: 3s\ncommand: 'sleep 6'\n");
    s.wait_state(&long, "RUNNING", e.secs(30));
    let slurm_long = e.slurm().then(|| {
        // Slurm's own limit is a backstop: max duration + 2 × grace + 1 min,
        // in whole minutes (3 s + 2 s + 60 s: 2 min).
        let ids = slurm_jobs_of(&e.jobs_dir(&s), &long);
        let job = *ids.first().expect("a Slurm job");
        assert_eq!(slurm_time_limit(job), "2:00");
        job
    });
    let out = s.ok(&["extend", &long, "1m"]);
    assert!(out.contains("now ends in"), "{out}");
    if let Some(job) = slurm_long {
        // 63 s + 2 s + 60 s: 3 min, moved by scontrol while it runs.
        until(10, "Slurm's time limit moved", || {
            let l = slurm_time_limit(job);
            (l == "3:00").then_some(()).ok_or(l)
        });
    }
    let j = s.wait_state(&short, "FAILED", e.secs(30));
    assert!(
        j["reason"]
            .as_str()
            .expect("reason")
            .starts_with("DeadlineExceeded"),
        "{j}"
    );
    assert!(events(&j).iter().any(|(k, _)| k == "deadline"));
    let j = s.wait_state(&long, "SUCCEEDED", e.secs(30));
    assert!(
        events(&j)
            .iter()
            .any(|(k, m)| k == "extended" && m.contains("by admin")),
        "{j}"
    );
    // A finished job cannot be extended; a bad duration names the field.
    let (status, p) = s.api(
        "PATCH",
        &format!("/jobs/{long}"),
        Some(r#"{"extendBy": "1h"}"#),
    );
    assert_eq!(status, 409, "{p}");
    let (status, p) = s.api(
        "PATCH",
        &format!("/jobs/{long}"),
        Some(r#"{"extendBy": "soon"}"#),
    );
    assert_eq!(status, 422, "{p}");
    assert_eq!(p["errors"][0]["path"], "extendBy");
}

pub fn is_debug(e: &Eng) {
    let s = e.server();
    let debug = s.submit(
        "debug",
        "name: debug\njobEnvs:\n  isDebug: true\ncommand: 'echo scratch > $TMPDIR/left.txt; exit 1'\n",
    );
    let plain = s.submit(
        "plain",
        "name: plain\ncommand: 'echo scratch > $TMPDIR/left.txt; exit 1'\n",
    );
    let j = s.wait_state(&debug, "FAILED", e.secs(30));
    let (_, msg) = events(&j)
        .into_iter()
        .find(|(k, _)| k == "debug")
        .expect("a debug event");
    let path = msg
        .split(" at ")
        .nth(1)
        .expect("a path")
        .split(' ')
        .next()
        .expect("path");
    assert!(
        std::path::Path::new(path).join("tmp/left.txt").exists(),
        "{msg}"
    );
    let j = s.wait_state(&plain, "FAILED", e.secs(30));
    assert!(!events(&j).iter().any(|(k, _)| k == "debug"));
    // Without isDebug the scratch folder is emptied; the folder stays.
    let jobs = e.jobs_dir(&s);
    let left = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&jobs)
            .expect("jobs folder")
            .flatten()
            .map(|e| e.path().join("attempt-0/main-0/tmp/left.txt"))
            .filter(|p| p.exists())
            .collect()
    };
    common::until(10, "only the debug task keeps its scratch files", || {
        let n = left().len();
        (n == 1).then_some(()).ok_or(format!("{n} keep them"))
    });
    let scratch: Vec<_> = std::fs::read_dir(&jobs)
        .expect("jobs folder")
        .flatten()
        .map(|e| e.path().join("attempt-0/main-0/tmp"))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(scratch.len(), 2, "{scratch:?}");
}

/// More GPUs than any node has: refused at submission (the capacity is the
/// engine's nodes, Slurm's on Slurm, and cannot grow), naming the field.
pub fn never_fits(e: &Eng) {
    let s = e.server();
    let largest = e.gpus_per_node();
    let want = largest + 1;
    let (status, p) = s.api(
        "POST",
        "/jobs",
        Some(&format!(
            r#"{{"name": "toobig", "gpus": {want}, "command": "true"}}"#
        )),
    );
    assert_eq!(status, 422, "{p}");
    let err = &p["errors"][0];
    assert!(
        err["path"].as_str().is_some_and(|f| f.ends_with("gpus")),
        "{p}"
    );
    let said = format!("needs {want} GPUs on one node; the largest node has {largest}");
    assert!(
        err["message"].as_str().is_some_and(|m| m.contains(&said)),
        "{p}"
    );
    if e.slurm() {
        // The nodes kiln knows are Slurm's.
        let nodes = s.ok(&["nodes"]);
        assert!(nodes.contains("n1") && nodes.contains("n2"), "{nodes}");
    }
}

/// `kiln logs -f` follows a running task's output as it is written (on
/// Slurm, by a supervisor on a node, into the shared path), ends with the
/// task, and a stopped job tells its story in events.
pub fn logs_followed_live_and_stop(e: &Eng) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let s = e.server();
    let marks = common::shared_tempdir();
    let go = marks.path().join("go");
    let id = s.submit(
        "chatty",
        &format!(
            "name: chatty\ncommand: 'echo first; while [ ! -e {} ]; do sleep 0.05; done; echo second'\n",
            go.display()
        ),
    );
    s.wait_state(&id, "RUNNING", e.secs(30));
    let mut follow = Command::new(common::kiln_exe())
        .args(["logs", &id, "-f"])
        .env("KILN_URL", &s.url)
        .env("KILN_DATA", s.data.path())
        .env_remove("KILN_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .expect("kiln logs -f");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    // Only the first line exists until the test lets the task go on.
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("first"));
    std::fs::write(&go, "").expect("go");
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("second"));
    // The follower ends with the task.
    let status = follow.wait().expect("follower ended");
    assert!(status.success(), "{status:?}");
    s.wait_state(&id, "SUCCEEDED", e.secs(30));

    // A running job stopped: STOPPED, with its story.
    let id = s.submit("held", "name: held\ncommand: 'sleep 300'\n");
    s.wait_state(&id, "RUNNING", e.secs(30));
    s.ok(&["stop", &id]);
    let j = s.wait_state(&id, "STOPPED", e.secs(30));
    assert_eq!(task(&j, "main-0")["state"], "STOPPED", "{j:#}");
    let kinds: Vec<String> = events(&j).into_iter().map(|(k, _)| k).collect();
    for k in ["submitted", "placed", "started", "finished"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing: {kinds:?}");
    }
}
