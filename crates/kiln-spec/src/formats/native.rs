//! kiln's own format: the canonical model written as YAML or JSON, with one
//! shorthand for the common single-task job (Crater's batch job):
//!
//! ```yaml
//! name: mnist
//! command: cd /mnt/mnist; python train.py
//! gpus: 1
//! memory: 8Gi
//! ```
//!
//! Distributed jobs list their `roles` (AI Lab's master + workers). Sizes take
//! units (`512Mi`, `8Gi`; a bare number is MiB), durations too (`90m`, `2h`).

use serde_json::{Map, Value};

use super::reader::{field, index, Reader};
use super::restart_policy;
use crate::model::{JobSpec, Mount, MountSource, PyTorch, TaskRole, DEFAULT_SHM_MB};
use crate::quantity::{parse_duration_secs, parse_memory_mib, BareUnit};
use crate::validate::{limits, Field, Paths};

/// Role name of the single-task shorthand.
pub const SINGLE_ROLE: &str = "main";
/// Memory of a task that names none.
pub const DEFAULT_MEMORY_MB: u64 = 1024;

const JOB_KEYS: &[&str] = &[
    "name",
    "user",
    "description",
    "queue",
    "preemptible",
    "priority",
    "image",
    "authFile",
    "codeDir",
    "dataDir",
    "outputDir",
    "gpuType",
    "retryCount",
    "maxRestarts",
    "maxDuration",
    "workingDir",
    "mounts",
    "jobEnvs",
    "secrets",
    "extras",
    "pytorch",
    "roles",
];

/// Role fields; outside `roles` they describe the single task.
const ROLE_KEYS: &[&str] = &[
    "replicas",
    "cpus",
    "memory",
    "shm",
    "pids",
    "gpus",
    "ports",
    "command",
    "minFailed",
    "minSucceeded",
    "env",
    "restartPolicy",
];

pub struct NativePaths {
    /// The spec used the single-task shorthand, so role fields sit at the top.
    pub single: bool,
}

impl Paths for NativePaths {
    fn path(&self, f: Field<'_>) -> String {
        let role = |r: usize, key: &str| {
            if self.single {
                key.to_owned()
            } else {
                field(&index("roles", r), key)
            }
        };
        let port = |r: usize, p: usize, key: &str| field(&index(&role(r, "ports"), p), key);
        match f {
            Field::Name => "name".into(),
            Field::User => "user".into(),
            Field::Queue => "queue".into(),
            Field::Image => "image".into(),
            Field::GpuType => "gpuType".into(),
            Field::WorkingDir => "workingDir".into(),
            Field::MaxDuration => "maxDuration".into(),
            Field::Roles => "roles".into(),
            Field::NprocPerNode => "pytorch.nprocPerNode".into(),
            Field::JobEnv(k) => field("jobEnvs", k),
            Field::Secret(k) => field("secrets", k),
            Field::MountSource(i) => index("mounts", i),
            Field::MountTarget(i) => field(&index("mounts", i), "target"),
            Field::MountReadOnly(i) => field(&index("mounts", i), "readOnly"),
            Field::RoleName(r) => role(r, "name"),
            Field::Replicas(r) => role(r, "replicas"),
            Field::Cpus(r) => role(r, "cpus"),
            Field::Memory(r) => role(r, "memory"),
            Field::Shm(r) => role(r, "shm"),
            Field::Pids(r) => role(r, "pids"),
            Field::Gpus(r) => role(r, "gpus"),
            Field::RoleGpuType(r) => role(r, "gpuType"),
            Field::RoleImage(r) => role(r, "image"),
            Field::Command(r) => role(r, "command"),
            Field::MinFailed(r) => role(r, "minFailed"),
            Field::MinSucceeded(r) => role(r, "minSucceeded"),
            Field::RoleEnv(r, k) => field(&role(r, "env"), k),
            Field::PortLabel(r, p) => port(r, p, "label"),
            Field::PortBeginAt(r, p) => port(r, p, "beginAt"),
            Field::PortCount(r, p) => port(r, p, "count"),
        }
    }
}

