//! Kubeflow `PyTorchJob` (kubeflow.org/v1), as in seed 003. Kubeflow's meaning
//! is kept: the job succeeds when the master succeeds, failed replicas restart
//! in place per `restartPolicy` within `runPolicy.backoffLimit`. Fields kiln
//! cannot honour are named in warnings.

use serde_json::{Map, Value};

use super::reader::{field, index, Reader};
use super::restart_policy;
use crate::ids::quoted;
use crate::model::{JobSpec, PyTorch, RestartPolicy, TaskRole, DEFAULT_SHM_MB};
use crate::quantity::{parse_cpu_millis, parse_memory_mib, BareUnit};
use crate::validate::{limits, reserved_env, Field, Paths};

const SPECS: &str = "spec.pytorchReplicaSpecs";
/// Kubeflow's replica types, in rank order: the master is rank 0.
const REPLICA_TYPES: &[&str] = &["Master", "Worker"];
/// Memory of a replica whose container sets no limit or request.
const DEFAULT_MEMORY_MB: u64 = 1024;

struct RoleSource {
    /// The replica key as written (`Master`, or `master`, which Kubeflow
    /// accepts too).
    replica_type: String,
    container: usize,
    /// Which of `limits` / `requests` each resource was read from.
    cpu_in: &'static str,
    memory_in: &'static str,
    gpu_in: &'static str,
    /// Names in the container's env list, by position.
    env: Vec<String>,
}

#[derive(Default)]
pub struct KubeflowPaths {
    roles: Vec<RoleSource>,
}

impl KubeflowPaths {
    fn replica(&self, r: usize) -> String {
        let t = self
            .roles
            .get(r)
            .map(|s| s.replica_type.as_str())
            .unwrap_or("?");
        field(SPECS, t)
    }

    fn container(&self, r: usize) -> String {
        let c = self.roles.get(r).map(|s| s.container).unwrap_or(0);
        index(&format!("{}.template.spec.containers", self.replica(r)), c)
    }

    fn resource(&self, r: usize, key: &str) -> String {
        let section = self
            .roles
            .get(r)
            .map(|s| match key {
                "cpu" => s.cpu_in,
                "memory" => s.memory_in,
                _ => s.gpu_in,
            })
            .unwrap_or("limits");
        field(&format!("{}.resources.{section}", self.container(r)), key)
    }

    fn env(&self, r: usize, name: &str) -> String {
        let i = self
            .roles
            .get(r)
            .and_then(|s| s.env.iter().position(|n| n == name))
            .unwrap_or(0);
        field(&index(&(self.container(r) + ".env"), i), "name")
    }
}

impl Paths for KubeflowPaths {
    fn path(&self, f: Field<'_>) -> String {
        match f {
            Field::Name => "metadata.name".into(),
            Field::User => "user".into(),
            Field::Queue => "spec.runPolicy.schedulingPolicy.queue".into(),
            Field::Image => self.container(0) + ".image",
            Field::GpuType => "gpuType".into(),
            Field::WorkingDir => self.container(0) + ".workingDir",
            Field::MaxDuration => "spec.runPolicy.activeDeadlineSeconds".into(),
            Field::Roles => SPECS.into(),
            Field::NprocPerNode => "spec.nprocPerNode".into(),
            Field::JobEnv(k) => field("jobEnvs", k),
            Field::Secret(k) => field("secrets", k),
            Field::MountSource(i) | Field::MountTarget(i) | Field::MountReadOnly(i) => {
                index("mounts", i)
            }
            Field::RoleName(r) => self.replica(r),
            Field::Replicas(r) => self.replica(r) + ".replicas",
            Field::Cpus(r) => self.resource(r, "cpu"),
            Field::Memory(r) => self.resource(r, "memory"),
            Field::Gpus(r) => self.resource(r, "nvidia.com/gpu"),
            Field::Shm(r) => self.replica(r) + ".template.spec.volumes",
            // Not read from this format; the role is the nearest place.
            Field::Pids(r) => self.replica(r),
            Field::RoleGpuType(r) => self.replica(r) + ".template.spec.nodeSelector",
            Field::RoleImage(r) => self.container(r) + ".image",
            Field::Command(r) => self.container(r) + ".command",
            Field::MinFailed(r) | Field::MinSucceeded(r) => self.replica(r),
            Field::RoleEnv(r, k) => self.env(r, k),
            Field::PortLabel(r, p) | Field::PortBeginAt(r, p) | Field::PortCount(r, p) => {
                index(&(self.container(r) + ".ports"), p)
            }
        }
    }
}

