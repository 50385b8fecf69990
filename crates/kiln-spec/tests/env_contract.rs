//! The environment of DESIGN.md, variable by variable, with exact values: the
//! whole map is compared, so a missing, extra or misspelt variable fails.

use indexmap::IndexMap;
use kiln_spec::env::{render_env, RenderContext, TaskPlacement};
use kiln_spec::{parse, JobId, JobSpec, TaskId};

fn job(text: &str) -> JobSpec {
    parse(text.as_bytes()).expect("valid spec").job
}

fn place(task: &str, host: &str, gpus: &[u32], ports: &[(&str, &[u16])]) -> TaskPlacement {
    TaskPlacement {
        task: task.parse().expect("task id"),
        host_ip: host.into(),
        gpus: gpus.to_vec(),
        ports: ports
            .iter()
            .map(|(l, p)| (l.to_string(), p.to_vec()))
            .collect(),
    }
}

fn ctx(job_id: &str, master_port: u16, placement: Vec<TaskPlacement>) -> RenderContext {
    RenderContext {
        job_id: job_id.parse::<JobId>().expect("job id"),
        attempt: 1,
        default_fs_uri: "file:///mnt".into(),
        space_dir: Some("/mnt".into()),
        output_dir: "/mnt/Output/run".into(),
        tensorboard_dir: "/mnt/Output/run/tensorboard".into(),
        master_port,
        placement,
    }
}

fn expect(pairs: &[(&str, &str)]) -> IndexMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Compares as sorted maps so a failure shows exactly which variables differ.
fn assert_env(got: &IndexMap<String, String>, want: IndexMap<String, String>) {
    let got: std::collections::BTreeMap<_, _> = got.iter().collect();
    let want: std::collections::BTreeMap<_, _> = want.iter().collect();
    assert_eq!(got, want);
}

const DDP: &str = r#"
name: ddp
pytorch: {nprocPerNode: 2}
roles:
  - name: master
    gpus: 2
    command: torchrun train.py
  - name: worker
    replicas: 2
    gpus: 2
    command: torchrun train.py
"#;

#[test]
fn one_master_two_workers() {
    let job = job(DDP);
    let ctx = ctx(
        "alice~ddp",
        31234,
        vec![
            place("master-0", "10.0.0.1", &[0, 1], &[]),
            place("worker-0", "10.0.0.2", &[2, 3], &[]),
            place("worker-1", "10.0.0.3", &[0, 3], &[]),
        ],
    );
    let tasks = render_env(&job, &ctx).expect("rendered");
    let ids: Vec<String> = tasks.iter().map(|t| t.task.to_string()).collect();
    assert_eq!(ids, ["master-0", "worker-0", "worker-1"]);

    let common = [
        ("PAI_JOB_NAME", "alice~ddp"),
        ("PAI_USER_NAME", "alice"),
        ("PAI_DEFAULT_FS_URI", "file:///mnt"),
        ("PAI_TASK_ROLE_COUNT", "2"),
        ("PAI_TASK_ROLE_LIST", "master,worker"),
        ("PAI_TASK_ROLE_TASK_COUNT_master", "1"),
        ("PAI_TASK_ROLE_TASK_COUNT_worker", "2"),
        ("PAI_RESOURCE_master", "2,1,1024,64"),
        ("PAI_RESOURCE_worker", "2,1,1024,64"),
        ("PAI_MIN_FAILED_TASK_COUNT_master", "1"),
        ("PAI_MIN_FAILED_TASK_COUNT_worker", "1"),
        ("PAI_MIN_SUCCEEDED_TASK_COUNT_master", "-1"),
        ("PAI_MIN_SUCCEEDED_TASK_COUNT_worker", "-1"),
        ("PAI_HOST_IP_master_0", "10.0.0.1"),
        ("PAI_HOST_IP_worker_0", "10.0.0.2"),
        ("PAI_HOST_IP_worker_1", "10.0.0.3"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "31234"),
        ("WORLD_SIZE", "3"),
        ("LOCAL_RANK", "0"),
        ("PET_NNODES", "3"),
        ("PET_MASTER_ADDR", "10.0.0.1"),
        ("PET_MASTER_PORT", "31234"),
        ("PET_NPROC_PER_NODE", "2"),
        ("PYTHONUNBUFFERED", "1"),
        ("CUDA_DEVICE_ORDER", "PCI_BUS_ID"),
        ("KILN_JOB_ID", "alice~ddp"),
        ("KILN_ATTEMPT", "1"),
        ("KILN_OUTPUT_DIR", "/mnt/Output/run"),
        ("KILN_TENSORBOARD_DIR", "/mnt/Output/run/tensorboard"),
    ];
    let per_task = [
        ("master", "0", "0", "0,1", "master-0"),
        ("worker", "0", "1", "2,3", "worker-0"),
        ("worker", "1", "2", "0,3", "worker-1"),
    ];
    for (t, (role, index, rank, gpus, id)) in tasks.iter().zip(per_task) {
        let mut want = expect(&common);
        want.extend(expect(&[
            ("PAI_CURRENT_TASK_ROLE_NAME", role),
            ("PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX", index),
            ("RANK", rank),
            ("PET_NODE_RANK", rank),
            ("CUDA_VISIBLE_DEVICES", gpus),
            ("NVIDIA_VISIBLE_DEVICES", gpus),
            ("KILN_TASK_ID", id),
        ]));
        assert_env(&t.env, want);
    }
}

