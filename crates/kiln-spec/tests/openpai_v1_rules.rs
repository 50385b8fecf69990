//! Every rule of the OpenPAI v1 field table (seed 002), each shown failing with
//! the path of its field, and the defaults OpenPAI's rest-server applies.

use kiln_spec::{parse, Format, SpecError};
use serde_json::{json, Value};

fn valid() -> Value {
    json!({
        "jobName": "job-1",
        "image": "openpai/standard:python_3.6-pytorch_1.2.0-gpu",
        "taskRoles": [
            {"name": "master", "taskNumber": 1, "cpuNumber": 2, "memoryMB": 4096,
             "gpuNumber": 1, "command": "python train.py"},
            {"name": "worker", "taskNumber": 2, "cpuNumber": 2, "memoryMB": 4096,
             "gpuNumber": 1, "command": "python train.py",
             "portList": [{"label": "ssh", "beginAt": 0, "portNumber": 1}]}
        ]
    })
}

/// The (path, message) pairs of a spec that must be invalid.
fn errors(spec: &Value) -> Vec<(String, String)> {
    match parse(spec.to_string().as_bytes()) {
        Ok(p) => panic!("expected errors, parsed {:?}", p.job.name),
        Err(SpecError::Invalid { issues }) => {
            issues.into_iter().map(|i| (i.path, i.message)).collect()
        }
        Err(other) => panic!("expected field errors, got {other}"),
    }
}

/// Asserts that setting `pointer` to `value` fails at `path` with a message
/// containing `needle`.
fn rejects(pointer: &str, value: Value, path: &str, needle: &str) {
    let mut spec = valid();
    set(&mut spec, pointer, value.clone());
    let errs = errors(&spec);
    assert!(
        errs.iter().any(|(p, m)| p == path && m.contains(needle)),
        "{pointer} = {value}: wanted {path}: ..{needle}.., got {errs:?}"
    );
}

/// Sets the field at `pointer`, creating it in its parent object if needed.
fn set(spec: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    spec.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent is an object")
        .insert(key.to_string(), value);
}

fn remove(pointer: &str) -> Value {
    let mut spec = valid();
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    spec.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent is an object")
        .remove(key);
    spec
}

#[test]
fn the_valid_spec_parses_as_v1() {
    let parsed = parse(valid().to_string().as_bytes()).expect("valid");
    assert_eq!(parsed.format, Format::OpenpaiV1);
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    assert_eq!(parsed.job.total_tasks(), 3);
}

#[test]
fn job_name_follows_its_regex() {
    for bad in ["has space", "slash/x", "", "semi;colon", "中文"] {
        rejects("/jobName", json!(bad), "jobName", "");
    }
    // OpenPAI allows `~`; kiln's job ids are `user~name`, so it does not.
    rejects("/jobName", json!("A-b.c_d~e"), "jobName", "user~name");
    for good in ["a", "A-b.c_d", "123"] {
        let mut spec = valid();
        spec["jobName"] = json!(good);
        assert!(parse(spec.to_string().as_bytes()).is_ok(), "{good}");
    }
    rejects("/jobName", json!(5), "jobName", "must be a string");
}

#[test]
fn required_fields_are_named_when_missing() {
    for (pointer, path) in [
        ("/jobName", "jobName"),
        ("/image", "image"),
        ("/taskRoles", "taskRoles"),
        ("/taskRoles/0/name", "taskRoles[0].name"),
        ("/taskRoles/0/taskNumber", "taskRoles[0].taskNumber"),
        ("/taskRoles/0/cpuNumber", "taskRoles[0].cpuNumber"),
        ("/taskRoles/0/memoryMB", "taskRoles[0].memoryMB"),
        ("/taskRoles/0/gpuNumber", "taskRoles[0].gpuNumber"),
        ("/taskRoles/0/command", "taskRoles[0].command"),
        (
            "/taskRoles/1/portList/0/label",
            "taskRoles[1].portList[0].label",
        ),
        (
            "/taskRoles/1/portList/0/beginAt",
            "taskRoles[1].portList[0].beginAt",
        ),
        (
            "/taskRoles/1/portList/0/portNumber",
            "taskRoles[1].portList[0].portNumber",
        ),
    ] {
        let errs = errors(&remove(pointer));
        assert_eq!(
            errs,
            vec![(path.to_string(), "is required".to_string())],
            "removing {pointer}"
        );
    }
}

#[test]
fn task_roles_needs_at_least_one() {
    rejects("/taskRoles", json!([]), "taskRoles", "at least one");
    rejects("/taskRoles", json!({}), "taskRoles", "must be a list");
}

#[test]
fn role_name_follows_its_regex_and_is_unique() {
    rejects(
        "/taskRoles/1/name",
        json!("wor-ker"),
        "taskRoles[1].name",
        "'-'",
    );
    rejects(
        "/taskRoles/1/name",
        json!("master"),
        "taskRoles[1].name",
        "already used",
    );
}

