//! Sharing the GPUs (issue 18) on a real server: a small job starts on idle
//! GPUs while a bigger one waits, and is preempted and requeued when the
//! bigger one can run; a queue lends its quota and takes it back; fair
//! share orders two users of one queue; a job that asks not to be
//! preempted never starts ahead of a blocked job without a promise.
//!
//! One server for the whole file (4 fake GPUs, 16 CPUs), scenes one after
//! another, each with users of its own so fair share starts from zero.

mod common;

use common::{events, until, Server};
use serde_json::Value;

fn user(s: &Server, name: &str) -> String {
    let out = s.ok(&["user", "add", name, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).expect("json");
    v["token"].as_str().expect("token").to_owned()
}

/// Submits a single-task job as the token's user; returns its id.
fn submit(s: &Server, token: &str, body: Value) -> String {
    let (status, v) = s.api_as(token, "POST", "/jobs", Some(&body.to_string()));
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().expect("id").to_owned()
}

fn job(name: &str, gpus: u32, command: &str) -> Value {
    serde_json::json!({"name": name, "gpus": gpus, "cpus": 1, "memory": "1Gi", "command": command})
}

fn stop(s: &Server, id: &str) {
    let (status, v) = s.api("POST", &format!("/jobs/{id}/stop"), None);
    assert_eq!(status, 200, "{v}");
}

fn state(s: &Server, id: &str) -> String {
    s.job(id)["state"].as_str().unwrap_or_default().to_owned()
}

fn has_event(j: &Value, kind: &str) -> Option<String> {
    events(j)
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, m)| m)
}

#[test]
fn sharing_the_gpus() {
    let mut s = Server::start();
    small_job_runs_on_idle_gpus_and_is_preempted(&s);
    a_users_own_wide_job_is_let_finish(&s);
    a_restart_during_the_grace_period_finishes_the_preemption(&mut s);
    // Before any queue exists: default's quota is the whole cluster.
    a_job_that_may_not_be_preempted_waits_its_turn(&s);
    a_queue_lends_its_quota_and_takes_it_back(&s);
    fair_share_orders_two_users_of_one_queue(&s);
}

fn small_job_runs_on_idle_gpus_and_is_preempted(s: &Server) {
    let (alice, bob, carol) = (user(s, "alice"), user(s, "bob"), user(s, "carol"));
    let holder = submit(s, &alice, job("holder", 2, "sleep 300"));
    s.wait_state(&holder, "RUNNING", 30);
    let big = submit(s, &bob, job("big", 4, "sleep 300"));
    s.wait_job(&big, 30, "waiting for GPUs", |j| {
        j["pendingReason"]
            .as_str()
            .is_some_and(|r| r.starts_with("needs 4 GPUs, 2 free"))
    });
    // No maxDuration, behind a blocked job, and yet it starts: the GPUs
    // are idle and it may be preempted.
    let small = submit(
        s,
        &carol,
        job(
            "small",
            1,
            "echo attempt=$KILN_ATTEMPT preempted=${KILN_PREEMPTED:-0}; sleep 300",
        ),
    );
    let j = s.wait_state(&small, "RUNNING", 30);
    assert!(has_event(&j, "opportunistic").is_some(), "{:?}", events(&j));
    assert_eq!(j["opportunistic"], true, "{j:#}");
    assert_eq!(state(s, &big), "WAITING");

    // The holder ends: big can start if small makes room, and it does.
    stop(s, &holder);
    let j = s.wait_job(&small, 30, "preempted and waiting again", |j| {
        j["attempt"] == 1 && j["state"] == "WAITING"
    });
    let why = has_event(&j, "preempted").expect("a preempted event");
    assert!(why.contains("bob~big needs its resources"), "{why}");
    assert_eq!(
        j["failedAttempts"], 0,
        "a preemption is not a failure: {j:#}"
    );
    assert_eq!(j["preemptions"], 1, "{j:#}");
    assert_eq!(j["preemptedBy"], "bob~big", "{j:#}");
    s.wait_state(&big, "RUNNING", 30);

    // When big is done, small runs again and knows it was preempted.
    stop(s, &big);
    s.wait_state(&small, "RUNNING", 30);
    until(30, "the second attempt's log", || {
        let log = s.logs(&small, "main-0");
        log.contains("attempt=1 preempted=1")
            .then_some(())
            .ok_or(log)
    });
    stop(s, &small);
    s.ended(&small, 30);
}