pub(crate) fn read(doc: &Map<String, Value>, r: &mut Reader) -> (JobSpec, Box<dyn Paths>) {
    r.unknown_keys(
        doc,
        "",
        &["apiVersion", "kind", "metadata", "spec", "status"],
    );
    match doc.get("apiVersion").and_then(Value::as_str) {
        Some("kubeflow.org/v1") => {}
        Some(other) => r.error(
            "apiVersion",
            format!("must be kubeflow.org/v1, got {}", quoted(other)),
        ),
        None => r.error("apiVersion", "is required"),
    }
    match doc.get("kind").and_then(Value::as_str) {
        Some("PyTorchJob") => {}
        Some(other) => r.error(
            "kind",
            format!(
                "kiln imports kind PyTorchJob, got {}; describe other frameworks in kiln's own format",
                quoted(other)
            ),
        ),
        None => r.error("kind", "is required"),
    }
    if doc.contains_key("status") {
        r.warn("status", "the status of an exported job is ignored");
    }

    let empty = Map::new();
    let meta = r.opt_object(doc, "metadata", "").unwrap_or(&empty);
    // Fields the API server sets describe a stored object, not the job.
    const SERVER_SET: &[&str] = &[
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "generation",
        "managedFields",
        "selfLink",
    ];
    let mut known = vec!["name", "namespace", "labels", "annotations"];
    known.extend(SERVER_SET);
    r.unknown_keys(meta, "metadata", &known);
    let name = r.req_string(meta, "name", "metadata").unwrap_or_default();
    let mut extras = Map::new();
    let mut k8s = Map::new();
    for key in ["namespace", "labels", "annotations"] {
        if let Some(v) = meta.get(key) {
            k8s.insert(key.into(), v.clone());
        }
    }
    if !k8s.is_empty() {
        extras.insert("kubernetes".into(), Value::Object(k8s));
    }

    let spec = match doc.get("spec") {
        Some(v) => r.object(v, "spec").unwrap_or(&empty),
        None => {
            r.error("spec", "is required");
            &empty
        }
    };
    r.unknown_keys(
        spec,
        "spec",
        &[
            "pytorchReplicaSpecs",
            "runPolicy",
            "nprocPerNode",
            "elasticPolicy",
        ],
    );
    if spec.contains_key("elasticPolicy") {
        r.warn(
            "spec.elasticPolicy",
            "elastic training is not supported; the job runs with a fixed number of replicas",
        );
    }

    let mut roles = Vec::new();
    let mut sources = Vec::new();
    let mut images = Vec::new();
    let mut working_dirs = Vec::new();
    match r.opt_object(spec, "pytorchReplicaSpecs", "spec") {
        None => r.error(SPECS, "is required"),
        Some(specs) => {
            // Kubeflow accepts the replica types in any case.
            let canonical = |key: &str| {
                REPLICA_TYPES
                    .iter()
                    .find(|t| t.eq_ignore_ascii_case(key))
                    .copied()
            };
            let mut seen: Vec<&str> = Vec::new();
            for key in specs.keys() {
                match canonical(key) {
                    None => r.error(
                        field(SPECS, key),
                        format!("replica type must be Master or Worker, got {}", quoted(key)),
                    ),
                    Some(t) if seen.contains(&t) => r.error(
                        field(SPECS, key),
                        format!("replica type {t} is given twice"),
                    ),
                    Some(t) => seen.push(t),
                }
            }
            for t in REPLICA_TYPES {
                let Some((key, v)) = specs.iter().find(|(k, _)| canonical(k) == Some(*t)) else {
                    continue;
                };
                let path = field(SPECS, key);
                let Some(m) = r.object(v, &path) else {
                    continue;
                };
                let (role, source, image, wd) = read_replica(t, key, m, &path, r);
                roles.push(role);
                sources.push(source);
                images.push(image);
                working_dirs.push(wd);
            }
            if roles.is_empty() && specs.keys().all(|k| canonical(k).is_some()) {
                r.error(SPECS, "needs a Master or a Worker");
            }
        }
    }

    // The job succeeds when the master succeeds, as in Kubeflow.
    if let Some(master) = roles.iter_mut().find(|x| x.name == "master") {
        master.min_succeeded = Some(1);
        if master.replicas != 1 {
            r.error(
                field(SPECS, &sources[0].replica_type) + ".replicas",
                format!("must be 1, got {}", master.replicas),
            );
        }
    }

    let image = images.first().cloned().flatten();
    for (role, img) in roles.iter_mut().zip(images) {
        if img != image {
            role.image = img;
        }
    }
    let working_dir = working_dirs.first().cloned().flatten();
    if working_dirs.iter().any(|w| *w != working_dir) {
        r.warn(
            SPECS,
            "replicas set different workingDir values; kiln uses the first replica's for every task",
        );
    }

    let run = r.opt_object(spec, "runPolicy", "spec");
    let mut queue = None;
    let mut max_restarts = None;
    let mut max_duration = None;
    if let Some(run) = run {
        let rp = "spec.runPolicy";
        r.unknown_keys(
            run,
            rp,
            &[
                "backoffLimit",
                "activeDeadlineSeconds",
                "cleanPodPolicy",
                "ttlSecondsAfterFinished",
                "schedulingPolicy",
                "suspend",
            ],
        );
        max_restarts = r
            .opt_uint(run, "backoffLimit", rp, u64::from(u32::MAX))
            .map(|n| n as u32);
        max_duration = r.opt_uint(run, "activeDeadlineSeconds", rp, limits::MAX_DURATION_SECS);
        for key in ["cleanPodPolicy", "ttlSecondsAfterFinished", "suspend"] {
            if run.contains_key(key) {
                r.warn(
                    field(rp, key),
                    "not applicable to kiln (tasks end with their job; logs are kept until the job is deleted)",
                );
            }
        }
        if let Some(sp) = r.opt_object(run, "schedulingPolicy", rp) {
            let spp = "spec.runPolicy.schedulingPolicy";
            queue = r.opt_string(sp, "queue", spp);
            for key in sp.keys().filter(|k| *k != "queue") {
                r.warn(
                    field(spp, key),
                    "not supported; kiln always places the whole job at once and orders by priority",
                );
            }
        }
    }

    let nproc = match spec.get("nprocPerNode") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "auto" || s == "gpu" => None,
        Some(Value::String(s)) => match s.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                r.error(
                    "spec.nprocPerNode",
                    format!("must be a number, auto or gpu, got {}", quoted(s)),
                );
                None
            }
        },
        Some(v) => r
            .uint_value(v, "spec.nprocPerNode", limits::MAX_NPROC)
            .map(|n| n as u32),
    };

    let job = JobSpec {
        name,
        user: None,
        description: None,
        queue,
        preemptible: None,
        priority: 0,
        image,
        auth_file: None,
        code_dir: None,
        data_dir: None,
        output_dir: None,
        gpu_type: None,
        retry_count: 0,
        max_restarts,
        max_duration_secs: max_duration,
        working_dir,
        mounts: Vec::new(),
        job_envs: Default::default(),
        secrets: Default::default(),
        extras,
        pytorch: Some(PyTorch {
            nproc_per_node: nproc,
        }),
        roles,
    };
    (job, Box::new(KubeflowPaths { roles: sources }))
}

