//! The local engine end to end: a real server, the real CLI, real processes
//! under real supervisors, 4 fake GPUs (`--fake-gpus 4`).

mod common;
#[macro_use]
mod cases;

use std::collections::BTreeSet;

use common::{events, task, Server};

/// A job's events tell its story in order, with times: submitted, placed
/// (where, which GPUs), started, how each task ended (here a signal), and
/// the outcome; `kiln events` prints the same.
#[test]
fn a_jobs_events_tell_its_story_in_order() {
    let s = Server::start_with(&["--fake-gpus", "2"]);
    let id = s.submit("story", "name: story\ngpus: 1\ncommand: 'kill -9 $$'\n");
    let j = s.wait_state(&id, "FAILED", 30);
    let kinds: Vec<String> = events(&j).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        [
            "submitted",
            "placed",
            "limits",
            "started",
            "exited",
            "finished"
        ],
        "{j}"
    );
    // Which limits hold, controller by controller.
    let limits = &events(&j)[2].1;
    for c in ["memory", "cpu", "pids"] {
        assert!(limits.contains(&format!("{c} ")), "{limits}");
    }
    let all = j["events"].as_array().expect("events");
    let times: Vec<u64> = all.iter().filter_map(|e| e["atMs"].as_u64()).collect();
    assert_eq!(times.len(), all.len(), "every event has a time: {j}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let said = |kind: &str| -> String {
        events(&j)
            .into_iter()
            .find(|(k, _)| k == kind)
            .map(|(_, m)| m)
            .unwrap_or_default()
    };
    assert!(
        said("placed").contains("main-0 GPUs "),
        "{}",
        said("placed")
    );
    // Directly, or (sandboxed) through bubblewrap as 128 + 9.
    assert!(
        said("exited").starts_with("main-0 ") && said("exited").contains("SIGKILL"),
        "{}",
        said("exited")
    );
    assert!(
        said("finished").starts_with("FAILED"),
        "{}",
        said("finished")
    );
    let printed = s.ok(&["events", &id]);
    for kind in &kinds {
        assert!(printed.contains(kind.as_str()), "{kind} missing: {printed}");
    }
    assert!(printed.contains("SIGKILL"), "{printed}");
}

