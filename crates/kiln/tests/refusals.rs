//! What the server refuses, and how it says so (issue 16): a job no node
//! could ever hold is refused at submission naming the field; names,
//! passwords and bodies that cannot work are refused with a 4xx naming what
//! was wrong; and no error a user sees shows a path of the server's disk.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{kiln_exe, Server};
use serde_json::Value;

/// A machine without GPUs, as the one in the issue.
fn without_gpus() -> Server {
    Server::start_with(&[
        "--fake-gpus",
        "0",
        "--cpus",
        "16",
        "--memory",
        "64Gi",
        "--stop-grace",
        "1",
        "--no-sandbox",
    ])
}

/// Runs the CLI, killing it after `secs`: a client that waits forever is
/// the failure under test, not a reason for the test to hang.
fn cli_within(s: &Server, secs: u64, args: &[&str]) -> Output {
    let mut child = Command::new(kiln_exe())
        .args(args)
        .env("KILN_URL", &s.url)
        .env("KILN_DATA", s.data.path())
        .env_remove("KILN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cli started");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().expect("cli state").is_some() {
            return child.wait_with_output().expect("cli output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("cli output");
            panic!(
                "kiln {args:?} still waiting after {secs} s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn paths(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["path"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_job_no_node_can_hold_is_refused_at_submit_naming_the_field() {
    let s = without_gpus();
    let out = cli_within(&s, 30, &["run", "--gpus", "1", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "roles[0].gpus: needs 1 GPU on one node; the largest node has 0 \
             (run kiln server --fake-gpus N to try GPU jobs without one)"
        ),
        "{err}"
    );
    assert!(!err.contains("task 0"), "{err}");

    // The form's case: 99 GPUs of a model no node has.
    let (status, p) = s.api(
        "POST",
        "/jobs",
        Some(r#"{"name": "form", "gpus": 99, "gpuType": "generic", "command": "true"}"#),
    );
    assert_eq!(status, 422, "{p}");
    // Set at the top of the single-task form: the job's gpuType.
    assert_eq!(paths(&p), ["gpuType"], "{p}");
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no node has a generic GPU; this cluster has no GPUs")),
        "{p}"
    );

    let (status, p) = s.api(
        "POST",
        "/jobs",
        Some(r#"{"name": "cpus", "cpus": 64, "memory": "128Gi", "command": "true"}"#),
    );
    assert_eq!(status, 422, "{p}");
    assert_eq!(paths(&p), ["roles[0].cpus", "roles[0].memory"], "{p}");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("needs 64 CPUs on one node; the largest node has 16")),
        "{p}"
    );

    // The UI's Import converts a file without the capacity check (then its
    // form shows what does not fit); only a dry run may skip it.
    let gpu_job = r#"{"name": "imported", "gpus": 1, "command": "true"}"#;
    let (status, p) = s.api("POST", "/jobs?dryRun=true", Some(gpu_job));
    assert_eq!(status, 422, "{p}");
    let (status, p) = s.api(
        "POST",
        "/jobs?dryRun=true&checkCapacity=false",
        Some(gpu_job),
    );
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["job"]["roles"][0]["gpus"], 1, "{p}");
    let (status, p) = s.api("POST", "/jobs?checkCapacity=false", Some(gpu_job));
    assert_eq!(status, 422, "{p}");

    // Nothing was stored: nothing waits forever.
    let (_, list) = s.api("GET", "/jobs", None);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");

    // What fits is taken as before.
    let (status, p) = s.api(
        "POST",
        "/jobs",
        Some(r#"{"name": "fits", "cpus": 2, "command": "true"}"#),
    );
    assert_eq!(status, 201, "{p}");
}

/// Every file under `root` whose name is `name`.
fn find(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(find(&p, name));
        } else if e.file_name() == name {
            out.push(p);
        }
    }
    out
}