fn read_replica(
    replica_type: &str,
    key: &str,
    m: &Map<String, Value>,
    path: &str,
    r: &mut Reader,
) -> (TaskRole, RoleSource, Option<String>, Option<String>) {
    r.unknown_keys(m, path, &["replicas", "restartPolicy", "template"]);
    let replicas = r
        .opt_uint(m, "replicas", path, limits::MAX_REPLICAS)
        .unwrap_or(1) as u32;
    // Kubeflow's default for PyTorchJob replicas is OnFailure.
    let restart = match r.opt_string(m, "restartPolicy", path) {
        Some(p) => restart_policy(&p, &field(path, "restartPolicy"), r),
        None => RestartPolicy::OnFailure,
    };
    let empty = Map::new();
    let tp = field(path, "template");
    let template = r.opt_object(m, "template", path);
    if template.is_none() {
        r.error(&tp, "is required");
    }
    let template = template.unwrap_or(&empty);
    r.unknown_keys(template, &tp, &["metadata", "spec"]);
    if template.contains_key("metadata") {
        r.warn(
            field(&tp, "metadata"),
            "pod labels and annotations are not applied by kiln",
        );
    }
    let pod_path = field(&tp, "spec");
    let pod = r.opt_object(template, "spec", &tp).unwrap_or(&empty);
    for key in pod.keys() {
        if !matches!(key.as_str(), "containers" | "volumes") {
            r.warn(
                field(&pod_path, key),
                "pod settings other than containers are not applied by kiln",
            );
        }
    }

    let cp = field(&pod_path, "containers");
    let containers = r.opt_array(pod, "containers", &pod_path);
    let list: &[Value] = containers.map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        r.error(&cp, "needs one container");
    }
    // Kubeflow runs the container named "pytorch"; others are sidecars.
    let ci = list
        .iter()
        .position(|c| c.get("name").and_then(Value::as_str) == Some("pytorch"))
        .unwrap_or(0);
    for (i, _) in list.iter().enumerate().filter(|(i, _)| *i != ci) {
        r.warn(index(&cp, i), "sidecar containers are not run by kiln");
    }
    let cpath = index(&cp, ci);
    let c = list
        .get(ci)
        .and_then(|v| r.object(v, &cpath))
        .unwrap_or(&empty);
    r.unknown_keys(
        c,
        &cpath,
        &[
            "name",
            "image",
            "imagePullPolicy",
            "command",
            "args",
            "env",
            "resources",
            "workingDir",
            "volumeMounts",
            "ports",
        ],
    );
    if c.contains_key("imagePullPolicy") {
        r.warn(
            field(&cpath, "imagePullPolicy"),
            "kiln uses the image as the node has it; pull policy is not applied",
        );
    }
    for key in ["volumeMounts", "ports"] {
        if c.contains_key(key) {
            r.warn(
                field(&cpath, key),
                "not imported; give kiln mounts and ports in kiln's own format",
            );
        }
    }
    let image = r.opt_string(c, "image", &cpath);
    let working_dir = r.opt_string(c, "workingDir", &cpath);

    let mut argv = Vec::new();
    for key in ["command", "args"] {
        let p = field(&cpath, key);
        if let Some(list) = r.opt_array(c, key, &cpath) {
            for (i, a) in list.iter().enumerate() {
                if let Some(s) = r.string_value(a, &index(&p, i)) {
                    argv.push(s);
                }
            }
        }
    }
    let command = if argv.is_empty() {
        if !list.is_empty() {
            r.error(
                field(&cpath, "command"),
                "is required: kiln does not know the image's default entrypoint",
            );
        }
        String::new()
    } else {
        argv.iter()
            .map(|a| shell_word(a))
            .collect::<Vec<_>>()
            .join(" ")
    };

    let mut env = indexmap::IndexMap::new();
    let mut env_names = Vec::new();
    let ep = field(&cpath, "env");
    if let Some(list) = r.opt_list(c, "env", &cpath, limits::MAX_ENV) {
        for (i, item) in list.iter().enumerate() {
            let ip = index(&ep, i);
            let named = r
                .object(item, &ip)
                .and_then(|e| r.req_string(e, "name", &ip).map(|n| (e, n)));
            env_names.push(named.as_ref().map(|(_, n)| n.clone()).unwrap_or_default());
            let Some((e, name)) = named else {
                continue;
            };
            if e.contains_key("valueFrom") {
                r.warn(
                    &ip,
                    format!("{name}: valueFrom is not supported; the variable is not set"),
                );
            } else if reserved_env(&name) {
                r.warn(
                    &ip,
                    format!("{name} is set by kiln for every task; this value is ignored"),
                );
            } else {
                let value = r.opt_string(e, "value", &ip).unwrap_or_default();
                env.insert(name, value);
            }
        }
    }

    let rp = field(&cpath, "resources");
    let res = r.opt_object(c, "resources", &cpath).unwrap_or(&empty);
    let limits_m = r.opt_object(res, "limits", &rp);
    let requests_m = r.opt_object(res, "requests", &rp);
    r.unknown_keys(res, &rp, &["limits", "requests"]);
    for (section, m) in [("limits", limits_m), ("requests", requests_m)] {
        for key in m.into_iter().flat_map(|m| m.keys()) {
            if !matches!(key.as_str(), "cpu" | "memory" | "nvidia.com/gpu") {
                r.warn(
                    field(&field(&rp, section), key),
                    "not supported by kiln; only cpu, memory and nvidia.com/gpu are honoured",
                );
            }
        }
    }
    // Kubernetes takes limits for anything missing from requests and vice
    // versa, so look in both; errors point at the section the value came from.
    let section_of = |key: &str| -> &'static str {
        let in_limits = limits_m.is_some_and(|m| m.contains_key(key));
        let in_requests = requests_m.is_some_and(|m| m.contains_key(key));
        if in_requests && !in_limits {
            "requests"
        } else {
            "limits"
        }
    };
    let at = |key: &str| field(&field(&rp, section_of(key)), key);
    let quantity = |key: &str, r: &mut Reader| -> Option<String> {
        [limits_m, requests_m]
            .into_iter()
            .flatten()
            .find_map(|m| m.get(key))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                other => {
                    r.error(
                        at(key),
                        format!(
                            "must be a quantity, got {}",
                            super::reader::type_name(other)
                        ),
                    );
                    None
                }
            })
    };
    let cpus = match quantity("cpu", r) {
        None => 1,
        Some(q) => match parse_cpu_millis(&q) {
            Ok(m) => {
                let cores = m.div_ceil(1000).max(1);
                if !m.is_multiple_of(1000) {
                    r.warn(
                        at("cpu"),
                        format!("kiln allocates whole CPUs; {q} is rounded up to {cores}"),
                    );
                }
                u32::try_from(cores).unwrap_or(u32::MAX)
            }
            Err(e) => {
                r.error(at("cpu"), e);
                1
            }
        },
    };
    let memory_mb = match quantity("memory", r) {
        None => {
            r.warn(
                &rp,
                format!(
                    "no memory limit or request; kiln reserves {DEFAULT_MEMORY_MB} MiB per task"
                ),
            );
            DEFAULT_MEMORY_MB
        }
        Some(q) => parse_memory_mib(&q, BareUnit::Bytes).unwrap_or_else(|e| {
            r.error(at("memory"), e);
            DEFAULT_MEMORY_MB
        }),
    };
    let gpus = match quantity("nvidia.com/gpu", r) {
        None => 0,
        Some(q) => q.parse::<u32>().unwrap_or_else(|_| {
            r.error(
                at("nvidia.com/gpu"),
                format!("must be a whole number of GPUs, got {}", quoted(&q)),
            );
            0
        }),
    };
    let shm_mb = shm_of(pod, c, &pod_path, r).unwrap_or(DEFAULT_SHM_MB);

    let role = TaskRole {
        pids: None,
        name: replica_type.to_ascii_lowercase(),
        replicas,
        cpus,
        memory_mb,
        shm_mb,
        gpus,
        gpu_type: None,
        image: None,
        ports: Vec::new(),
        command,
        min_failed: Some(1),
        min_succeeded: None,
        env,
        restart_policy: restart,
    };
    let source = RoleSource {
        replica_type: key.to_owned(),
        container: ci,
        cpu_in: section_of("cpu"),
        memory_in: section_of("memory"),
        gpu_in: section_of("nvidia.com/gpu"),
        env: env_names,
    };
    (role, source, image, working_dir)
}

