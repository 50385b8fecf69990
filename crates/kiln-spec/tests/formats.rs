//! Format-specific reading: OpenPAI v2, Kubeflow PyTorchJob, kiln's own, and
//! detection by content.

use kiln_spec::model::{MountSource, RestartPolicy};
use kiln_spec::{parse, Format, Parsed, SpecError};

fn ok(text: &str) -> Parsed {
    match parse(text.as_bytes()) {
        Ok(p) => p,
        Err(e) => panic!("expected valid, got {:?}", e.issues()),
    }
}

fn errs(text: &str) -> Vec<String> {
    match parse(text.as_bytes()) {
        Ok(p) => panic!("expected invalid, parsed {:?}", p.job),
        Err(e) => e.issues().iter().map(ToString::to_string).collect(),
    }
}

fn has(list: &[String], needle: &str) -> bool {
    list.iter().any(|l| l.contains(needle))
}

const V2: &str = r#"
protocolVersion: 2
name: v2job
type: job
prerequisites:
  - {name: img, type: dockerimage, uri: "pytorch/pytorch:2.4"}
  - {name: img2, type: dockerimage, uri: "other/image:1"}
parameters: {epochs: 3, nested: {lr: 0.1}}
secrets: {api: hunter2, docker: {password: pw}}
jobRetryCount: 2
taskRoles:
  master:
    instances: 1
    dockerImage: img
    resourcePerInstance: {cpu: 2, memoryMB: 2048, gpu: 1, ports: {http: 2}}
    commands:
      - python train.py --epochs <% $parameters.epochs %> --lr <%$parameters.nested.lr%>
      - login --password '<% $secrets.docker.password %>' --key <% $secrets.api %>
  worker:
    instances: 3
    completion: {minFailedInstances: 2, minSucceededInstances: -1}
    dockerImage: img2
    extraContainerOptions: {shmMB: 256}
    resourcePerInstance: {cpu: 1, memoryMB: 1024, gpu: 0}
    commands: [python worker.py]
deployments:
  - name: first
    taskRoles:
      worker: {preCommands: [echo first]}
  - name: chosen
    taskRoles:
      worker: {preCommands: [pip install -r req.txt], postCommands: [echo done]}
defaults: {virtualCluster: vc2, deployment: chosen}
extras:
  hivedScheduler: {taskRoles: {master: {skuType: A100}}}
"#;

#[test]
fn openpai_v2_maps_every_section() {
    let p = ok(V2);
    assert_eq!(p.format, Format::OpenpaiV2);
    let j = &p.job;
    assert_eq!(j.name, "v2job");
    assert_eq!(j.queue.as_deref(), Some("vc2"));
    assert_eq!(j.retry_count, 2);
    assert_eq!(j.image.as_deref(), Some("pytorch/pytorch:2.4"));
    let (m, w) = (&j.roles[0], &j.roles[1]);
    assert_eq!(
        (m.name.as_str(), m.replicas, m.cpus, m.memory_mb, m.gpus),
        ("master", 1, 2, 2048, 1)
    );
    assert_eq!(m.gpu_type.as_deref(), Some("A100"));
    assert_eq!(m.ports[0].label, "http");
    assert_eq!((m.ports[0].begin_at, m.ports[0].count), (0, 2));
    assert_eq!(w.image.as_deref(), Some("other/image:1"));
    assert_eq!(w.shm_mb, 256);
    assert_eq!((w.min_failed, w.min_succeeded), (Some(2), None));
    assert_eq!(
        w.command,
        "pip install -r req.txt\npython worker.py\necho done"
    );
}

#[test]
fn openpai_v2_renders_parameters_but_never_secrets() {
    let j = ok(V2).job;
    let cmd = &j.roles[0].command;
    assert!(cmd.contains("--epochs 3 --lr 0.1"), "{cmd}");
    assert!(!cmd.contains("hunter2") && !cmd.contains("pw"), "{cmd}");
    assert!(
        cmd.contains("'${KILN_SECRET_docker_password}'")
            || cmd.contains("${KILN_SECRET_docker_password}")
    );
    assert!(cmd.contains("--key ${KILN_SECRET_api}"), "{cmd}");
    assert_eq!(j.secrets["api"], "hunter2");
    assert_eq!(j.secrets["docker_password"], "pw");
}