#[test]
fn counts_have_their_minimums() {
    rejects(
        "/taskRoles/1/taskNumber",
        json!(0),
        "taskRoles[1].taskNumber",
        "at least 1, got 0",
    );
    rejects(
        "/taskRoles/1/cpuNumber",
        json!(0),
        "taskRoles[1].cpuNumber",
        "at least 1, got 0",
    );
    rejects(
        "/taskRoles/1/memoryMB",
        json!(64),
        "taskRoles[1].memoryMB",
        "at least 100, got 64",
    );
    rejects(
        "/taskRoles/1/gpuNumber",
        json!(-1),
        "taskRoles[1].gpuNumber",
        "at least 0, got -1",
    );
    rejects("/retryCount", json!(-1), "retryCount", "at least 0, got -1");
    rejects(
        "/taskRoles/1/cpuNumber",
        json!(1.5),
        "taskRoles[1].cpuNumber",
        "whole number",
    );
    rejects(
        "/taskRoles/1/memoryMB",
        json!("4096"),
        "taskRoles[1].memoryMB",
        "got a string",
    );
}

#[test]
fn shm_defaults_to_64_and_is_at_most_memory() {
    let parsed = parse(valid().to_string().as_bytes()).expect("valid");
    assert!(parsed.job.roles.iter().all(|r| r.shm_mb == 64));
    rejects(
        "/taskRoles/0/shmMB",
        json!(8192),
        "taskRoles[0].shmMB",
        "at most the task's memory",
    );
    rejects(
        "/taskRoles/0/shmMB",
        json!(0),
        "taskRoles[0].shmMB",
        "at least 1",
    );
}

#[test]
fn port_labels_follow_the_role_regex() {
    rejects(
        "/taskRoles/1/portList/0/label",
        json!("s s"),
        "taskRoles[1].portList[0].label",
        "' '",
    );
    rejects(
        "/taskRoles/1/portList/0/beginAt",
        json!(70000),
        "taskRoles[1].portList[0].beginAt",
        "at most 65535",
    );
    let mut spec = valid();
    spec["taskRoles"][1]["portList"] = json!([
        {"label": "a", "beginAt": 5000, "portNumber": 4},
        {"label": "a", "beginAt": 5002, "portNumber": 1}
    ]);
    let errs = errors(&spec);
    assert!(
        errs.iter()
            .any(|(p, m)| p == "taskRoles[1].portList[1].label" && m.contains("already used")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|(p, m)| p == "taskRoles[1].portList[1].beginAt" && m.contains("overlaps")),
        "{errs:?}"
    );
}

#[test]
fn command_must_not_be_empty() {
    rejects(
        "/taskRoles/0/command",
        json!(""),
        "taskRoles[0].command",
        "must not be empty",
    );
    rejects(
        "/taskRoles/0/command",
        json!("   \n"),
        "taskRoles[0].command",
        "must not be empty",
    );
}

#[test]
fn completion_counts_are_null_or_at_least_one() {
    rejects(
        "/taskRoles/1/minFailedTaskCount",
        json!(0),
        "taskRoles[1].minFailedTaskCount",
        "null or at least 1",
    );
    rejects(
        "/taskRoles/1/minSucceededTaskCount",
        json!(0),
        "taskRoles[1].minSucceededTaskCount",
        "null or at least 1",
    );
    // More than the role's tasks never triggers: FrameworkController accepts
    // it, so kiln does too, with a warning.
    let mut spec = valid();
    spec["taskRoles"][1]["minSucceededTaskCount"] = json!(3);
    let parsed = parse(spec.to_string().as_bytes()).expect("accepted");
    assert_eq!(
        parsed.warnings[0].path,
        "taskRoles[1].minSucceededTaskCount"
    );
    assert!(parsed.warnings[0].message.contains("never triggers"));

    // Defaults as OpenPAI's rest-server: minFailed 1, minSucceeded null.
    let job = parse(valid().to_string().as_bytes()).expect("valid").job;
    assert_eq!(job.roles[1].min_failed, Some(1));
    assert_eq!(job.roles[1].min_succeeded, None);

    // Explicit null keeps its meaning: failures never fail the job.
    let mut spec = valid();
    spec["taskRoles"][1]["minFailedTaskCount"] = Value::Null;
    spec["taskRoles"][1]["minSucceededTaskCount"] = json!(2);
    let job = parse(spec.to_string().as_bytes()).expect("valid").job;
    assert_eq!(job.roles[1].min_failed, None);
    assert_eq!(job.roles[1].min_succeeded, Some(2));
}

#[test]
fn folders_outside_the_space_are_refused_by_field() {
    let mut spec = valid();
    spec["codeDir"] = json!("s3://bucket/code");
    spec["dataDir"] = json!("$PAI_DEFAULT_FS_URI/../etc");
    let err = parse(spec.to_string().as_bytes()).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("codeDir") && text.contains("s3://"), "{text}");
    assert!(text.contains("dataDir") && text.contains("'..'"), "{text}");
}