pub(crate) fn read(doc: &Map<String, Value>, r: &mut Reader) -> (JobSpec, Box<dyn Paths>) {
    let single = !doc.contains_key("roles");
    let known: Vec<&str> = if single {
        JOB_KEYS.iter().chain(ROLE_KEYS).copied().collect()
    } else {
        JOB_KEYS.to_vec()
    };
    if !single {
        for key in ROLE_KEYS {
            if doc.contains_key(*key) {
                r.error(
                    *key,
                    "belongs to a task role: with `roles`, set it on each role",
                );
            }
        }
    }
    r.unknown_keys(doc, "", &known);
    if !doc.contains_key("name") && !doc.contains_key("roles") && !doc.contains_key("command") {
        r.error(
            "",
            "not a job spec kiln recognises: kiln's format has name and command (or roles); \
             OpenPAI v1 has jobName, OpenPAI v2 has protocolVersion: 2, Kubeflow has kind: PyTorchJob",
        );
        return (JobSpec::default(), Box::new(NativePaths { single }));
    }

    let roles = if single {
        let mut role = read_role(doc, "", r);
        role.name = SINGLE_ROLE.into();
        vec![role]
    } else {
        let mut roles = Vec::new();
        if let Some(list) = r.opt_list(doc, "roles", "", limits::MAX_ROLES) {
            for (i, item) in list.iter().enumerate() {
                let path = index("roles", i);
                let Some(m) = r.object(item, &path) else {
                    roles.push(super::placeholder_role());
                    continue;
                };
                {
                    let mut known = ROLE_KEYS.to_vec();
                    known.extend(["name", "gpuType", "image"]);
                    r.unknown_keys(m, &path, &known);
                    let mut role = read_role(m, &path, r);
                    role.name = r.req_string(m, "name", &path).unwrap_or_default();
                    role.gpu_type = r.opt_string(m, "gpuType", &path);
                    role.image = r.opt_string(m, "image", &path);
                    roles.push(role);
                }
            }
        }
        roles
    };

    let name = r.req_string(doc, "name", "").unwrap_or_default();
    let job = JobSpec {
        code_dir: super::read_space_dir(doc, "codeDir", &name, r),
        data_dir: super::read_space_dir(doc, "dataDir", &name, r),
        output_dir: super::read_space_dir(doc, "outputDir", &name, r),
        name,
        user: r.opt_string(doc, "user", ""),
        description: r.opt_string(doc, "description", ""),
        queue: r.opt_string(doc, "queue", ""),
        preemptible: r.opt_bool(doc, "preemptible", ""),
        priority: read_priority(doc, r),
        image: r.opt_string(doc, "image", ""),
        auth_file: r.opt_string(doc, "authFile", ""),
        gpu_type: r.opt_string(doc, "gpuType", ""),
        retry_count: r
            .opt_uint(doc, "retryCount", "", limits::MAX_RETRIES)
            .unwrap_or(0) as u32,
        max_restarts: r
            .opt_uint(doc, "maxRestarts", "", u64::from(u32::MAX))
            .map(|n| n as u32),
        max_duration_secs: read_duration(doc, "maxDuration", "", r),
        working_dir: r.opt_string(doc, "workingDir", ""),
        mounts: read_mounts(doc, r),
        job_envs: r
            .opt_object(doc, "jobEnvs", "")
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        secrets: r.string_map(doc, "secrets", ""),
        extras: r.opt_object(doc, "extras", "").cloned().unwrap_or_default(),
        pytorch: read_pytorch(doc, r),
        roles,
    };
    (job, Box::new(NativePaths { single }))
}

fn read_priority(doc: &Map<String, Value>, r: &mut Reader) -> i32 {
    match r.opt_int(doc, "priority", "") {
        None => 0,
        Some(p) => i32::try_from(p)
            .ok()
            .filter(|p| (-1000..=1000).contains(p))
            .unwrap_or_else(|| {
                r.error(
                    "priority",
                    format!("must be between -1000 and 1000, got {p}"),
                );
                0
            }),
    }
}

fn read_pytorch(doc: &Map<String, Value>, r: &mut Reader) -> Option<PyTorch> {
    let m = r.opt_object(doc, "pytorch", "")?;
    r.unknown_keys(m, "pytorch", &["nprocPerNode"]);
    Some(PyTorch {
        nproc_per_node: r
            .opt_uint(m, "nprocPerNode", "pytorch", limits::MAX_NPROC)
            .map(|n| n as u32),
    })
}

pub(crate) fn read_duration(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
    r: &mut Reader,
) -> Option<u64> {
    let text = r.opt_scalar_text(m, key, path)?;
    match parse_duration_secs(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            r.error(field(path, key), e);
            None
        }
    }
}

fn read_memory(m: &Map<String, Value>, key: &str, path: &str, r: &mut Reader) -> Option<u64> {
    let text = r.opt_scalar_text(m, key, path)?;
    match parse_memory_mib(&text, BareUnit::Mebibytes) {
        Ok(mib) => Some(mib),
        Err(e) => {
            r.error(field(path, key), e);
            None
        }
    }
}