#[test]
fn stop_ends_a_running_and_a_waiting_job() {
    let s = Server::start();
    let id = s.submit("sleeper", "name: sleeper\ncommand: 'exec sleep 300'\n");
    s.wait_state(&id, "RUNNING", 30);
    let stopped = s.ok(&["stop", &id]);
    assert!(
        stopped.contains("STOPPING") || stopped.contains("STOPPED"),
        "{stopped}"
    );
    let j = s.wait_state(&id, "STOPPED", 30);
    assert_eq!(task(&j, "main-0")["state"], "STOPPED");
    assert!(events(&j)
        .iter()
        .any(|(k, m)| k == "stop-requested" && m.contains("admin")));
    // Stopping it again says it is over.
    let again = s.cli(&["stop", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already STOPPED"));

    // A job that could never start (more GPUs than exist) is not taken at
    // all: it would only wait forever (tests/refusals.rs has the rest).
    let p = s.write_spec("toobig", "name: toobig\ngpus: 8\ncommand: 'true'\n");
    let out = s.cli(&["submit", p.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("roles[0].gpus: needs 8 GPUs on one node; the largest node has 4"),
        "{err}"
    );

    // A job waiting for GPUs another holds is stopped while waiting.
    let holder = s.submit(
        "holder",
        "name: holder\ngpus: 4\ncommand: 'exec sleep 300'\n",
    );
    s.wait_state(&holder, "RUNNING", 30);
    let id = s.submit("waiter", "name: waiter\ngpus: 1\ncommand: 'true'\n");
    let j = s.wait_state(&id, "WAITING", 10);
    assert!(
        j["pendingReason"]
            .as_str()
            .expect("reason")
            .contains("needs 1 GPU, 0 free"),
        "{j}"
    );
    s.ok(&["stop", &id]);
    s.wait_state(&id, "STOPPED", 10);
    s.ok(&["stop", &holder]);
    s.wait_state(&holder, "STOPPED", 30);
}

#[test]
fn gpus_are_never_shared_and_gangs_never_start_partially() {
    let s = Server::start();
    let big = s.submit("three", "name: three\ngpus: 3\ncommand: 'sleep 2'\n");
    s.wait_state(&big, "RUNNING", 30);
    let two = s.submit(
        "two",
        "name: two\ngpus: 2\ncommand: 'echo $CUDA_VISIBLE_DEVICES'\n",
    );
    let j = s.wait_state(&two, "WAITING", 10);
    let reason = j["pendingReason"].as_str().expect("reason");
    assert!(reason.contains("needs 2 GPUs, 1 free"), "{reason}");
    // The same facts as data, for the UI to say in its own language.
    assert_eq!(
        j["pendingDetail"],
        serde_json::json!({
            "code": "short",
            "missing": [{"resource": "gpus", "gpuType": null, "need": 2, "free": 1}],
            "ahead": 0,
            "queue": "default"
        }),
        "{j}"
    );
    let j = s.wait_state(&two, "SUCCEEDED", 30);
    assert!(j["startedAtMs"].as_u64() >= s.job(&big)["finishedAtMs"].as_u64());

    // A 2x2 gang on 3 free GPUs: nothing starts until all 4 are free.
    let one = s.submit("one", "name: one\ngpus: 1\ncommand: 'sleep 2'\n");
    s.wait_state(&one, "RUNNING", 30);
    let gang = s.submit(
        "gang",
        "name: gang\nroles:\n  - name: w\n    replicas: 2\n    gpus: 2\n    cpus: 1\n    memory: 128Mi\n    command: 'echo $CUDA_VISIBLE_DEVICES'\n",
    );
    let j = s.wait_state(&gang, "WAITING", 10);
    assert!(j["tasks"].as_array().is_none_or(|t| t.is_empty()), "{j}");
    let j = s.wait_state(&gang, "SUCCEEDED", 30);
    assert!(j["startedAtMs"].as_u64() >= s.job(&one)["finishedAtMs"].as_u64());
    let a = s.logs(&gang, "w-0");
    let b = s.logs(&gang, "w-1");
    let all: BTreeSet<&str> = a.trim().split(',').chain(b.trim().split(',')).collect();
    assert_eq!(all.len(), 4, "{a} {b}");
}

#[test]
fn a_job_over_its_memory_limit_fails_as_oom_killed() {
    let s = Server::start();
    let nodes = s.ok(&["nodes"]);
    let id = s.submit(
        "oom",
        "name: oom\nmemory: 100Mi\ncommand: 'head -c 400M /dev/zero | tail > /dev/null'\n",
    );
    let j = s.wait_state(&id, "FAILED", 60);
    if nodes.contains("limits: not enforced") {
        // No usable cgroups here: the job's events say so rather than pretend.
        assert!(events(&j).iter().any(|(k, _)| k == "limits"), "{j}");
        return;
    }
    assert_eq!(task(&j, "main-0")["reason"], "OOMKilled", "{j}");
    assert!(events(&j).iter().any(|(_, m)| m.contains("OOMKilled")));
}

#[test]
fn clone_delete_and_the_error_shapes() {
    let s = Server::start();
    let id = s.submit("orig", "name: orig\ncommand: 'echo original'\n");
    s.wait_state(&id, "SUCCEEDED", 30);
    let copy = s.ok(&["clone", &id]).trim().to_owned();
    assert_eq!(copy, "admin~orig-2");
    s.wait_state(&copy, "SUCCEEDED", 30);
    assert_eq!(s.logs(&copy, "main-0"), "original\n");
    let named = s.ok(&["clone", &id, "--name", "again"]).trim().to_owned();
    assert_eq!(named, "admin~again");

    // Same name twice: a conflict that says what to do.
    let dup = s.cli(&[
        "submit",
        s.write_spec("dup", "name: orig\ncommand: 'true'\n")
            .to_str()
            .expect("utf8"),
    ]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    // Invalid specs: 422 problem+json naming every field.
    let (status, p) = s.api(
        "POST",
        "/jobs",
        Some(r#"{"jobName":"bad name!","taskRoles":[{"name":"r","taskNumber":0,"cpuNumber":1,"memoryMB":64,"command":"x"}]}"#),
    );
    assert_eq!(status, 422);
    let paths: Vec<&str> = p["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        paths.contains(&"jobName")
            && paths.contains(&"taskRoles[0].taskNumber")
            && paths.contains(&"taskRoles[0].memoryMB"),
        "{p}"
    );

    // Delete: only finished jobs, and the logs go too.
    let running = s.submit("busy", "name: busy\ncommand: 'sleep 300'\n");
    s.wait_state(&running, "RUNNING", 30);
    let rm = s.cli(&["rm", &running]);
    assert!(!rm.status.success());
    assert!(String::from_utf8_lossy(&rm.stderr).contains("only finished jobs"));
    s.ok(&["stop", &running]);
    s.wait_state(&running, "STOPPED", 30);
    let key_dirs = std::fs::read_dir(s.data.path().join("jobs"))
        .expect("jobs")
        .count();
    s.ok(&["rm", &id]);
    assert_eq!(s.api("GET", &format!("/jobs/{id}"), None).0, 404);
    assert_eq!(
        std::fs::read_dir(s.data.path().join("jobs"))
            .expect("jobs")
            .count(),
        key_dirs - 1
    );

    // No token, wrong token.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .get(format!("{}/api/v1/jobs", s.url))
        .call()
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn a_restart_policy_restarts_the_task_in_place() {
    let s = Server::start();
    let marks = common::shared_tempdir();
    let m = marks.path().display();
    let id = s.submit(
        "flaky",
        &format!(
            "name: flaky\nmaxRestarts: 2\nroles:\n  - name: w\n    replicas: 1\n    cpus: 1\n    memory: 128Mi\n    restartPolicy: OnFailure\n    command: 'echo run >> {m}/runs; if [ -e {m}/once ]; then exit 0; fi; touch {m}/once; exit 1'\n"
        ),
    );
    let j = s.wait_state(&id, "SUCCEEDED", 30);
    assert_eq!(j["attempt"], 0, "restarted in place, not retried: {j}");
    assert_eq!(task(&j, "w-0")["restarts"], 1);
    assert!(events(&j).iter().any(|(k, _)| k == "restarted"));
    let runs = std::fs::read_to_string(marks.path().join("runs")).expect("runs");
    assert_eq!(runs.lines().count(), 2);
}

#[test]
fn a_fixed_port_in_use_keeps_the_job_waiting_until_it_is_free() {
    let s = Server::start();
    let busy = std::net::TcpListener::bind(("0.0.0.0", 0)).expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let spec = format!(
        r#"{{"jobName": "fixed", "image": "ubuntu", "taskRoles": [{{"name": "web", "taskNumber": 1, "cpuNumber": 1, "memoryMB": 128, "gpuNumber": 0,
            "portList": [{{"label": "http", "beginAt": {port}, "portNumber": 1}}],
            "command": "echo $PAI_PORT_LIST_web_0_http"}}]}}"#
    );
    let id = s.submit("fixed", &spec);
    let j = s.wait_job(&id, 10, "waiting for its port", |j| {
        j["pendingReason"]
            .as_str()
            .is_some_and(|r| r.contains(&port.to_string()))
    });
    assert_eq!(j["state"], "WAITING");
    // Nothing in kiln changes when an outside process lets go of a port: the
    // loop looks again by itself.
    drop(busy);
    s.wait_state(&id, "SUCCEEDED", 30);
    assert_eq!(s.logs(&id, "web-0").trim(), port.to_string());
}

#[test]
fn the_readme_examples_run_on_a_two_core_machine() {
    // The server as the README starts it: detected capacity, no overrides.
    let s = Server::start_with(&["--stop-grace", "1"]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/local");
    for (file, tasks) in [
        ("hello.yaml", &["main-0"][..]),
        ("hello-distributed.yaml", &["master-0", "worker-0"][..]),
    ] {
        let path = root.join(file);
        let out = s.ok(&["submit", path.to_str().expect("utf8"), "--wait"]);
        assert!(out.contains("SUCCEEDED"), "{file}: {out}");
        let id = out.split_whitespace().next().expect("id").to_owned();
        for t in tasks {
            let log = s.logs(&id, t);
            assert!(
                log.contains(&format!("I am {t}")) || log.contains(&format!("hello from {t}")),
                "{file} {t}: {log}"
            );
        }
    }
    let id = "admin~hello-distributed";
    assert!(s.logs(id, "master-0").contains("rank 0 of 2"));
    assert!(s.logs(id, "worker-0").contains("rank 1 of 2"));
}

/// `kiln logs -f` on a job, and its output to read line by line.
fn role_job(name: &str, replicas: u32, extra: &str, command: &str) -> String {
    format!(
        r#"name: {name}
{extra}
roles:
  - name: w
    replicas: {replicas}
    cpus: 1
    memory: 128Mi
    command: {command}
"#
    )
}

fn follow_logs(
    s: &Server,
    id: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut follower = std::process::Command::new(common::kiln_exe())
        .args(["logs", id, "-f"])
        .env("KILN_URL", &s.url)
        .env("KILN_DATA", s.data.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("follower");
    let out = std::io::BufReader::new(follower.stdout.take().expect("stdout"));
    (follower, out)
}

#[test]
fn logs_follow_live_and_come_in_ranges_and_downloads() {
    use std::io::BufRead;
    let s = Server::start();
    let marks = common::shared_tempdir();
    let go = marks.path().join("go");
    let id = s.submit(
        "talker",
        &format!(
            "name: talker\ncommand: 'echo first; echo oops >&2; while [ ! -e {} ]; do sleep 0.05; done; echo last'\n",
            go.display()
        ),
    );
    s.wait_state(&id, "RUNNING", 30);
    // `kiln logs -f` prints what is there, then waits for more.
    let (mut follower, mut out) = follow_logs(&s, &id);
    // stdout and stderr come through separate pipes: either may be first.
    let mut first_two = BTreeSet::new();
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        out.read_line(&mut line).expect("a line");
        first_two.insert(line.clone());
    }
    assert_eq!(
        first_two,
        BTreeSet::from(["first\n".to_owned(), "oops\n".to_owned()])
    );
    // The task is still running: the follower is still waiting.
    assert!(follower.try_wait().expect("status").is_none());
    std::fs::write(&go, "").expect("go");
    line.clear();
    out.read_line(&mut line).expect("a line");
    assert_eq!(line, "last\n");
    // It ends by itself when the task ends.
    let status = follower.wait().expect("exited");
    assert!(status.success());
    s.wait_state(&id, "SUCCEEDED", 30);

    // Streams apart, tails, byte ranges, downloads.
    assert_eq!(s.ok(&["logs", &id, "--stream", "stdout"]), "first\nlast\n");
    assert_eq!(s.ok(&["logs", &id, "--stream", "stderr"]), "oops\n");
    assert_eq!(s.ok(&["logs", &id, "--tail", "1"]), "last\n");
    let all = s.ok(&["logs", &id]);
    assert_eq!(all.len(), "first\noops\nlast\n".len());
    assert!(all.ends_with("last\n"));
    let (status, v) = s.api(
        "GET",
        &format!("/jobs/{id}/tasks/main-0/logs?offset=6&length=4"),
        None,
    );
    assert_eq!((status, v.as_str()), (200, Some(&all[6..10])));
    // A tail says where in the file it starts, so a reader can go on from
    // exactly there with `offset`.
    let mut resp = ureq::get(&format!(
        "{}/api/v1/jobs/{id}/tasks/main-0/logs?tail=1",
        s.url
    ))
    .header("Authorization", &format!("Bearer {}", s.token))
    .call()
    .expect("tail");
    let start = resp
        .headers()
        .get("x-kiln-log-start")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    assert_eq!(start, Some(all.len() - "last\n".len()));
    assert_eq!(resp.body_mut().read_to_string().expect("body"), "last\n");
    let (status, v) = s.api(
        "GET",
        &format!("/jobs/{id}/tasks/main-0/logs?download=true"),
        None,
    );
    assert_eq!((status, v.as_str()), (200, Some(all.as_str())));
    // Following a finished task prints everything and ends at once.
    let last_two: String = all.lines().skip(1).map(|l| format!("{l}\n")).collect();
    assert_eq!(s.ok(&["logs", &id, "-f", "--tail", "2"]), last_two);
    // A bad stream name or an unknown task is a clear 4xx.
    let (status, p) = s.api(
        "GET",
        &format!("/jobs/{id}/tasks/main-0/logs?stream=both"),
        None,
    );
    assert_eq!(status, 400, "{p}");
    let (status, p) = s.api("GET", &format!("/jobs/{id}/tasks/worker-9/logs"), None);
    assert_eq!(status, 404, "{p}");
    assert!(p["detail"].as_str().expect("detail").contains("main-0"));
}

#[test]
fn a_stop_while_a_failed_attempt_winds_down_stops_instead_of_retrying() {
    let s = Server::start();
    // w-0 fails after a second (by then w-1 has set its trap); w-1 ignores
    // SIGTERM, so the attempt takes the whole grace period (1 s) to wind
    // down. The stop lands in that window. (Failing at once raced w-1's
    // shell: a TERM before the trap ended attempt 0 at once, and it was
    // retried before the stop came.)
    let id = s.submit(
        "winding",
        &role_job(
            "winding",
            2,
            "retryCount: 2",
            "'trap \"\" TERM; if [ $PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX = 0 ]; then sleep 1; exit 3; fi; sleep 300'",
        ),
    );
    s.wait_job(&id, 30, "w-0 failed", |j| {
        j["tasks"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["id"] == "w-0" && t["state"] == "FAILED"))
    });
    s.ok(&["stop", &id]);
    let j = s.wait_job(&id, 30, "finished", |j| {
        ["STOPPED", "FAILED", "SUCCEEDED"].contains(&j["state"].as_str().unwrap_or_default())
    });
    assert_eq!(j["state"], "STOPPED", "{j}");
    assert_eq!(j["attempt"], 0, "not retried after the stop: {j}");
}

#[test]
fn a_sigterm_from_outside_kiln_is_a_failure_not_a_success() {
    let s = Server::start();
    let id = s.submit("victim", "name: victim\ncommand: 'sleep 300'\n");
    s.wait_state(&id, "RUNNING", 30);
    let claim = glob_one(
        &s.data.path().join("jobs"),
        "attempt-0/main-0/supervisor.pid",
    );
    let pid: i32 = wait_read(&claim).trim().parse().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signalled");
    let j = s.wait_job(&id, 30, "finished", |j| {
        ["STOPPED", "FAILED", "SUCCEEDED"].contains(&j["state"].as_str().unwrap_or_default())
    });
    assert_eq!(j["state"], "FAILED", "{j}");
    assert!(
        task(&j, "main-0")["reason"]
            .as_str()
            .expect("reason")
            .contains("outside kiln"),
        "{j}"
    );
}

#[test]
fn a_relative_data_folder_works() {
    let s = common::Server::start_relative(&["--cpus", "4"]);
    let id = s.submit(
        "rel",
        "name: rel\ncommand: 'cd /; touch \"$KILN_OUTPUT_DIR/made\" && echo ok'\n",
    );
    s.wait_state(&id, "SUCCEEDED", 30);
    assert_eq!(s.logs(&id, "main-0"), "ok\n");
}

#[test]
fn malformed_requests_get_problem_documents() {
    let s = Server::start();
    for (method, path, body, status) in [
        ("GET", "/jobs?limit=-1", None, 400),
        ("GET", "/jobs?state=SLEEPING", None, 400),
        (
            "POST",
            "/jobs?dryRun=maybe",
            Some("name: x\ncommand: 'true'\n"),
            400,
        ),
        ("GET", "/no/such/path", None, 404),
        ("DELETE", "/nodes", None, 405),
        ("GET", "/jobs/..~..%2F..", None, 404),
        ("GET", "/jobs/nobody~nothing", None, 404),
        ("PATCH", "/jobs/nobody~nothing", Some("{"), 404),
        ("POST", "/jobs", Some("{\"jobName\": 3}"), 422),
        ("POST", "/jobs", Some("\u{0}\u{1}garbage"), 422),
        ("POST", "/users", Some("[1, 2]"), 400),
    ] {
        let (got, p) = s.api(method, path, body);
        assert_eq!(got, status, "{method} {path}: {p}");
        assert!(
            p["detail"].is_string(),
            "{method} {path}: not a problem document: {p}"
        );
    }
    // A 10 MB body is refused with the same shape. The server may answer
    // and close before the whole body is sent: send it from another thread
    // and read the answer here.
    use std::io::{Read, Write};
    let addr = s.url.trim_start_matches("http://").to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let token = std::fs::read_to_string(s.data.path().join("admin.token")).expect("token");
    let mut writer = conn.try_clone().expect("clone");
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        token.trim(),
        10 << 20
    );
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..160 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut reply = Vec::new();
    let _ = conn.read_to_end(&mut reply);
    let _ = sender.join();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("application/problem+json"), "{reply}");
}