#[test]
fn master_is_rank_zero_wherever_it_is_listed() {
    let job = job(
        "name: j\nroles:\n  - {name: worker, replicas: 2, command: x}\n  - {name: master, command: x}\n",
    );
    let ctx = ctx(
        "bob~j",
        40000,
        vec![
            place("worker-0", "h1", &[], &[]),
            place("worker-1", "h2", &[], &[]),
            place("master-0", "h3", &[], &[]),
        ],
    );
    let tasks = render_env(&job, &ctx).expect("rendered");
    let ranks: Vec<(String, &str)> = tasks
        .iter()
        .map(|t| (t.task.to_string(), t.env["RANK"].as_str()))
        .collect();
    assert_eq!(
        ranks,
        [
            ("worker-0".to_string(), "1"),
            ("worker-1".to_string(), "2"),
            ("master-0".to_string(), "0")
        ]
    );
    assert!(tasks.iter().all(|t| t.env["MASTER_ADDR"] == "h3"));
    // No GPUs placed: the lists are empty strings, not absent.
    assert!(tasks
        .iter()
        .all(|t| t.env["CUDA_VISIBLE_DEVICES"].is_empty()));
    assert!(tasks
        .iter()
        .all(|t| t.env["NVIDIA_VISIBLE_DEVICES"].is_empty()));
    // nprocPerNode unset and no GPUs: one process per task.
    assert!(tasks.iter().all(|t| t.env["PET_NPROC_PER_NODE"] == "1"));
}

#[test]
fn without_a_master_ranks_follow_spec_order() {
    let job = job("name: j\nroles:\n  - {name: ps, command: x}\n  - {name: trainer, replicas: 2, command: x, gpus: 1}\n");
    let ctx = ctx(
        "bob~j",
        40000,
        vec![
            place("ps-0", "h1", &[], &[]),
            place("trainer-0", "h2", &[0], &[]),
            place("trainer-1", "h2", &[1], &[]),
        ],
    );
    let tasks = render_env(&job, &ctx).expect("rendered");
    let ranks: Vec<&str> = tasks.iter().map(|t| t.env["RANK"].as_str()).collect();
    assert_eq!(ranks, ["0", "1", "2"]);
    assert!(tasks.iter().all(|t| t.env["MASTER_ADDR"] == "h1"));
    assert_eq!(tasks[1].env["PET_NPROC_PER_NODE"], "1");
}

