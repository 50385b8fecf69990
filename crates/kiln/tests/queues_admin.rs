//! Queues as the admin manages them and as submission sees them, through
//! the real CLI and API against one server: made, listed, granted, used,
//! refused (naming each format's own queue field), and not removed while
//! jobs wait or run in them.

mod common;

use common::Server;
use serde_json::Value;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The one field error of a 422.
fn field_error(status: u16, body: &Value) -> (String, String) {
    assert_eq!(status, 422, "{body}");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{body}");
    (
        errors[0]["path"].as_str().unwrap_or_default().to_owned(),
        errors[0]["message"].as_str().unwrap_or_default().to_owned(),
    )
}

const PAI_V1: &str = r#"{"jobName": "pai", "image": "x", "virtualCluster": "vision",
  "taskRoles": [{"name": "m", "taskNumber": 1, "cpuNumber": 1, "memoryMB": 200,
                 "gpuNumber": 0, "command": "true"}]}"#;

#[test]
fn queues_are_made_granted_used_and_kept_while_busy() {
    let s = Server::start();

    // Made with the CLI; listed with `default`, which gets what is left.
    let made = json(&s.ok(&[
        "queue",
        "add",
        "vision",
        "--gpus",
        "2",
        "--cpus",
        "8",
        "--memory",
        "16Gi",
        "--user-max-gpus",
        "1",
        "-o",
        "json",
    ]));
    assert_eq!(made["name"], "vision");
    assert_eq!(made["quota"]["cpus"], 8);
    assert_eq!(made["quota"]["memoryMb"], 16384);
    assert_eq!(made["quota"]["gpus"][0]["count"], 2);
    assert_eq!(made["userMaxGpus"], 1);
    let listed = json(&s.ok(&["queue", "ls", "-o", "json"]));
    let names: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    assert_eq!(names, ["default", "vision"]);
    assert_eq!(listed[0]["explicit"], false);
    assert_eq!(listed[0]["quota"]["gpus"][0]["count"], 2, "{listed}");
    let table = s.ok(&["queue", "ls"]);
    assert!(table.starts_with("QUEUE"), "{table}");
    assert!(table.contains("vision"), "{table}");
    let again = s.cli(&["queue", "add", "vision", "--gpus", "1"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    // bob is granted vision when made; alice is not.
    let bob = stdout(&s.cli(&["user", "add", "bob", "--queue", "vision"]))
        .trim()
        .to_owned();
    let alice = s.ok(&["user", "add", "alice"]).trim().to_owned();
    assert!(!bob.is_empty() && !alice.is_empty());
    let (status, body) = s.api(
        "POST",
        "/users",
        Some(r#"{"name": "carol", "queues": ["nope"]}"#),
    );
    let (path, message) = field_error(status, &body);
    assert_eq!(path, "queues[0]");
    assert!(
        message.contains("queue \"nope\" does not exist"),
        "{message}"
    );

    // bob's job goes in; alice's is refused, in kiln's format and OpenPAI's.
    let job = "name: busy\ncommand: sleep 120\nqueue: vision\n";
    let id = s.submit_as(&bob, "busy", job);
    assert_eq!(id, "bob~busy");
    assert_eq!(s.job(&id)["queue"], "vision");
    let (status, body) = s.api_as(&alice, "POST", "/jobs", Some(job));
    let (path, message) = field_error(status, &body);
    assert_eq!(path, "queue");
    assert_eq!(
        message,
        "you may not use queue \"vision\"; queues you may use: default"
    );
    let (status, body) = s.api_as(&alice, "POST", "/jobs?dryRun=true", Some(job));
    assert_eq!(field_error(status, &body).0, "queue");
    let (status, body) = s.api_as(&alice, "POST", "/jobs", Some(PAI_V1));
    assert_eq!(field_error(status, &body).0, "virtualCluster");
    let (status, body) = s.api_as(
        &bob,
        "POST",
        "/jobs",
        Some("name: lost\ncommand: 'true'\nqueue: speech\n"),
    );
    let (path, message) = field_error(status, &body);
    assert_eq!(path, "queue");
    assert_eq!(
        message,
        "queue \"speech\" does not exist; queues you may use: default, vision"
    );
    // The CLI says the same.
    let refused = s.cli_as(
        &alice,
        &["submit", s.write_spec("a", job).to_str().expect("utf8")],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("you may not use queue \"vision\""),
        "{}",
        stderr(&refused)
    );

    // Everyone sees the queues and which they may use; only the admin
    // changes them.
    let (status, seen) = s.api_as(&alice, "GET", "/queues/vision", None);
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["mayUse"], false);
    let (_, seen) = s.api_as(&bob, "GET", "/queues/vision", None);
    assert_eq!(seen["mayUse"], true);
    let (status, body) = s.api_as(
        &alice,
        "POST",
        "/queues",
        Some(r#"{"name": "mine", "quota": {"cpus": 1, "memoryMb": 100}}"#),
    );
    assert_eq!(status, 403, "{body}");
    let (status, _) = s.api_as(&alice, "DELETE", "/queues/vision", None);
    assert_eq!(status, 403);
    let (status, body) = s.api(
        "POST",
        "/queues",
        Some(r#"{"name": "bad~name", "quota": {"cpus": 1, "memoryMb": 100}}"#),
    );
    assert_eq!(field_error(status, &body).0, "name");

    // Not removed while bob's job waits or runs in it.
    let (status, body) = s.api("DELETE", "/queues/vision", None);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1 waiting or running job")),
        "{body}"
    );
    let rm = s.cli(&["queue", "rm", "vision"]);
    assert!(!rm.status.success());

    // Changed: alice granted, bob's grant taken, the user limit lifted,
    // the CPUs changed and the rest kept.
    let changed = json(&s.ok(&[
        "queue",
        "set",
        "vision",
        "--add-user",
        "alice",
        "--rm-user",
        "bob",
        "--user-max-gpus",
        "none",
        "--cpus",
        "6",
        "-o",
        "json",
    ]));
    assert_eq!(changed["users"], serde_json::json!(["alice"]));
    assert!(changed.get("userMaxGpus").is_none(), "{changed}");
    assert_eq!(changed["quota"]["cpus"], 6);
    assert_eq!(changed["quota"]["memoryMb"], 16384);
    assert_eq!(changed["quota"]["gpus"][0]["count"], 2);
    let (status, body) = s.api_as(&alice, "POST", "/jobs?dryRun=true", Some(job));
    assert_eq!(status, 200, "{body}");
    // A clone goes through the same check: bob lost the queue.
    let (status, body) = s.api_as(&bob, "POST", "/jobs/busy/clone", Some(""));
    assert_eq!(field_error(status, &body).0, "queue");
    let shown = s.ok(&["queue", "show", "vision"]);
    assert!(shown.contains("alice"), "{shown}");

    // Once the job has ended the queue goes; its name is free again.
    s.ok(&["stop", &id]);
    s.ended(&id, 30);
    s.ok(&["queue", "rm", "vision"]);
    let gone = s.cli(&["queue", "show", "vision"]);
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains("not found"), "{}", stderr(&gone));
    let (status, body) = s.api_as(&alice, "POST", "/jobs", Some(job));
    assert_eq!(field_error(status, &body).0, "queue");
}