fn glob_one(root: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        for e in std::fs::read_dir(root).expect("jobs").flatten() {
            let p = e.path().join(suffix);
            if p.exists() {
                return p;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {suffix} under {}",
            root.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn wait_read(p: &std::path::Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(t) = std::fs::read_to_string(p) {
            if !t.trim().is_empty() {
                return t;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} stayed empty",
            p.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn kiln_run_runs_one_command_and_follows_it() {
    let s = Server::start();
    let out = s.cli(&[
        "run",
        "--gpus",
        "2",
        "--env",
        "GREETING=hi there",
        "--",
        "bash",
        "-c",
        "echo \"$GREETING\" on $CUDA_VISIBLE_DEVICES",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi there on 0,1\n");
    // A failing command fails the run, with the reason on stderr.
    let out = s.cli(&[
        "run",
        "--name",
        "failing",
        "--",
        "sh",
        "-c",
        "echo before; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exited with code 3"));
    // Detached: just the id.
    let out = s.ok(&["run", "-d", "--name", "bg", "--", "true"]);
    assert_eq!(out.trim(), "admin~bg");
    s.wait_state("admin~bg", "SUCCEEDED", 30);
}

#[test]
fn a_follower_ends_when_the_task_is_lost_without_an_exit_record() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::io::BufRead;
    let s = Server::start();
    let id = s.submit(
        "orphan",
        "name: orphan\ncommand: 'echo started; exec sleep 60'\n",
    );
    s.wait_state(&id, "RUNNING", 30);
    let (mut follower, mut out) = follow_logs(&s, &id);
    let mut line = String::new();
    out.read_line(&mut line).expect("a line");
    assert_eq!(line, "started\n");
    // The supervisor dies without writing an exit record.
    let started = s.data.path().join("jobs");
    let started = std::fs::read_dir(&started)
        .expect("jobs folder")
        .flatten()
        .map(|e| e.path().join("attempt-0/main-0/started.json"))
        .find(|p| p.exists())
        .expect("started.json");
    let started: serde_json::Value =
        serde_json::from_slice(&std::fs::read(started).expect("read")).expect("json");
    let pid = |k: &str| Pid::from_raw(started[k].as_i64().expect("pid") as i32);
    kill(pid("supervisorPid"), Signal::SIGKILL).expect("killed");
    // The task goes too, still without an exit record.
    let _ = kill(Pid::from_raw(-pid("pid").as_raw()), Signal::SIGKILL);
    // The server records the task ended, and the follower ends by itself.
    common::until(20, "the follower still waits for a lost task", || {
        follower
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still running".to_owned())
    });
    // It ended because the server recorded the loss (and retries the job).
    let j = s.job(&id);
    assert!(
        j["reason"].as_str().is_some_and(|r| r.contains("Lost")),
        "{j}"
    );
    s.ok(&["stop", &id]);
    s.wait_state(&id, "STOPPED", 30);
}

/// The cases every engine passes (tests/cases), here on the local engine;
/// tests/slurm_engine.rs runs them on Slurm.
mod local {
    engine_cases!(
        Local: openpai_ports,
        completion_rules,
        logs_followed_live_and_stop,
        retry_count,
        max_duration_and_extend,
        is_debug,
        never_fits,
    );
}