const OPENPAI_PORTS: &str = r#"{
  "jobName": "tf-ps",
  "image": "tensorflow/tensorflow",
  "taskRoles": [
    {"name": "ps", "taskNumber": 1, "cpuNumber": 2, "memoryMB": 2048, "shmMB": 128, "gpuNumber": 0,
     "portList": [{"label": "grpc", "beginAt": 0, "portNumber": 1}],
     "command": "python ps.py", "minFailedTaskCount": null},
    {"name": "worker", "taskNumber": 2, "cpuNumber": 4, "memoryMB": 8192, "gpuNumber": 1,
     "portList": [{"label": "grpc", "beginAt": 0, "portNumber": 1},
                  {"label": "http", "beginAt": 0, "portNumber": 2}],
     "command": "python worker.py", "minSucceededTaskCount": 2}
  ],
  "jobEnvs": {"isDebug": false, "LR": 0.5, "MODE": "train"}
}"#;

#[test]
fn two_role_openpai_job_with_ports() {
    let job = job(OPENPAI_PORTS);
    let ctx = ctx(
        "carol~tf-ps",
        29400,
        vec![
            place("ps-0", "192.168.1.10", &[], &[("grpc", &[30001])]),
            place(
                "worker-0",
                "192.168.1.11",
                &[3],
                &[("grpc", &[30002]), ("http", &[30003, 30004])],
            ),
            place(
                "worker-1",
                "192.168.1.12",
                &[5],
                &[("grpc", &[30005]), ("http", &[30006, 30007])],
            ),
        ],
    );
    let tasks = render_env(&job, &ctx).expect("rendered");
    let common = [
        ("PAI_JOB_NAME", "carol~tf-ps"),
        ("PAI_USER_NAME", "carol"),
        ("PAI_DEFAULT_FS_URI", "file:///mnt"),
        ("PAI_TASK_ROLE_COUNT", "2"),
        ("PAI_TASK_ROLE_LIST", "ps,worker"),
        ("PAI_TASK_ROLE_TASK_COUNT_ps", "1"),
        ("PAI_TASK_ROLE_TASK_COUNT_worker", "2"),
        ("PAI_RESOURCE_ps", "0,2,2048,128"),
        ("PAI_RESOURCE_worker", "1,4,8192,64"),
        ("PAI_MIN_FAILED_TASK_COUNT_ps", "-1"),
        ("PAI_MIN_FAILED_TASK_COUNT_worker", "1"),
        ("PAI_MIN_SUCCEEDED_TASK_COUNT_ps", "-1"),
        ("PAI_MIN_SUCCEEDED_TASK_COUNT_worker", "2"),
        ("PAI_HOST_IP_ps_0", "192.168.1.10"),
        ("PAI_HOST_IP_worker_0", "192.168.1.11"),
        ("PAI_HOST_IP_worker_1", "192.168.1.12"),
        ("PAI_PORT_LIST_ps_0_grpc", "30001"),
        ("PAI_PORT_LIST_worker_0_grpc", "30002"),
        ("PAI_PORT_LIST_worker_0_http", "30003,30004"),
        ("PAI_PORT_LIST_worker_1_grpc", "30005"),
        ("PAI_PORT_LIST_worker_1_http", "30006,30007"),
        ("MASTER_ADDR", "192.168.1.10"),
        ("MASTER_PORT", "29400"),
        ("WORLD_SIZE", "3"),
        ("LOCAL_RANK", "0"),
        ("PET_NNODES", "3"),
        ("PET_MASTER_ADDR", "192.168.1.10"),
        ("PET_MASTER_PORT", "29400"),
        ("PYTHONUNBUFFERED", "1"),
        ("CUDA_DEVICE_ORDER", "PCI_BUS_ID"),
        ("KILN_JOB_ID", "carol~tf-ps"),
        ("KILN_ATTEMPT", "1"),
        ("KILN_OUTPUT_DIR", "/mnt/Output/run"),
        ("KILN_TENSORBOARD_DIR", "/mnt/Output/run/tensorboard"),
        ("isDebug", "false"),
        ("LR", "0.5"),
        ("MODE", "train"),
    ];
    let per_task = [
        ("ps", "0", "0", "", "ps-0", "1"),
        ("worker", "0", "1", "3", "worker-0", "1"),
        ("worker", "1", "2", "5", "worker-1", "1"),
    ];
    for (t, (role, index, rank, gpus, id, nproc)) in tasks.iter().zip(per_task) {
        let mut want = expect(&common);
        want.extend(expect(&[
            ("PAI_CURRENT_TASK_ROLE_NAME", role),
            ("PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX", index),
            ("RANK", rank),
            ("PET_NODE_RANK", rank),
            ("PET_NPROC_PER_NODE", nproc),
            ("CUDA_VISIBLE_DEVICES", gpus),
            ("NVIDIA_VISIBLE_DEVICES", gpus),
            ("KILN_TASK_ID", id),
        ]));
        assert_env(&t.env, want);
    }
}