#[test]
fn errors_never_show_the_servers_data_path() {
    let s = Server::start();
    let data = s.data.path().to_string_lossy().into_owned();
    let id = s.submit("hello", "name: hello\ncommand: 'echo hi'\n");
    s.wait_state(&id, "SUCCEEDED", 30);
    let logs = format!("/jobs/{id}/tasks/main-0/logs");

    for offset in [
        "9223372036854775807",
        "9223372036854775808",
        "18446744073709551615",
    ] {
        let (status, p) = s.api("GET", &format!("{logs}?offset={offset}"), None);
        assert_eq!(status, 400, "offset {offset}: {p}");
        assert!(
            p["detail"].as_str().is_some_and(|d| d.contains("offset")),
            "{p}"
        );
        assert!(!p.to_string().contains(&data), "offset {offset}: {p}");
    }

    // A log the server cannot read (a folder where the file was): a 500
    // whose body says nothing of where the file is.
    let output = find(s.data.path(), "output.log");
    assert_eq!(output.len(), 1, "{output:?}");
    std::fs::remove_file(&output[0]).expect("log removed");
    std::fs::create_dir(&output[0]).expect("folder in its place");
    for query in ["?length=10", "?offset=1&length=10", "?tail=5"] {
        let (status, p) = s.api("GET", &format!("{logs}{query}"), None);
        assert_eq!(status, 500, "{query}: {p}");
        let body = p.to_string();
        assert!(!body.contains(&data), "{query}: {body}");
        assert!(!body.contains("output.log"), "{query}: {body}");
        assert!(body.contains("server's log"), "{query}: {body}");
    }
}

/// TensorBoard that fails says what it was given, paths of the server's
/// disk among it: that goes to the server's log, not to the user.
#[test]
fn a_tensorboard_that_fails_is_reported_without_the_servers_paths() {
    use std::os::unix::fs::PermissionsExt;
    let bin = common::shared_tempdir();
    let board = bin.path().join("tensorboard");
    // A console script, as pip installs TensorBoard's, whose "python"
    // repeats what it was given (the log folder's path among it) and fails.
    let python = bin.path().join("fakepython3");
    std::fs::write(&python, "#!/bin/sh\necho \"cannot serve $*\" >&2\nexit 1\n").expect("python");
    std::fs::write(&board, format!("#!{}\n", python.display())).expect("script");
    for f in [&python, &board] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).expect("mode");
    }
    let s = Server::start_with(&[
        "--cpus",
        "4",
        "--memory",
        "8Gi",
        "--no-sandbox",
        "--tensorboard",
        board.to_str().expect("utf-8"),
    ]);
    let data = s.data.path().to_string_lossy().into_owned();
    let id = s.submit("tb", "name: tb\ncommand: 'echo hi'\n");
    s.wait_state(&id, "SUCCEEDED", 30);
    let (status, p) = s.api("POST", &format!("/jobs/{id}/tensorboard"), None);
    assert_eq!(status, 502, "{p}");
    let body = p.to_string();
    assert!(body.contains("TensorBoard did not start"), "{body}");
    assert!(
        !body.contains(&data) && !body.contains("cannot serve"),
        "{body}"
    );
}

#[test]
fn names_passwords_and_bodies_that_cannot_work_are_refused_plainly() {
    let s = without_gpus();
    // `admin~tilde~x` could not be addressed as `tilde~x`.
    let (status, p) = s.api("POST", "/jobs", Some("name: tilde~x\ncommand: 'true'\n"));
    assert_eq!(status, 422, "{p}");
    assert_eq!(paths(&p), ["name"], "{p}");

    // Eight characters, sixteen bytes: long enough.
    let (status, p) = s.api(
        "POST",
        "/users",
        Some(r#"{"name": "dora", "password": "пароль12"}"#),
    );
    assert_eq!(status, 201, "{p}");
    // Seven characters, fourteen bytes: too short.
    let (status, p) = s.api(
        "PUT",
        "/users/dora/password",
        Some(r#"{"password": "пароль1"}"#),
    );
    assert_eq!(status, 422, "{p}");
    assert_eq!(paths(&p), ["password"], "{p}");

    // A deep JSON body: a 4xx that names JSON, not YAML.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (status, p) = s.api("POST", "/jobs", Some(&deep));
    assert!((400..500).contains(&status), "{status} {p}");
    let body = p.to_string();
    assert!(body.contains("JSON"), "{body}");
    assert!(!body.contains("YAML"), "{body}");
}