#[test]
fn openpai_v2_reports_bad_references() {
    let bad = V2
        .replace("<% $parameters.epochs %>", "<% $parameters.missing %>")
        .replace("dockerImage: img2", "dockerImage: nope")
        .replace("deployment: chosen", "deployment: absent")
        .replace("<% $secrets.api %>", "<% $script.x %>");
    let e = errs(&bad);
    assert!(
        has(&e, "taskRoles.master.commands: uses parameter missing"),
        "{e:?}"
    );
    assert!(
        has(
            &e,
            "taskRoles.worker.dockerImage: names prerequisite \"nope\""
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "defaults.deployment: names deployment \"absent\""),
        "{e:?}"
    );
    assert!(
        has(&e, "template \"<% $script.x %>\" is not supported"),
        "{e:?}"
    );
    assert!(has(
        &errs("protocolVersion: 3\nname: x\ntaskRoles: {}\n"),
        "protocolVersion: must be 2"
    ));
}

#[test]
fn openpai_v2_paths_name_its_own_fields() {
    let bad = V2
        .replace("memoryMB: 1024", "memoryMB: 50")
        .replace("instances: 3", "instances: 0");
    let e = errs(&bad);
    assert!(
        has(
            &e,
            "taskRoles.worker.resourcePerInstance.memoryMB: must be at least 100, got 50"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "taskRoles.worker.instances: must be at least 1, got 0"),
        "{e:?}"
    );
}

const PYTORCHJOB: &str = r#"
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata: {name: pt, namespace: team-a, labels: {app: x}}
spec:
  nprocPerNode: "2"
  runPolicy:
    backoffLimit: 3
    activeDeadlineSeconds: 7200
    cleanPodPolicy: None
    schedulingPolicy: {queue: research, priorityClass: high}
  pytorchReplicaSpecs:
    Master:
      replicas: 1
      restartPolicy: OnFailure
      template:
        spec:
          containers:
            - name: pytorch
              image: pytorch/pytorch:2.4
              command: [python3, train.py]
              args: ["--name", "it's mine", "--epochs=1"]
              env:
                - {name: NCCL_DEBUG, value: INFO}
                - {name: MASTER_PORT, value: "1234"}
                - name: FROM_SECRET
                  valueFrom: {secretKeyRef: {name: s, key: k}}
              resources:
                limits: {cpu: "1500m", memory: 4Gi, nvidia.com/gpu: 2}
              volumeMounts: [{name: dshm, mountPath: /dev/shm}]
          volumes: [{name: dshm, emptyDir: {medium: Memory, sizeLimit: 2Gi}}]
    Worker:
      replicas: 2
      restartPolicy: ExitCode
      template:
        spec:
          containers:
            - name: pytorch
              image: pytorch/pytorch:2.4
              command: [python3, train.py]
              resources:
                requests: {cpu: 2, memory: "2147483648"}
"#;