#[test]
fn role_env_and_secrets_reach_only_their_tasks() {
    let job = job(
        "name: j\nsecrets: {token: s3cret}\njobEnvs: {SHARED: a}\nroles:\n  - {name: a, command: x, env: {ONLY_A: '1', SHARED: b}}\n  - {name: b, command: x}\n",
    );
    let ctx = ctx(
        "u~j",
        1234,
        vec![place("a-0", "h", &[], &[]), place("b-0", "h", &[], &[])],
    );
    let tasks = render_env(&job, &ctx).expect("rendered");
    assert_eq!(tasks[0].env["ONLY_A"], "1");
    assert_eq!(tasks[0].env["SHARED"], "b", "role env overrides jobEnvs");
    assert!(!tasks[1].env.contains_key("ONLY_A"));
    assert_eq!(tasks[1].env["SHARED"], "a");
    assert!(tasks.iter().all(|t| t.env["KILN_SECRET_token"] == "s3cret"));
    let shown = render_env(&job.redacted(), &ctx).expect("rendered");
    assert_eq!(shown[0].env["KILN_SECRET_token"], "<redacted>");
}

#[test]
fn a_placement_that_does_not_fit_is_refused() {
    let job = job(DDP);
    let short = ctx("a~ddp", 1, vec![place("master-0", "h", &[0, 1], &[])]);
    assert!(render_env(&job, &short).is_err());
    let wrong_gpus = ctx(
        "a~ddp",
        1,
        vec![
            place("master-0", "h", &[0], &[]),
            place("worker-0", "h", &[1, 2], &[]),
            place("worker-1", "h", &[3, 4], &[]),
        ],
    );
    let err = render_env(&job, &wrong_gpus).unwrap_err().to_string();
    assert!(err.contains("master-0 needs 2 GPUs"), "{err}");
    let _: TaskId = "worker-0".parse().expect("id");
}

#[test]
fn openpai_folders_appear_as_paths_in_the_space() {
    let job = job(
        r#"{"jobName": "run", "image": "x", "codeDir": "$PAI_DEFAULT_FS_URI/code",
            "dataDir": "hdfs://nn:9000/data/mnist", "outputDir": "$PAI_DEFAULT_FS_URI/Output/$jobName",
            "taskRoles": [{"name": "main", "taskNumber": 1, "cpuNumber": 1,
              "memoryMB": 100, "gpuNumber": 0, "command": "true"}]}"#,
    );
    let c = ctx(
        "alice~run",
        30000,
        vec![place("main-0", "127.0.0.1", &[], &[])],
    );
    let env = &render_env(&job, &c).expect("rendered")[0].env;
    assert_eq!(env["PAI_CODE_DIR"], "/mnt/code");
    assert_eq!(env["PAI_DATA_DIR"], "/mnt/data/mnist");
    assert_eq!(env["PAI_OUTPUT_DIR"], "/mnt/Output/run");
    // Unsandboxed there is no space inside the task to point at.
    let bare = RenderContext {
        space_dir: None,
        ..c
    };
    let env = &render_env(&job, &bare).expect("rendered")[0].env;
    assert!(!env.contains_key("PAI_CODE_DIR") && !env.contains_key("PAI_DATA_DIR"));
    // Jobs that name no folders get no such variables.
    let plain = self::job("name: plain\ncommand: 'true'\n");
    let c = ctx(
        "alice~plain",
        30000,
        vec![place("main-0", "127.0.0.1", &[], &[])],
    );
    let env = &render_env(&plain, &c).expect("rendered")[0].env;
    assert!(!env
        .keys()
        .any(|k| k.ends_with("_DIR") && k.starts_with("PAI_")));
}
