//! parse ∘ export is the identity: any valid job written out as kiln JSON,
//! kiln YAML or (where it fits) OpenPAI v1 JSON parses back to the same job.

use indexmap::IndexMap;
use kiln_spec::export::{to_json, to_openpai_v1, to_yaml};
use kiln_spec::model::{JobSpec, Mount, MountSource, PortSpec, PyTorch, RestartPolicy, TaskRole};
use kiln_spec::{parse, Format};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::Value;

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._-]{0,15}"
}

/// Text people put in descriptions and commands, YAML-hostile on purpose:
/// quotes, colons, '#', leading spaces, words like null/true/0x10.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,30}",
        Just("null".to_string()),
        Just("true".to_string()),
        Just("0x10".to_string()),
        Just("1e3".to_string()),
        Just("~".to_string()),
        Just("- a: b # c".to_string()),
        Just("  'quoted' \"and\" \\back".to_string()),
        Just("multi\nline\n\ttext".to_string()),
    ]
}

fn command() -> impl Strategy<Value = String> {
    text().prop_map(|t| format!("x{t}"))
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
    ]
}

fn extras() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    let leaf = scalar();
    let tree = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(Value::Array),
            btree_map("[a-z.]{1,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    btree_map("[a-zA-Z.]{1,8}", tree, 0..3).prop_map(|m| m.into_iter().collect())
}

fn env_map() -> impl Strategy<Value = IndexMap<String, String>> {
    btree_map("U_[A-Z0-9_]{0,6}", text(), 0..3).prop_map(|m| m.into_iter().collect())
}

/// Image references (never a transport such as `oci:` or `dir:`, which are
/// refused).
const IMAGE: &str = "img[a-z0-9._-]{0,8}(/[a-z0-9_-]{1,8})?(:[a-z0-9._-]{1,8})?";

fn ports() -> impl Strategy<Value = Vec<PortSpec>> {
    vec((0u16..3, 0u16..4), 0..3).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (fixed, count))| PortSpec {
                label: format!("p{i}"),
                // Fixed ranges sit 1000 apart, so they never overlap.
                begin_at: if fixed == 0 {
                    0
                } else {
                    20_000 + 1000 * i as u16
                },
                count,
            })
            .collect()
    })
}

fn role(i: usize) -> impl Strategy<Value = TaskRole> {
    (
        (1u32..6, 1u32..65, 100u64..100_000, 0u32..9),
        (option::of("[A-Za-z0-9]{1,8}"), option::of(IMAGE)),
        ports(),
        command(),
        (any::<bool>(), option::of(1u32..6), env_map()),
        prop_oneof![
            Just(RestartPolicy::Never),
            Just(RestartPolicy::OnFailure),
            Just(RestartPolicy::ExitCode)
        ],
        1u64..100_000,
    )
        .prop_map(
            move |(
                (replicas, cpus, memory_mb, gpus),
                (gpu_type, image),
                ports,
                command,
                (null_failed, succ, env),
                restart_policy,
                shm,
            )| TaskRole {
                name: format!("r{i}"),
                pids: None,
                replicas,
                cpus,
                memory_mb,
                shm_mb: shm.min(memory_mb),
                gpus,
                gpu_type,
                image,
                ports,
                command,
                min_failed: if null_failed { None } else { Some(replicas) },
                min_succeeded: succ.map(|s| s.min(replicas)),
                env,
                restart_policy,
            },
        )
}

fn mounts() -> impl Strategy<Value = Vec<Mount>> {
    vec(
        (any::<bool>(), "[a-z]{1,6}(/[a-z]{1,6}){0,2}", any::<bool>()),
        0..3,
    )
    .prop_map(|ms| {
        ms.into_iter()
            .enumerate()
            .map(|(i, (dataset, src, ro))| Mount {
                source: if dataset {
                    MountSource::Dataset(src.replace('/', "-"))
                } else {
                    MountSource::Space(src)
                },
                target: format!("/data{i}"),
                read_only: dataset || ro,
            })
            .collect()
    })
}