#[test]
fn optional_job_fields_are_kept() {
    let mut spec = valid();
    spec["virtualCluster"] = json!("vc1");
    spec["gpuType"] = json!("V100");
    spec["retryCount"] = json!(3);
    spec["authFile"] = json!("hdfs://auth");
    spec["dataDir"] = json!("$PAI_DEFAULT_FS_URI/data");
    spec["outputDir"] = json!("$PAI_DEFAULT_FS_URI/out");
    spec["codeDir"] = json!("$PAI_DEFAULT_FS_URI/code");
    spec["jobEnvs"] = json!({"isDebug": true, "LR": 0.1});
    spec["extras"] = json!({"any": {"thing": [1, 2]}});
    let job = parse(spec.to_string().as_bytes()).expect("valid").job;
    assert_eq!(job.queue.as_deref(), Some("vc1"));
    assert_eq!(job.gpu_type.as_deref(), Some("V100"));
    assert_eq!(job.retry_count, 3);
    assert_eq!(job.auth_file.as_deref(), Some("hdfs://auth"));
    // HDFS folders are read as folders of the user's space.
    assert_eq!(job.data_dir.as_deref(), Some("data"));
    assert_eq!(job.output_dir.as_deref(), Some("out"));
    assert_eq!(job.code_dir.as_deref(), Some("code"));
    assert!(job.is_debug());
    assert_eq!(job.extras["any"]["thing"][1], 2);
}

#[test]
fn job_envs_may_not_take_over_kiln_variables() {
    for name in [
        "MASTER_PORT",
        "RANK",
        "CUDA_VISIBLE_DEVICES",
        "PAI_JOB_NAME",
        "KILN_ATTEMPT",
        "PET_NNODES",
    ] {
        let mut spec = valid();
        spec["jobEnvs"] = json!({ name: "1" });
        let errs = errors(&spec);
        assert!(
            errs.iter()
                .any(|(p, m)| p == &format!("jobEnvs.{name}") && m.contains("set by kiln")),
            "{errs:?}"
        );
    }
    rejects(
        "/jobEnvs",
        json!({"A": {"nested": 1}}),
        "jobEnvs.A",
        "string, number or boolean",
    );
    rejects(
        "/jobEnvs",
        json!({"A=B": "x"}),
        "jobEnvs[\"A=B\"]",
        "not a valid environment variable name",
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let mut spec = valid();
    spec["jobName"] = json!("bad name");
    spec["taskRoles"][0]["memoryMB"] = json!(10);
    spec["taskRoles"][1]["cpuNumber"] = json!(0);
    spec["retryCount"] = json!(-2);
    let paths: Vec<String> = errors(&spec).into_iter().map(|(p, _)| p).collect();
    for want in [
        "jobName",
        "taskRoles[0].memoryMB",
        "taskRoles[1].cpuNumber",
        "retryCount",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "{want} missing from {paths:?}"
        );
    }
}

#[test]
fn unknown_fields_are_warnings_naming_the_field() {
    let mut spec = valid();
    spec["colour"] = json!("blue");
    spec["taskRoles"][1]["gpuNumbr"] = json!(1);
    let parsed = parse(spec.to_string().as_bytes()).expect("still valid");
    let paths: Vec<&str> = parsed.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["colour", "taskRoles[1].gpuNumbr"]);
    assert!(parsed
        .warnings
        .iter()
        .all(|w| w.message.contains("unknown field")));
}

#[test]
fn a_missing_field_is_reported_once() {
    // No placeholder value may surface as a second, confusing error.
    let mut spec = remove("/taskRoles/0/memoryMB");
    spec["taskRoles"][0]["shmMB"] = json!(512);
    assert_eq!(
        errors(&spec),
        vec![(
            "taskRoles[0].memoryMB".to_string(),
            "is required".to_string()
        )]
    );
}

#[test]
fn a_broken_list_item_does_not_hide_the_ones_after_it() {
    let mut spec = valid();
    spec["taskRoles"][0] = json!(1);
    spec["taskRoles"][1]["memoryMB"] = json!(50);
    spec["taskRoles"][1]["portList"] =
        json!(["x", {"label": "a b", "beginAt": 0, "portNumber": 1}]);
    let errs = errors(&spec);
    let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "taskRoles[0]",
            "taskRoles[1].portList[0]",
            "taskRoles[1].memoryMB",
            "taskRoles[1].portList[1].label"
        ],
        "{errs:?}"
    );
}

#[test]
fn shm_is_not_blamed_for_a_bad_memory() {
    let mut spec = valid();
    spec["taskRoles"][0]["memoryMB"] = json!(50);
    let errs = errors(&spec);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "taskRoles[0].memoryMB");
}

#[test]
fn huge_role_lists_are_refused_in_one_error() {
    let mut spec = valid();
    spec["taskRoles"] = Value::Array(vec![json!({}); 50_000]);
    assert_eq!(
        errors(&spec),
        vec![(
            "taskRoles".to_string(),
            "at most 64 entries, got 50000".to_string()
        )]
    );
}

#[test]
fn error_lists_are_capped() {
    let roles: Vec<Value> = (0..64)
        .map(|i| json!({ "name": format!("r{i}") }))
        .collect();
    let mut spec = valid();
    spec["taskRoles"] = Value::Array(roles);
    let errs = errors(&spec);
    assert_eq!(errs.len(), 201);
    assert_eq!(
        errs[200],
        (String::new(), "120 more problems not shown".to_string())
    );
}