/// The usual Kubernetes way to size `/dev/shm`: a memory-backed emptyDir
/// mounted there, its sizeLimit being the size.
fn shm_of(
    pod: &Map<String, Value>,
    container: &Map<String, Value>,
    pod_path: &str,
    r: &mut Reader,
) -> Option<u64> {
    let volume = container
        .get("volumeMounts")?
        .as_array()?
        .iter()
        .find(|m| m.get("mountPath").and_then(Value::as_str) == Some("/dev/shm"))?
        .get("name")?
        .as_str()?;
    let (i, v) = pod
        .get("volumes")?
        .as_array()?
        .iter()
        .enumerate()
        .find(|(_, v)| v.get("name").and_then(Value::as_str) == Some(volume))?;
    let dir = v.get("emptyDir")?;
    let limit = dir.get("sizeLimit")?;
    let text = match limit {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match parse_memory_mib(&text, BareUnit::Bytes) {
        Ok(mib) => Some(mib),
        Err(e) => {
            r.error(
                format!(
                    "{}.emptyDir.sizeLimit",
                    index(&field(pod_path, "volumes"), i)
                ),
                e,
            );
            None
        }
    }
}

/// One argv entry as a bash word: bare when it holds only characters the
/// shell leaves alone (so `--epochs=1` reads as written), quoted otherwise.
fn shell_word(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if plain {
        return arg.to_owned();
    }
    // try_quote refuses only NUL bytes; keeping them lets validation name them.
    shlex::try_quote(arg).map_or_else(|_| arg.to_owned(), |q| q.into_owned())
}