fn job() -> impl Strategy<Value = JobSpec> {
    let roles = (1usize..4).prop_flat_map(|n| (0..n).map(role).collect::<Vec<_>>());
    (
        (
            name(),
            option::of("[a-z][a-z0-9]{0,7}"),
            option::of(text()),
            option::of(name()),
            option::of(any::<bool>()),
        ),
        (
            -1000i32..=1000,
            option::of(IMAGE),
            // codeDir / outputDir: folders of the space, as parsing leaves them.
            option::of("[a-z0-9_]{1,8}(/[a-z0-9_ ]{1,8}){0,2}"),
            option::of("[a-z0-9_]{1,8}(/[a-z0-9_ ]{1,8}){0,2}"),
        ),
        (
            option::of("[A-Za-z0-9]{1,8}"),
            0u32..10,
            option::of(0u32..10),
            option::of(1u64..10_000_000),
        ),
        (option::of("/[a-z]{1,8}"), mounts()),
        (
            btree_map("U_[A-Z0-9_]{0,6}", scalar(), 0..3),
            btree_map("[a-z][a-z0-9_]{0,6}", text(), 0..2),
            extras(),
            option::of(option::of(1u32..9)),
        ),
        roles,
    )
        .prop_map(
            |(
                (name, user, description, queue, preemptible),
                (priority, image, code_dir, output_dir),
                (gpu_type, retry_count, max_restarts, max_duration_secs),
                (working_dir, mounts),
                (job_envs, secrets, extras, pytorch),
                roles,
            )| JobSpec {
                name,
                user,
                description,
                queue,
                preemptible,
                priority,
                image,
                auth_file: None,
                code_dir,
                data_dir: None,
                output_dir,
                gpu_type,
                retry_count,
                max_restarts,
                max_duration_secs,
                working_dir,
                mounts,
                job_envs: job_envs.into_iter().collect(),
                secrets: secrets.into_iter().collect(),
                extras,
                pytorch: pytorch.map(|nproc_per_node| PyTorch { nproc_per_node }),
                roles,
            },
        )
}

/// The subset of jobs OpenPAI v1 can describe.
fn v1_job() -> impl Strategy<Value = JobSpec> {
    (job(), IMAGE).prop_map(|(mut j, image)| {
        j.user = None;
        j.description = None;
        j.priority = 0;
        j.preemptible = None;
        j.image = Some(image);
        j.max_restarts = None;
        j.max_duration_secs = None;
        j.working_dir = None;
        j.mounts.clear();
        j.secrets.clear();
        j.pytorch = None;
        for r in &mut j.roles {
            r.image = None;
            r.gpu_type = None;
            r.env.clear();
            r.restart_policy = RestartPolicy::Never;
        }
        j
    })
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N runs more.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn kiln_json_round_trips(j in job()) {
        let text = to_json(&j).expect("encodes");
        let back = parse(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{:?}\n{text}", e.issues())))?;
        prop_assert_eq!(back.format, Format::Kiln);
        prop_assert!(back.warnings.is_empty(), "{:?}", back.warnings);
        prop_assert_eq!(back.job, j);
    }

    #[test]
    fn kiln_yaml_round_trips(j in job()) {
        let text = to_yaml(&j).expect("encodes");
        let back = parse(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{:?}\n{text}", e.issues())))?;
        prop_assert_eq!(back.job, j);
    }

    #[test]
    fn openpai_v1_round_trips(j in v1_job()) {
        let value = to_openpai_v1(&j).expect("representable");
        let text = value.to_string();
        let back = parse(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{:?}\n{text}", e.issues())))?;
        prop_assert_eq!(back.format, Format::OpenpaiV1);
        prop_assert_eq!(back.job, j);
    }
}

#[test]
fn v1_export_names_what_it_cannot_hold() {
    let j = parse(b"name: x\ncommand: y\nmaxDuration: 1h\nmounts: [data]\n")
        .expect("valid")
        .job;
    let err = to_openpai_v1(&j).unwrap_err();
    let paths: Vec<String> = err.issues().into_iter().map(|i| i.path).collect();
    assert_eq!(paths, ["maxDuration", "mounts", "image"]);
}

#[test]
fn every_example_round_trips_through_kiln_yaml() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for rel in [
        "crater/mnist.yaml",
        "openpai/pytorch-ddp.json",
        "openpai/mnist-v2.yaml",
        "kubeflow/pytorch-simple.yaml",
        "ailab/pytorch-distributed.yaml",
    ] {
        let j = parse(&std::fs::read(dir.join(rel)).expect("example"))
            .expect("valid")
            .job;
        let back = parse(to_yaml(&j).expect("yaml").as_bytes())
            .expect("re-parses")
            .job;
        assert_eq!(back, j, "{rel}");
    }
}
