//! Who may do what: tokens, passwords, and each user seeing only their own
//! jobs (another user's job is "not found", never "forbidden").

mod common;

use common::Server;
use serde_json::Value;

fn token_of(out: &str) -> String {
    let v: Value = serde_json::from_str(out).expect("json");
    v["token"].as_str().expect("token").to_owned()
}

#[test]
fn users_see_and_touch_only_their_own_jobs() {
    let s = Server::start();
    let alice = token_of(&s.ok(&["user", "add", "alice", "-o", "json"]));
    let bob = s.ok(&["user", "add", "bob"]).trim().to_owned();
    assert!(bob.starts_with("kiln_"), "{bob}");

    // No token, a wrong token: 401 with a problem document.
    let (status, p) = s.api_as("", "GET", "/jobs", None);
    assert_eq!(status, 401, "{p}");
    assert!(p["detail"].as_str().expect("detail").contains("token"));
    assert_eq!(s.api_as("kiln_nonsense", "GET", "/jobs", None).0, 401);
    let out = s.cli_as("kiln_nonsense", &["ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication failed"));

    // Alice's job is hers.
    let spec = s.write_spec("a", "name: mine\ncommand: 'sleep 300'\n");
    let out = s.cli_as(&alice, &["submit", spec.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice~mine");
    s.wait_state("alice~mine", "RUNNING", 30);
    assert_eq!(s.api_as(&alice, "GET", "/jobs/mine", None).0, 200);

    // Bob cannot see it, stop it, clone it, read its logs or delete it.
    for (method, path) in [
        ("GET", "/jobs/alice~mine"),
        ("GET", "/jobs/alice~mine/spec"),
        ("GET", "/jobs/alice~mine/events"),
        ("POST", "/jobs/alice~mine/stop"),
        ("POST", "/jobs/alice~mine/clone"),
        ("PATCH", "/jobs/alice~mine"),
        ("DELETE", "/jobs/alice~mine"),
        ("GET", "/jobs/alice~mine/tasks/main-0/logs"),
    ] {
        let (status, p) = s.api_as(&bob, method, path, Some("{}"));
        assert_eq!(status, 404, "{method} {path}: {p}");
    }
    let (_, list) = s.api_as(&bob, "GET", "/jobs?user=alice", None);
    assert_eq!(list["items"].as_array().expect("items").len(), 0);
    // Bob's "mine" is his own.
    let spec = s.write_spec("b", "name: mine\ncommand: 'true'\n");
    let out = s.cli_as(&bob, &["submit", spec.to_str().expect("utf8")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "bob~mine");

    // The admin sees and acts on everyone's.
    let (_, all) = s.api("GET", "/jobs", None);
    assert_eq!(all["items"].as_array().expect("items").len(), 2);
    s.ok(&["stop", "alice~mine"]);
    s.wait_state("alice~mine", "STOPPED", 30);

    // Only the admin manages users.
    let (status, _) = s.api_as(&bob, "POST", "/users", Some(r#"{"name": "eve"}"#));
    assert_eq!(status, 404);
    assert_eq!(s.api_as(&bob, "GET", "/users", None).0, 404);
    let users = s.ok(&["user", "ls"]);
    assert!(users.contains("alice") && users.contains("bob") && users.contains("admin"));
    // A user may issue themselves another token, not someone else's.
    let again = token_of(&String::from_utf8_lossy(
        &s.cli_as(&bob, &["user", "token", "-o", "json"]).stdout,
    ));
    assert_eq!(s.api_as(&again, "GET", "/me", None).1["name"], "bob");
    assert_eq!(s.api_as(&bob, "POST", "/users/alice/tokens", None).0, 404);
    // Duplicate and malformed user names.
    assert_eq!(s.api("POST", "/users", Some(r#"{"name": "bob"}"#)).0, 409);
    let (status, p) = s.api("POST", "/users", Some(r#"{"name": "../root"}"#));
    assert_eq!(status, 422, "{p}");
}

#[test]
fn passwords_log_in_for_a_fresh_token() {
    let s = Server::start();
    let mut child = std::process::Command::new(common::kiln_exe())
        .args(["user", "add", "carol", "--password-stdin"])
        .env("KILN_URL", &s.url)
        .env("KILN_DATA", s.data.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawned");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"correct horse battery\n")
        .expect("written");
    assert!(child.wait_with_output().expect("ran").status.success());

    let (status, v) = s.api_as(
        "",
        "POST",
        "/login",
        Some(r#"{"name": "carol", "password": "correct horse battery"}"#),
    );
    assert_eq!(status, 200, "{v}");
    let token = v["token"].as_str().expect("token");
    assert_eq!(s.api_as(token, "GET", "/me", None).1["name"], "carol");
    for body in [
        r#"{"name": "carol", "password": "wrong"}"#,
        r#"{"name": "nobody", "password": "correct horse battery"}"#,
    ] {
        assert_eq!(s.api_as("", "POST", "/login", Some(body)).0, 401);
    }
    assert_eq!(s.api_as("", "POST", "/login", Some("{not json")).0, 400);
    // Short passwords are refused.
    assert_eq!(
        s.api(
            "POST",
            "/users",
            Some(r#"{"name": "dan", "password": "short"}"#)
        )
        .0,
        422
    );

    // The admin, who has no password at first, sets one with `kiln user
    // passwd` and can then sign in to the web UI; carol changes her own,
    // and the old one stops working; she cannot change the admin's.
    let passwd = |args: &[&str], token: Option<&str>, password: &[u8]| {
        let mut cmd = std::process::Command::new(common::kiln_exe());
        cmd.args(args)
            .env("KILN_URL", &s.url)
            .env("KILN_DATA", s.data.path())
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(t) = token {
            cmd.env("KILN_TOKEN", t);
        }
        let mut child = cmd.spawn().expect("spawned");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(password)
            .expect("written");
        child.wait_with_output().expect("ran")
    };
    let login = |name: &str, password: &str| {
        let body = serde_json::json!({"name": name, "password": password}).to_string();
        s.api_as("", "POST", "/login", Some(&body)).0
    };
    assert_eq!(login("admin", "admin-secret-1"), 401);
    assert!(passwd(&["user", "passwd"], None, b"admin-secret-1\n")
        .status
        .success());
    assert_eq!(login("admin", "admin-secret-1"), 200);
    assert!(
        passwd(&["user", "passwd"], Some(token), b"a new horse battery\n")
            .status
            .success()
    );
    assert_eq!(login("carol", "a new horse battery"), 200);
    assert_eq!(login("carol", "correct horse battery"), 401);
    // The new password signed her out of the browser she changed it in.
    assert_eq!(s.api_as(token, "GET", "/me", None).0, 401);
    let body = r#"{"name": "carol", "password": "a new horse battery"}"#;
    let (_, v) = s.api_as("", "POST", "/login", Some(body));
    let token = v["token"].as_str().expect("token");
    let out = passwd(&["user", "passwd", "admin"], Some(token), b"taken over!!\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert_eq!(login("admin", "taken over!!"), 401);
    let out = passwd(&["user", "passwd"], None, b"short\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8"));
}

#[test]
fn sign_ins_end_at_logout_and_tokens_can_be_revoked() {
    let s = Server::start();
    let (status, v) = s.api(
        "POST",
        "/users",
        Some(r#"{"name": "erin", "password": "erin's password"}"#),
    );
    assert_eq!(status, 201, "{v}");
    let api_token = v["token"].as_str().expect("token").to_owned();
    let body = r#"{"name": "erin", "password": "erin's password"}"#;
    let sign_in = |s: &Server| {
        let (status, v) = s.api_as("", "POST", "/login", Some(body));
        assert_eq!(status, 200, "{v}");
        v["token"].as_str().expect("token").to_owned()
    };
    // Signing out ends that sign-in only.
    let browser = sign_in(&s);
    let other = sign_in(&s);
    assert_eq!(s.api_as(&browser, "POST", "/logout", None).0, 204);
    let (status, v) = s.api_as(&browser, "GET", "/me", None);
    assert_eq!(status, 401);
    assert!(
        v["detail"].as_str().is_some_and(|d| d.contains("revoked")),
        "{v}"
    );
    assert_eq!(s.api_as(&other, "GET", "/me", None).0, 200);
    assert_eq!(s.api_as(&api_token, "GET", "/me", None).0, 200);

    // Another user cannot revoke erin's tokens, nor learn she exists.
    let (_, v) = s.api("POST", "/users", Some(r#"{"name": "frank"}"#));
    let frank = v["token"].as_str().expect("token").to_owned();
    assert_eq!(
        s.api_as(&frank, "DELETE", "/users/erin/tokens", None).0,
        404
    );
    assert_eq!(s.api("DELETE", "/users/nobody/tokens", None).0, 404);

    // The admin revokes everything of hers, with the CLI.
    let out = s.cli(&["user", "revoke", "erin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "revoked 2 tokens of erin (API tokens and web sign-ins)"
    );
    for t in [&other, &api_token] {
        assert_eq!(s.api_as(t, "GET", "/me", None).0, 401);
    }
    assert_eq!(s.api_as(&frank, "GET", "/me", None).0, 200);
    // Her password still signs her in afresh.
    let again = sign_in(&s);
    assert_eq!(s.api_as(&again, "GET", "/me", None).1["name"], "erin");
}

#[test]
fn the_openapi_document_covers_every_route() {
    let s = Server::start();
    // Public: tools read it before they have a token.
    let (status, doc) = s.api_as("", "GET", "/openapi.json", None);
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/api/v1/jobs", "post"),
        ("/api/v1/jobs", "get"),
        ("/api/v1/jobs/{id}", "get"),
        ("/api/v1/jobs/{id}", "patch"),
        ("/api/v1/jobs/{id}", "delete"),
        ("/api/v1/jobs/{id}/spec", "get"),
        ("/api/v1/jobs/{id}/stop", "post"),
        ("/api/v1/jobs/{id}/clone", "post"),
        ("/api/v1/jobs/{id}/events", "get"),
        ("/api/v1/jobs/{id}/tasks/{task}/logs", "get"),
        ("/api/v1/nodes", "get"),
        ("/api/v1/users", "post"),
        ("/api/v1/login", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let job = &doc["components"]["schemas"]["JobView"]["properties"];
    for field in [
        "id",
        "name",
        "user",
        "state",
        "pendingReason",
        "attempt",
        "tasks",
    ] {
        assert!(job.get(field).is_some(), "JobView.{field} missing");
    }
    let task = &doc["components"]["schemas"]["TaskView"]["properties"];
    for field in ["id", "role", "index", "state", "exitCode", "gpus"] {
        assert!(task.get(field).is_some(), "TaskView.{field} missing");
    }
}