#[test]
fn kubeflow_pytorchjob_maps_replicas_resources_and_run_policy() {
    let p = ok(PYTORCHJOB);
    assert_eq!(p.format, Format::KubeflowPytorchjob);
    let j = &p.job;
    assert_eq!(j.name, "pt");
    assert_eq!(j.queue.as_deref(), Some("research"));
    assert_eq!(j.max_restarts, Some(3));
    assert_eq!(j.max_duration_secs, Some(7200));
    assert_eq!(j.pytorch.as_ref().and_then(|p| p.nproc_per_node), Some(2));
    assert_eq!(j.extras["kubernetes"]["namespace"], "team-a");
    let (m, w) = (&j.roles[0], &j.roles[1]);
    assert_eq!(
        (m.name.as_str(), m.cpus, m.memory_mb, m.gpus, m.shm_mb),
        ("master", 2, 4096, 2, 2048)
    );
    // command + args become one shell line that splits back into the argv.
    assert_eq!(
        shlex::split(&m.command).expect("shell words"),
        ["python3", "train.py", "--name", "it's mine", "--epochs=1"]
    );
    assert_eq!(m.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(
        m.min_succeeded,
        Some(1),
        "the job succeeds when the master does"
    );
    assert_eq!(m.env.get("NCCL_DEBUG").map(String::as_str), Some("INFO"));
    assert!(!m.env.contains_key("MASTER_PORT") && !m.env.contains_key("FROM_SECRET"));
    assert_eq!(
        (w.name.as_str(), w.replicas, w.cpus, w.memory_mb),
        ("worker", 2, 2, 2048)
    );
    assert_eq!(w.restart_policy, RestartPolicy::ExitCode);
}

#[test]
fn kubeflow_fields_kiln_cannot_honour_are_warnings() {
    let p = ok(PYTORCHJOB);
    let w: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    let c = "spec.pytorchReplicaSpecs.Master.template.spec.containers[0]";
    for needle in [
        format!("{c}.resources.limits.cpu: kiln allocates whole CPUs; 1500m is rounded up to 2"),
        format!("{c}.env[1]: MASTER_PORT is set by kiln"),
        format!("{c}.env[2]: FROM_SECRET: valueFrom is not supported"),
        format!("{c}.volumeMounts: not imported"),
        "spec.runPolicy.cleanPodPolicy: not applicable".to_string(),
        "spec.runPolicy.schedulingPolicy.priorityClass: not supported".to_string(),
    ] {
        assert!(has(&w, &needle), "{needle} missing from {w:#?}");
    }
}

#[test]
fn kubeflow_errors_name_kubernetes_paths() {
    let e = errs(
        &PYTORCHJOB
            .replace("memory: 4Gi", "memory: 64Mi")
            .replace("kind: PyTorchJob", "kind: TFJob"),
    );
    assert!(
        has(&e, "kind: kiln imports kind PyTorchJob, got \"TFJob\""),
        "{e:?}"
    );
    assert!(has(&e, "spec.pytorchReplicaSpecs.Master.template.spec.containers[0].resources.limits.memory: must be at least 100, got 64"), "{e:?}");
    let e = errs(&PYTORCHJOB.replace("Worker:", "Chief:"));
    assert!(
        has(
            &e,
            "spec.pytorchReplicaSpecs.Chief: replica type must be Master or Worker"
        ),
        "{e:?}"
    );
    let e = errs(&PYTORCHJOB.replace("replicas: 1", "replicas: 2"));
    assert!(
        has(
            &e,
            "spec.pytorchReplicaSpecs.Master.replicas: must be 1, got 2"
        ),
        "{e:?}"
    );
}

#[test]
fn native_single_task_shorthand() {
    let p = ok("name: one\ncommand: echo hi\ngpus: 2\ncpus: 4\nmemory: 8Gi\nshm: 512Mi\nmaxDuration: 1h30m\nworkingDir: /mnt/code\nmounts:\n  - mnist\n  - dataset:imagenet\n  - {space: out/run1, target: /output}\n  - dataset:coco:/data/coco\nenv: {A: 1}\n");
    assert_eq!(p.format, Format::Kiln);
    let j = p.job;
    let r = &j.roles[0];
    assert_eq!(
        (
            r.name.as_str(),
            r.replicas,
            r.gpus,
            r.cpus,
            r.memory_mb,
            r.shm_mb
        ),
        ("main", 1, 2, 4, 8192, 512)
    );
    assert_eq!(r.env["A"], "1");
    assert_eq!(j.max_duration_secs, Some(5400));
    let m: Vec<(String, &str, bool)> = j
        .mounts
        .iter()
        .map(|m| {
            let src = match &m.source {
                MountSource::Space(s) => format!("space:{s}"),
                MountSource::Dataset(d) => format!("dataset:{d}"),
            };
            (src, m.target.as_str(), m.read_only)
        })
        .collect();
    assert_eq!(
        m,
        [
            ("space:mnist".to_string(), "/mnt/mnist", false),
            ("dataset:imagenet".to_string(), "/mnt/imagenet", true),
            ("space:out/run1".to_string(), "/output", false),
            ("dataset:coco".to_string(), "/data/coco", true),
        ]
    );
}

#[test]
fn native_defaults_are_small_and_stated() {
    let r = ok("name: one\ncommand: x\n").job.roles[0].clone();
    assert_eq!(
        (r.replicas, r.cpus, r.memory_mb, r.shm_mb, r.gpus),
        (1, 1, 1024, 64, 0)
    );
    assert_eq!((r.min_failed, r.min_succeeded), (Some(1), None));
}

#[test]
fn native_mount_and_path_safety() {
    for (mount, needle) in [
        ("../etc", "must not contain '..'"),
        ("/etc", "must be relative to your space"),
        ("{space: a, target: relative}", "must be an absolute path"),
        ("{space: a, target: /x/../../etc}", "must not contain '..'"),
        (
            "{dataset: d, readOnly: false}",
            "datasets are always mounted read-only",
        ),
        ("{space: a, dataset: b}", "exactly one of space or dataset"),
        ("{space: a, target: /}", "cannot mount over '/'"),
    ] {
        let e = errs(&format!("name: x\ncommand: y\nmounts: [{mount}]\n"));
        assert!(has(&e, needle), "{mount}: {e:?}");
    }
    let e = errs("name: x\ncommand: y\nmounts: [a:/same, b:/same]\n");
    assert!(
        has(
            &e,
            "mounts[1].target: \"/same\" is already the target of mount 0"
        ),
        "{e:?}"
    );
    let e = errs("name: x\ncommand: y\nworkingDir: rel\n");
    assert!(
        has(&e, "workingDir: \"rel\" must be an absolute path"),
        "{e:?}"
    );
}

#[test]
fn native_roles_form_rejects_role_fields_at_the_top() {
    let e = errs("name: x\ngpus: 1\nroles: [{name: a, command: y}]\n");
    assert!(has(&e, "gpus: belongs to a task role"), "{e:?}");
}

#[test]
fn native_units_are_checked() {
    let e = errs("name: x\ncommand: y\nmemory: 8GB\nmaxDuration: soon\n");
    assert!(has(&e, "memory: \"8GB\" has unknown unit \"GB\""), "{e:?}");
    assert!(has(&e, "maxDuration: \"soon\" is not a duration"), "{e:?}");
    let e = errs("name: x\ncommand: y\nmaxDuration: 0\n");
    assert!(has(&e, "maxDuration: must be at least 1, got 0"), "{e:?}");
}

#[test]
fn native_pids_limit_is_a_role_field_with_a_floor() {
    let p = ok("name: x\ncommand: y\npids: 256\n");
    assert_eq!(p.job.roles[0].pids, Some(256));
    assert_eq!(ok("name: x\ncommand: y\n").job.roles[0].pids, None);
    let e = errs("name: x\ncommand: y\npids: 2\n");
    assert!(has(&e, "pids: must be at least 8, got 2"), "{e:?}");
    let e = errs("name: x\nroles:\n  - {name: w, command: y, pids: 0}\n");
    assert!(has(&e, "roles[0].pids: must be at least 8, got 0"), "{e:?}");
}

#[test]
fn native_preemptible_is_a_boolean_that_defaults_to_unset() {
    assert_eq!(ok("name: x\ncommand: y\n").job.preemptible, None);
    let p = ok("name: x\ncommand: y\npreemptible: false\n");
    assert_eq!(p.job.preemptible, Some(false));
    let back = kiln_spec::export::to_yaml(&p.job).expect("yaml");
    assert!(back.contains("preemptible: false"), "{back}");
    assert_eq!(ok(&back).job, p.job);
    let e = errs("name: x\ncommand: y\npreemptible: \"no\"\n");
    assert!(has(&e, "preemptible: "), "{e:?}");
    assert!(has(&e, "true or false"), "{e:?}");
}

#[test]
fn detection_is_by_content_not_by_syntax() {
    // OpenPAI v1 written as YAML, and kiln's format written as JSON.
    let v1 = "jobName: y\nimage: i\ntaskRoles:\n  - {name: a, taskNumber: 1, cpuNumber: 1, memoryMB: 200, gpuNumber: 0, command: x}\n";
    assert_eq!(ok(v1).format, Format::OpenpaiV1);
    assert_eq!(ok(r#"{"name": "j", "command": "x"}"#).format, Format::Kiln);
    assert_eq!(ok(PYTORCHJOB).format, Format::KubeflowPytorchjob);
}

#[test]
fn syntax_errors_carry_line_and_column() {
    match parse(b"name: x\ncommand: [oops\n") {
        Err(SpecError::Syntax { format, line, .. }) => {
            assert_eq!(format, "YAML");
            assert_eq!(line, 3);
        }
        other => panic!("{other:?}"),
    }
    match parse(b"{\n  \"name\": \"x\",\n  \"command\": \n}") {
        Err(SpecError::Syntax {
            format,
            line,
            column,
            ..
        }) => {
            assert_eq!((format, line, column), ("JSON", 4, 1));
        }
        other => panic!("{other:?}"),
    }
    let issues = parse(b"{\"a\": }").unwrap_err().issues();
    assert_eq!((issues[0].line, issues[0].column), (Some(1), Some(7)));
}

#[test]
fn openpai_v2_paths_point_at_labels_and_prerequisites() {
    let bad = V2
        .replace("ports: {http: 2}", "ports: {\"bad label\": 2}")
        .replace("uri: \"other/image:1\"", "uri: \" \"");
    let e = errs(&bad);
    assert!(
        has(&e, "taskRoles.master.resourcePerInstance.ports[\"bad label\"]: name \"bad label\" contains ' '"),
        "{e:?}"
    );
    assert!(has(&e, "prerequisites[1].uri: must not be empty"), "{e:?}");
}

#[test]
fn openpai_v2_secret_names_may_not_collide() {
    let bad = V2
        .replace(
            "secrets: {api: hunter2, docker: {password: pw}}",
            "secrets: {a_b: one, a: {b: two}}",
        )
        .replace("<% $secrets.docker.password %>", "x")
        .replace("<% $secrets.api %>", "y");
    let e = errs(&bad);
    assert!(
        has(
            &e,
            "secrets.a.b: two secrets become the variable KILN_SECRET_a_b"
        ),
        "{e:?}"
    );
}

#[test]
fn kubeflow_defaults_and_spellings_follow_kubeflow() {
    // No restartPolicy: Kubeflow's default for PyTorchJob is OnFailure.
    let text = PYTORCHJOB
        .replace("      restartPolicy: OnFailure\n", "")
        .replace("    Worker:", "    worker:");
    let j = ok(&text).job;
    assert_eq!(j.roles[0].restart_policy, RestartPolicy::OnFailure);
    assert_eq!(
        j.roles[1].name, "worker",
        "lowercase replica keys are accepted"
    );
    let e = errs(&text.replace("replicas: 2", "replicas: 0"));
    assert!(
        has(
            &e,
            "spec.pytorchReplicaSpecs.worker.replicas: must be at least 1"
        ),
        "{e:?}"
    );
}

#[test]
fn kubeflow_errors_point_at_the_section_and_entry_written() {
    let text = PYTORCHJOB.replace(
        "requests: {cpu: 2, memory: \"2147483648\"}",
        "requests: {cpu: 2, memory: 10Mi}",
    );
    let e = errs(&text);
    assert!(
        has(&e, "Worker.template.spec.containers[0].resources.requests.memory: must be at least 100, got 10"),
        "{e:?}"
    );
    let text = PYTORCHJOB.replace(
        "{name: NCCL_DEBUG, value: INFO}",
        "{name: \"A=B\", value: x}",
    );
    let e = errs(&text);
    assert!(
        has(
            &e,
            "Master.template.spec.containers[0].env[0].name: \"A=B\" is not a valid"
        ),
        "{e:?}"
    );
}

#[test]
fn kubeflow_resources_kiln_does_not_honour_are_named() {
    let text = PYTORCHJOB.replace(
        "nvidia.com/gpu: 2}",
        "nvidia.com/gpu: 2, nvidia.com/gpumem: 4000}",
    );
    let w: Vec<String> = ok(&text).warnings.iter().map(ToString::to_string).collect();
    assert!(
        has(
            &w,
            "resources.limits[\"nvidia.com/gpumem\"]: not supported by kiln"
        ),
        "{w:?}"
    );
}

/// A job stored before names refused `~` still loads after the upgrade; a
/// new one is refused.
#[test]
fn names_refused_since_a_job_was_stored_still_load() {
    let text = br#"{"name": "tilde~x", "command": "echo hi"}"#;
    assert!(kiln_spec::parse(text).is_err());
    let job = kiln_spec::parse_stored(text).expect("stored job loads").job;
    assert_eq!(job.name, "tilde~x");
    // Other rules still hold for stored jobs.
    assert!(kiln_spec::parse_stored(br#"{"name": "a b", "command": "x"}"#).is_err());
}

#[test]
fn job_level_paths_are_each_formats_own() {
    use kiln_spec::validate::Field;
    let q = |f: Format| f.job_field_path(Field::Queue);
    assert_eq!(q(Format::Kiln), "queue");
    assert_eq!(q(Format::OpenpaiV1), "virtualCluster");
    assert_eq!(q(Format::OpenpaiV2), "defaults.virtualCluster");
    assert_eq!(
        q(Format::KubeflowPytorchjob),
        "spec.runPolicy.schedulingPolicy.queue"
    );
    for f in [
        Format::Kiln,
        Format::OpenpaiV1,
        Format::OpenpaiV2,
        Format::KubeflowPytorchjob,
    ] {
        assert_eq!(Format::from_name(f.as_str()), Some(f));
    }
    assert_eq!(Format::from_name("slurm"), None);
}