/// One user's 4-GPU job waits; her later 3-GPU job starts on idle GPUs.
/// When a GPU comes free, preempting the 3-GPU job would throw away more
/// than the one idle GPU costs while it finishes: it is let finish, the
/// waiting job says so, and starts when it has.
fn a_users_own_wide_job_is_let_finish(s: &Server) {
    let mallory = user(s, "mallory");
    let holder = submit(s, &mallory, job("holder", 1, "sleep 300"));
    s.wait_state(&holder, "RUNNING", 30);
    let big = submit(s, &mallory, job("big", 4, "sleep 300"));
    let wide = submit(s, &mallory, job("wide", 3, "sleep 4"));
    let j = s.wait_state(&wide, "RUNNING", 30);
    assert_eq!(j["opportunistic"], true, "{j:#}");
    stop(s, &holder);
    s.wait_job(&big, 30, "waiting for wide to finish", |j| {
        j["pendingReason"]
            .as_str()
            .is_some_and(|r| r.starts_with("letting mallory~wide finish"))
    });
    s.wait_state(&big, "RUNNING", 60);
    let j = s.job(&wide);
    assert_eq!(j["state"], "SUCCEEDED", "{j:#}");
    assert!(has_event(&j, "preempted").is_none(), "{j:#}");
    stop(s, &big);
    s.ended(&big, 30);
}