fn read_role(m: &Map<String, Value>, path: &str, r: &mut Reader) -> TaskRole {
    TaskRole {
        pids: r.opt_uint(m, "pids", path, 4_194_304).map(|n| n as u32),
        name: String::new(),
        replicas: r
            .opt_uint(m, "replicas", path, limits::MAX_REPLICAS)
            .unwrap_or(1) as u32,
        cpus: r.opt_uint(m, "cpus", path, limits::MAX_CPUS).unwrap_or(1) as u32,
        memory_mb: read_memory(m, "memory", path, r).unwrap_or(DEFAULT_MEMORY_MB),
        shm_mb: read_memory(m, "shm", path, r).unwrap_or(DEFAULT_SHM_MB),
        gpus: r.opt_uint(m, "gpus", path, limits::MAX_GPUS).unwrap_or(0) as u32,
        gpu_type: None,
        image: None,
        ports: super::read_ports(
            m,
            path,
            &super::PortKeys {
                list: "ports",
                count: "count",
                required: false,
            },
            r,
        ),
        command: match m.get("command") {
            Some(Value::Array(lines)) => {
                // A list of lines reads better in YAML for multi-step commands.
                let p = field(path, "command");
                lines
                    .iter()
                    .enumerate()
                    .filter_map(|(i, l)| r.string_value(l, &index(&p, i)))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            _ => r.req_string(m, "command", path).unwrap_or_default(),
        },
        min_failed: r.nullable_uint(m, "minFailed", path, limits::MAX_REPLICAS, Some(1)),
        min_succeeded: r.nullable_uint(m, "minSucceeded", path, limits::MAX_REPLICAS, None),
        env: r.string_map(m, "env", path),
        restart_policy: match r.opt_string(m, "restartPolicy", path) {
            Some(p) => restart_policy(&p, &field(path, "restartPolicy"), r),
            None => Default::default(),
        },
    }
}

fn read_mounts(doc: &Map<String, Value>, r: &mut Reader) -> Vec<Mount> {
    let Some(list) = r.opt_list(doc, "mounts", "", limits::MAX_MOUNTS) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let path = index("mounts", i);
        match item {
            Value::String(s) => match parse_mount_shorthand(s) {
                Ok(m) => out.push(m),
                Err(e) => {
                    r.error(path, e);
                    out.push(placeholder_mount());
                }
            },
            Value::Object(m) => {
                r.unknown_keys(m, &path, &["space", "dataset", "target", "readOnly"]);
                let space = r.opt_string(m, "space", &path);
                let dataset = r.opt_string(m, "dataset", &path);
                let read_only = r.opt_bool(m, "readOnly", &path);
                let source = match (space, dataset) {
                    (Some(s), None) => MountSource::Space(s),
                    (None, Some(d)) => MountSource::Dataset(d),
                    _ => {
                        r.error(&path, "give exactly one of space or dataset");
                        out.push(placeholder_mount());
                        continue;
                    }
                };
                let target = r
                    .opt_string(m, "target", &path)
                    .unwrap_or_else(|| default_target(&source));
                let read_only = read_only.unwrap_or(matches!(source, MountSource::Dataset(_)));
                out.push(Mount {
                    source,
                    target,
                    read_only,
                });
            }
            other => {
                r.error(
                    path,
                    format!(
                        "must be an object or \"SOURCE:TARGET[:ro]\", got {}",
                        super::reader::type_name(other)
                    ),
                );
                out.push(placeholder_mount());
            }
        }
    }
    out
}

/// Keeps later mounts at their indices after a broken one.
fn placeholder_mount() -> Mount {
    Mount {
        source: MountSource::Space(String::new()),
        target: String::new(),
        read_only: false,
    }
}

/// Crater mounts everything under `/mnt`: a space folder `mnist` appears at
/// `/mnt/mnist`, a dataset `imagenet` at `/mnt/imagenet`.
fn default_target(source: &MountSource) -> String {
    match source {
        MountSource::Space(p) => format!("/mnt/{}", p.trim_matches('/')),
        MountSource::Dataset(d) => format!("/mnt/{d}"),
    }
}

/// `SRC:DST[:ro|:rw]`, where SRC is a folder of the user's space or
/// `dataset:NAME`; DST may be left out (`/mnt/SRC`). Used by `kiln run --mount`.
pub fn parse_mount_shorthand(s: &str) -> Result<Mount, String> {
    let (source, rest) = match s.strip_prefix("dataset:") {
        Some(rest) => {
            let (name, rest) = rest.split_once(':').unwrap_or((rest, ""));
            (MountSource::Dataset(name.to_owned()), rest)
        }
        None => {
            let (src, rest) = s.split_once(':').unwrap_or((s, ""));
            (MountSource::Space(src.to_owned()), rest)
        }
    };
    let (target, mode) = match rest.rsplit_once(':') {
        Some((t, m)) if m == "ro" || m == "rw" => (t, Some(m)),
        _ if rest == "ro" || rest == "rw" => ("", Some(rest)),
        _ => (rest, None),
    };
    let is_dataset = matches!(source, MountSource::Dataset(_));
    let read_only = match mode {
        Some("ro") => true,
        Some(_) => false,
        None => is_dataset,
    };
    if matches!(&source, MountSource::Space(p) | MountSource::Dataset(p) if p.is_empty()) {
        return Err(format!("mount {s:?} has no source; write SRC:DST[:ro]"));
    }
    let target = if target.is_empty() {
        default_target(&source)
    } else {
        target.to_owned()
    };
    Ok(Mount {
        source,
        target,
        read_only,
    })
}
