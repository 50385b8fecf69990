//! `kiln validate` and `kiln render` as a user runs them: real binary, real
//! files, exit codes and output lines.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn kiln(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln runs");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.map(<[u8]>::to_vec);
    // Written from a thread: a refused 10 MB body must not deadlock the test.
    let writer = std::thread::spawn(move || {
        if let Some(bytes) = input {
            let _ = pipe.write_all(&bytes);
        }
    });
    let out = child.wait_with_output().expect("kiln exits");
    writer.join().expect("writer");
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_accepts_every_example_with_a_summary_line() {
    for (file, line) in [
        ("examples/crater/mnist.yaml", "valid kiln job \"crater-mnist\": 1 role, 1 task, 1 GPU"),
        ("examples/openpai/pytorch-ddp.json", "valid openpai-v1 job \"pytorch-ddp\": 2 roles, 3 tasks, 3 GPUs"),
        ("examples/openpai/mnist-v2.yaml", "valid openpai-v2 job \"mnist-v2\": 1 role, 1 task, 1 GPU"),
        ("examples/kubeflow/pytorch-simple.yaml", "valid kubeflow-pytorchjob job \"pytorch-simple\": 2 roles, 2 tasks, 0 GPUs, 4 warnings"),
        ("examples/ailab/pytorch-distributed.yaml", "valid kiln job \"ailab-pytorch-distributed\": 2 roles, 3 tasks, 0 GPUs"),
    ] {
        let out = kiln(&["validate", file], None);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim_end(), line);
    }
}

#[test]
fn validate_prints_one_line_per_error_with_its_path() {
    let bad = br#"{"jobName": "a b", "image": "i", "taskRoles": [
        {"name": "w", "taskNumber": 1, "cpuNumber": 1, "memoryMB": 64, "gpuNumber": 0, "command": "x"},
        {"name": "w", "taskNumber": 1, "cpuNumber": 0, "memoryMB": 200, "gpuNumber": 0, "command": "x"}]}"#;
    let out = kiln(&["validate", "-"], Some(bad));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    for want in [
        "error: jobName: job name \"a b\" contains ' '",
        "error: taskRoles[0].memoryMB: must be at least 100, got 64",
        "error: taskRoles[1].name: task role name \"w\" is already used by task role 0",
        "error: taskRoles[1].cpuNumber: must be at least 1, got 0",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "{want} not in\n{err}"
        );
    }
}

#[test]
fn validate_reports_syntax_errors_with_line_and_column() {
    let out = kiln(&["validate", "-"], Some(b"name: x\ncommand: [a\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: line 3, column 1: YAML syntax error:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn validate_refuses_huge_input_and_missing_files_clearly() {
    let huge = vec![b'a'; 10 * 1024 * 1024];
    let out = kiln(&["validate", "-"], Some(&huge));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("too large: at most 262144 bytes"),
        "{}",
        text(&out.stderr)
    );

    let out = kiln(&["validate", "no/such/file.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot open no/such/file.yaml"));
}

#[test]
fn validate_prints_warnings_on_stderr() {
    let out = kiln(
        &["validate", "-"],
        Some(b"name: x\ncommand: y\ncolour: red\n"),
    );
    assert!(out.status.success());
    assert_eq!(
        text(&out.stderr).trim_end(),
        "warning: colour: unknown field, ignored"
    );
}

#[test]
fn render_json_has_each_task_with_its_environment() {
    let out = kiln(
        &[
            "render",
            "examples/ailab/pytorch-distributed.yaml",
            "-o",
            "json",
            "--user",
            "alice",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["format"], "kiln");
    assert_eq!(v["job"]["name"], "ailab-pytorch-distributed");
    let tasks = v["tasks"].as_array().expect("tasks");
    let ids: Vec<&str> = tasks.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, ["master-0", "worker-0", "worker-1"]);
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t["env"]["RANK"], i.to_string());
        assert_eq!(t["env"]["WORLD_SIZE"], "3");
        assert_eq!(t["env"]["PAI_JOB_NAME"], "alice~ailab-pytorch-distributed");
        assert_eq!(t["env"]["KILN_TASK_ID"], ids[i]);
    }
}

#[test]
fn render_text_shows_commands_and_redacts_secrets() {
    let out = kiln(
        &["render", "examples/openpai/mnist-v2.yaml", "--user", "bob"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.starts_with("job bob~mnist-v2 (openpai-v2 format)"), "{s}");
    assert!(
        s.contains("  $ python train.py --epochs 2 --lr 0.01"),
        "{s}"
    );
    assert!(s.contains("  KILN_SECRET_wandb=<redacted>"), "{s}");
    assert!(!s.contains("not-a-real-key"));
}

#[test]
fn render_refuses_invalid_specs_like_validate() {
    let out = kiln(&["render", "-"], Some(b"name: x\n"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim_end(), "error: command: is required");
}

#[test]
fn render_converts_between_formats() {
    let out = kiln(
        &["render", "examples/openpai/pytorch-ddp.json", "-o", "yaml"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The kiln YAML it prints is itself a valid spec describing the same job.
    let again = kiln(&["render", "-", "-o", "openpai-v1"], Some(&out.stdout));
    assert!(again.status.success(), "{}", text(&again.stderr));
    let v1: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    let orig: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("examples/openpai/pytorch-ddp.json")).expect("example"),
    )
    .expect("json");
    assert_eq!(
        v1["taskRoles"][1]["portList"],
        orig["taskRoles"][1]["portList"]
    );
    assert_eq!(v1["jobEnvs"], orig["jobEnvs"]);

    let out = kiln(
        &["render", "examples/crater/mnist.yaml", "-o", "openpai-v1"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error: maxDuration: OpenPAI v1 has no maximum duration"));
}

#[test]
fn an_unreachable_server_is_one_clear_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["ls"])
        .env("KILN_URL", "http://127.0.0.1:1")
        .env("KILN_TOKEN", "kiln_x")
        .output()
        .expect("ran");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot reach the kiln server at http://127.0.0.1:1"),
        "{err}"
    );
}