fn a_queue_lends_its_quota_and_takes_it_back(s: &Server) {
    let (dave, erin) = (user(s, "dave"), user(s, "erin"));
    let (status, v) = s.api(
        "POST",
        "/queues",
        Some(
            &serde_json::json!({
                "name": "vision",
                "quota": {"cpus": 8, "memoryMb": 32768, "gpus": [{"count": 2}]},
                "users": ["dave"]
            })
            .to_string(),
        ),
    );
    assert!(status == 200 || status == 201, "{status} {v}");
    // default keeps the other 2 GPUs. erin's second job borrows vision's.
    let e1 = submit(s, &erin, job("e1", 2, "sleep 300"));
    let e2 = submit(s, &erin, job("e2", 2, "sleep 300"));
    s.wait_state(&e1, "RUNNING", 30);
    s.wait_state(&e2, "RUNNING", 30);

    // vision's owner needs them back.
    let mut d = job("d1", 2, "sleep 300");
    d["queue"] = "vision".into();
    let d1 = submit(s, &dave, d);
    s.wait_state(&d1, "RUNNING", 30);
    let borrowed = [&e1, &e2]
        .into_iter()
        .find(|id| s.job(id)["attempt"] == 1)
        .expect("one of erin's jobs was preempted");
    let j = s.job(borrowed);
    let why = has_event(&j, "preempted").expect("preempted event");
    assert!(
        why.contains("dave~d1") && why.contains("takes back"),
        "{why}"
    );
    assert_eq!(j["state"], "WAITING");
    // It waits, saying what the queues hold.
    let reason = j["pendingReason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("queue default"), "{reason}");
    for id in [&e1, &e2, &d1] {
        stop(s, id);
        s.ended(id, 30);
    }
}

fn fair_share_orders_two_users_of_one_queue(s: &Server) {
    let (frank, grace) = (user(s, "frank"), user(s, "grace"));
    // frank has used the cluster lately; grace has not.
    let before = submit(s, &frank, job("before", 4, "sleep 2"));
    s.ended(&before, 30);
    let holder = submit(s, &frank, job("hold", 4, "sleep 300"));
    s.wait_state(&holder, "RUNNING", 30);
    // frank asks first, grace second; both need every GPU.
    let f = submit(s, &frank, job("f", 4, "sleep 300"));
    let g = submit(s, &grace, job("g", 4, "sleep 300"));
    s.wait_job(&g, 30, "first in line", |j| {
        j["pendingReason"]
            .as_str()
            .is_some_and(|r| r.contains("0 jobs ahead"))
    });
    let jf = s.job(&f);
    assert!(
        jf["pendingReason"]
            .as_str()
            .is_some_and(|r| r.contains("1 job ahead")),
        "{jf:#}"
    );
    // The queue view lists both users, lightest usage first, and the
    // waiting jobs in the order they will be taken.
    let (status, q) = s.api("GET", "/queues/default", None);
    assert_eq!(status, 200, "{q}");
    let live = &q["live"];
    let order: Vec<&str> = live["waiting"]
        .as_array()
        .expect("waiting")
        .iter()
        .filter_map(|w| w["job"].as_str())
        .collect();
    assert_eq!(order, [g.as_str(), f.as_str()], "{live:#}");
    let users: Vec<&str> = live["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["user"].as_str())
        .collect();
    let (gi, fi) = (
        users.iter().position(|u| *u == "grace"),
        users.iter().position(|u| *u == "frank"),
    );
    assert!(gi < fi && gi.is_some(), "{live:#}");
    let shown = s.ok(&["queue", "show", "default"]);
    assert!(
        shown.contains("USAGE (GPU-H)") && shown.contains("grace~g"),
        "{shown}"
    );
    stop(s, &holder);
    s.wait_state(&g, "RUNNING", 30);
    assert_eq!(state(s, &f), "WAITING");
    for id in [&g, &f] {
        stop(s, id);
        s.ended(id, 30);
    }
}

fn a_job_that_may_not_be_preempted_waits_its_turn(s: &Server) {
    // heidi has used GPUs (her holder runs), ivan has not: ivan's big job
    // goes first, and heidi's pinned job may not pass it on idle GPUs.
    let (heidi, ivan) = (user(s, "heidi"), user(s, "ivan"));
    let holder = submit(s, &heidi, job("holder", 2, "sleep 300"));
    s.wait_state(&holder, "RUNNING", 30);
    let big = submit(s, &ivan, job("big", 4, "sleep 300"));
    s.wait_state(&big, "WAITING", 30);
    let mut pinned = job("pinned", 1, "sleep 300");
    pinned["preemptible"] = false.into();
    let pinned = submit(s, &heidi, pinned);
    let j = s.wait_job(&pinned, 30, "waiting, though GPUs are idle", |j| {
        j["pendingReason"]
            .as_str()
            .is_some_and(|r| r.contains("asks not to be preempted"))
    });
    assert_eq!(j["state"], "WAITING");
    // With the holder gone, big starts; pinned waits for big, never
    // preempted, never ahead of it.
    stop(s, &holder);
    s.wait_state(&big, "RUNNING", 30);
    assert_eq!(state(s, &pinned), "WAITING");
    stop(s, &big);
    s.wait_state(&pinned, "RUNNING", 30);
    assert!(has_event(&s.job(&pinned), "preempted").is_none());
    stop(s, &pinned);
    s.ended(&pinned, 30);
}

fn a_restart_during_the_grace_period_finishes_the_preemption(s: &mut Server) {
    // Three users: the big job's (leo's) usage stays lowest, so it may
    // take the place of ken's opportunistic job.
    let (judy, ken, leo) = (user(s, "judy"), user(s, "ken"), user(s, "leo"));
    let holder = submit(s, &judy, job("holder", 2, "sleep 300"));
    s.wait_state(&holder, "RUNNING", 30);
    let big = submit(s, &leo, job("big", 4, "sleep 300"));
    s.wait_state(&big, "WAITING", 30);
    // It ignores SIGTERM, so it lives through the grace period (1 s here)
    // until SIGKILL.
    let stubborn = submit(
        s,
        &ken,
        job("stubborn", 1, "trap '' TERM; sleep 300 & wait; sleep 300"),
    );
    s.wait_state(&stubborn, "RUNNING", 30);
    stop(s, &holder);
    s.wait_job(&stubborn, 30, "being preempted", |j| {
        has_event(j, "preempted").is_some()
    });
    s.kill9();
    s.boot();
    let j = s.wait_job(&stubborn, 60, "requeued after the restart", |j| {
        j["attempt"] == 1 && matches!(j["state"].as_str(), Some("WAITING" | "RUNNING"))
    });
    assert_eq!(j["failedAttempts"], 0, "{j:#}");
    s.wait_state(&big, "RUNNING", 30);
    for id in [&big, &stubborn] {
        stop(s, id);
        s.ended(id, 30);
    }
}
