//! OpenPAI job protocol v2 (`protocolVersion: 2`): prerequisites, a map of task
//! roles, `<% $parameters.x %>` templates in commands, secrets, deployments.

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::reader::{field, index, scalar_text, type_name, Reader};
use crate::ids::quoted;
use crate::model::{JobSpec, PortSpec, TaskRole, DEFAULT_SHM_MB};
use crate::validate::{limits, Field, Paths};

const JOB_KEYS: &[&str] = &[
    "protocolVersion",
    "name",
    "type",
    "version",
    "contributor",
    "description",
    "prerequisites",
    "parameters",
    "secrets",
    "jobRetryCount",
    "taskRoles",
    "deployments",
    "defaults",
    "extras",
];

const ROLE_KEYS: &[&str] = &[
    "instances",
    "completion",
    "taskRetryCount",
    "dockerImage",
    "data",
    "output",
    "script",
    "extraContainerOptions",
    "resourcePerInstance",
    "commands",
];

#[derive(Default)]
pub struct V2Paths {
    roles: Vec<String>,
    /// Port labels per role, in order: v2 names ports by label.
    ports: Vec<Vec<String>>,
    /// Index of the prerequisite each role's dockerImage names.
    images: Vec<Option<usize>>,
}

impl V2Paths {
    fn image(&self, r: usize) -> String {
        match self.images.get(r).copied().flatten() {
            Some(i) => field(&index("prerequisites", i), "uri"),
            None => "prerequisites".into(),
        }
    }
}

impl Paths for V2Paths {
    fn path(&self, f: Field<'_>) -> String {
        let role = |r: usize| {
            field(
                "taskRoles",
                self.roles.get(r).map(String::as_str).unwrap_or("?"),
            )
        };
        let res = |r: usize, key: &str| field(&field(&role(r), "resourcePerInstance"), key);
        let port = |r: usize, p: usize| {
            let label = self.ports.get(r).and_then(|l| l.get(p));
            field(&res(r, "ports"), label.map_or("?", String::as_str))
        };
        match f {
            Field::Name => "name".into(),
            Field::User => "user".into(),
            Field::Queue => "defaults.virtualCluster".into(),
            Field::Image => self.image(0),
            Field::RoleImage(r) => self.image(r),
            Field::GpuType => "gpuType".into(),
            Field::WorkingDir => "workingDir".into(),
            Field::MaxDuration => "maxDuration".into(),
            Field::Roles => "taskRoles".into(),
            Field::NprocPerNode => "nprocPerNode".into(),
            Field::JobEnv(k) => field("jobEnvs", k),
            Field::Secret(k) => field("secrets", k),
            Field::MountSource(i) | Field::MountTarget(i) | Field::MountReadOnly(i) => {
                index("mounts", i)
            }
            Field::RoleName(r) => role(r),
            Field::Replicas(r) => field(&role(r), "instances"),
            Field::Cpus(r) => res(r, "cpu"),
            Field::Memory(r) => res(r, "memoryMB"),
            Field::Gpus(r) => res(r, "gpu"),
            Field::Shm(r) => field(&field(&role(r), "extraContainerOptions"), "shmMB"),
            Field::Pids(r) => role(r),
            Field::RoleGpuType(r) => format!(
                "extras.hivedScheduler.taskRoles.{}.skuType",
                self.roles.get(r).map(String::as_str).unwrap_or("?")
            ),
            Field::Command(r) => field(&role(r), "commands"),
            Field::MinFailed(r) => field(&field(&role(r), "completion"), "minFailedInstances"),
            Field::MinSucceeded(r) => {
                field(&field(&role(r), "completion"), "minSucceededInstances")
            }
            Field::RoleEnv(r, k) => field(&field(&role(r), "env"), k),
            Field::PortLabel(r, p) | Field::PortBeginAt(r, p) | Field::PortCount(r, p) => {
                port(r, p)
            }
        }
    }
}

pub(crate) fn read(doc: &Map<String, Value>, r: &mut Reader) -> (JobSpec, Box<dyn Paths>) {
    r.unknown_keys(doc, "", JOB_KEYS);
    match doc.get("protocolVersion") {
        Some(Value::Number(n)) if n.as_u64() == Some(2) => {}
        Some(Value::String(s)) if s == "2" => {}
        Some(other) => r.error(
            "protocolVersion",
            format!("must be 2, got {}", compact(other)),
        ),
        None => {}
    }
    for key in ["version", "contributor"] {
        if doc.contains_key(key) {
            r.warn(key, "protocol metadata that kiln does not keep");
        }
    }
    if let Some(t) = r.opt_string(doc, "type", "") {
        if t != "job" {
            r.error("type", format!("must be job, got {}", quoted(&t)));
        }
    }

    let images = read_prerequisites(doc, r);
    let parameters = r
        .opt_object(doc, "parameters", "")
        .cloned()
        .unwrap_or_default();
    let secret_tree = r
        .opt_object(doc, "secrets", "")
        .cloned()
        .unwrap_or_default();
    let mut secrets = IndexMap::new();
    flatten_secrets(&secret_tree, "", "secrets", &mut secrets, r);

    let defaults = r.opt_object(doc, "defaults", "");
    if let Some(d) = defaults {
        r.unknown_keys(d, "defaults", &["virtualCluster", "deployment"]);
    }
    let queue = defaults.and_then(|d| r.opt_string(d, "virtualCluster", "defaults"));
    let deployment_name = defaults.and_then(|d| r.opt_string(d, "deployment", "defaults"));
    let hooks = read_deployment(doc, deployment_name.as_deref(), r);
    let extras = r.opt_object(doc, "extras", "").cloned().unwrap_or_default();
    let sku = sku_types(&extras);

    let mut names = Vec::new();
    let mut roles = Vec::new();
    let mut role_images: Vec<Option<(usize, String)>> = Vec::new();
    match doc.get("taskRoles") {
        None | Some(Value::Null) => r.error("taskRoles", "is required"),
        Some(v) => {
            let roles_map = r
                .object(v, "taskRoles")
                .filter(|m| r.within(m.len(), limits::MAX_ROLES, "taskRoles"));
            if let Some(m) = roles_map {
                if m.is_empty() {
                    r.error("taskRoles", "at least one task role is required");
                }
                for (name, spec) in m {
                    let path = field("taskRoles", name);
                    let Some(spec) = r.object(spec, &path) else {
                        let mut placeholder = super::placeholder_role();
                        placeholder.name = name.clone();
                        roles.push(placeholder);
                        role_images.push(None);
                        names.push(name.clone());
                        continue;
                    };
                    let ctx = Templates {
                        parameters: &parameters,
                        secrets: &secret_tree,
                    };
                    let (pre, post) = hooks.get(name).cloned().unwrap_or_default();
                    let mut role = read_role(name, spec, &path, &ctx, (&pre, &post), r);
                    role.gpu_type = sku.get(name).cloned();
                    role_images.push(image_of(spec, &path, &images, r));
                    names.push(name.clone());
                    roles.push(role);
                }
            }
        }
    }
    for name in hooks.keys() {
        if !names.contains(name) {
            r.error(
                format!("deployments.taskRoles.{name}"),
                format!("names task role {} which does not exist", quoted(name)),
            );
        }
    }

    // The job's image is the first role's; other roles carry their own only
    // where it differs.
    let image_index: Vec<Option<usize>> = role_images
        .iter()
        .map(|i| i.as_ref().map(|(i, _)| *i))
        .collect();
    let uris: Vec<Option<String>> = role_images.into_iter().map(|i| i.map(|(_, u)| u)).collect();
    let image = uris.first().cloned().flatten();
    for (role, img) in roles.iter_mut().zip(uris) {
        if img != image {
            role.image = img;
        }
    }
    let port_labels = roles
        .iter()
        .map(|r| r.ports.iter().map(|p| p.label.clone()).collect())
        .collect();

    let job = JobSpec {
        name: r.req_string(doc, "name", "").unwrap_or_default(),
        user: None,
        description: r.opt_string(doc, "description", ""),
        queue,
        preemptible: None,
        priority: 0,
        image,
        auth_file: None,
        code_dir: None,
        data_dir: None,
        output_dir: None,
        gpu_type: None,
        retry_count: r
            .opt_uint(doc, "jobRetryCount", "", limits::MAX_RETRIES)
            .unwrap_or(0) as u32,
        max_restarts: None,
        max_duration_secs: None,
        working_dir: None,
        mounts: Vec::new(),
        job_envs: IndexMap::new(),
        secrets,
        extras,
        pytorch: None,
        roles,
    };
    (
        job,
        Box::new(V2Paths {
            roles: names,
            ports: port_labels,
            images: image_index,
        }),
    )
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    quoted(&s)
}

/// Docker image prerequisites by name → (index, uri).
fn read_prerequisites(
    doc: &Map<String, Value>,
    r: &mut Reader,
) -> IndexMap<String, (usize, String)> {
    let mut images = IndexMap::new();
    let Some(list) = r.opt_list(doc, "prerequisites", "", limits::MAX_ROLES) else {
        return images;
    };
    for (i, item) in list.iter().enumerate() {
        let path = index("prerequisites", i);
        let Some(m) = r.object(item, &path) else {
            continue;
        };
        let kind = r.req_string(m, "type", &path).unwrap_or_default();
        let name = r.req_string(m, "name", &path).unwrap_or_default();
        match kind.as_str() {
            "dockerimage" => {
                r.unknown_keys(
                    m,
                    &path,
                    &[
                        "protocolVersion",
                        "name",
                        "type",
                        "version",
                        "contributor",
                        "description",
                        "uri",
                        "auth",
                    ],
                );
                if m.contains_key("auth") {
                    r.warn(
                        field(&path, "auth"),
                        "these credentials are not read: store yours once with `kiln registry login REGISTRY`",
                    );
                }
                if let Some(uri) = r.req_string(m, "uri", &path) {
                    images.insert(name, (i, uri));
                }
            }
            "script" | "output" | "data" => r.warn(
                &path,
                format!(
                    "{kind} prerequisites are not supported by kiln and are ignored; use mounts"
                ),
            ),
            "" => {}
            other => r.error(
                field(&path, "type"),
                format!(
                    "must be dockerimage, script, output or data, got {}",
                    quoted(other)
                ),
            ),
        }
    }
    images
}

fn image_of(
    spec: &Map<String, Value>,
    path: &str,
    images: &IndexMap<String, (usize, String)>,
    r: &mut Reader,
) -> Option<(usize, String)> {
    let name = r.req_string(spec, "dockerImage", path)?;
    match images.get(&name) {
        Some(found) => Some(found.clone()),
        None => {
            r.error(
                field(path, "dockerImage"),
                format!(
                    "names prerequisite {} but no dockerimage prerequisite has that name",
                    quoted(&name)
                ),
            );
            None
        }
    }
}

/// preCommands / postCommands per role from the chosen deployment.
fn read_deployment(
    doc: &Map<String, Value>,
    chosen: Option<&str>,
    r: &mut Reader,
) -> IndexMap<String, (Vec<String>, Vec<String>)> {
    let mut hooks = IndexMap::new();
    let Some(list) = r.opt_list(doc, "deployments", "", limits::MAX_ROLES) else {
        if let Some(name) = chosen {
            r.error(
                "defaults.deployment",
                format!(
                    "names deployment {} but there are no deployments",
                    quoted(name)
                ),
            );
        }
        return hooks;
    };
    let mut found = chosen.is_none();
    for (i, item) in list.iter().enumerate() {
        let path = index("deployments", i);
        let Some(m) = r.object(item, &path) else {
            continue;
        };
        r.unknown_keys(m, &path, &["name", "taskRoles"]);
        let name = r.req_string(m, "name", &path).unwrap_or_default();
        // Without defaults.deployment, OpenPAI uses the first deployment.
        let used = match chosen {
            Some(c) => c == name,
            None => i == 0,
        };
        if !used {
            continue;
        }
        found = true;
        let Some(roles) = r.opt_object(m, "taskRoles", &path) else {
            continue;
        };
        let rp = field(&path, "taskRoles");
        for (role, spec) in roles {
            let sp = field(&rp, role);
            let Some(spec) = r.object(spec, &sp) else {
                continue;
            };
            r.unknown_keys(spec, &sp, &["preCommands", "postCommands"]);
            let pre = string_list(spec, "preCommands", &sp, r);
            let post = string_list(spec, "postCommands", &sp, r);
            hooks.insert(role.clone(), (pre, post));
        }
    }
    if !found {
        r.error(
            "defaults.deployment",
            format!(
                "names deployment {} which does not exist",
                quoted(chosen.unwrap_or_default())
            ),
        );
    }
    hooks
}

fn string_list(m: &Map<String, Value>, key: &str, path: &str, r: &mut Reader) -> Vec<String> {
    let p = field(path, key);
    r.opt_array(m, key, path)
        .map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(i, v)| r.string_value(v, &index(&p, i)))
                .collect()
        })
        .unwrap_or_default()
}

/// `extras.hivedScheduler.taskRoles.<role>.skuType`: the GPU model of a role.
fn sku_types(extras: &Map<String, Value>) -> IndexMap<String, String> {
    extras
        .get("hivedScheduler")
        .and_then(|h| h.get("taskRoles"))
        .and_then(Value::as_object)
        .map(|roles| {
            roles
                .iter()
                .filter_map(|(name, spec)| {
                    let sku = spec.get("skuType")?.as_str()?;
                    Some((name.clone(), sku.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn flatten_secrets(
    tree: &Map<String, Value>,
    prefix: &str,
    path: &str,
    out: &mut IndexMap<String, String>,
    r: &mut Reader,
) {
    for (k, v) in tree {
        let name = secret_name(&format!("{prefix}{k}"));
        let at = field(path, k);
        match v {
            Value::Object(m) => flatten_secrets(m, &format!("{name}_"), &at, out, r),
            Value::Array(_) => r.error(at, "must be a string or a mapping of strings"),
            other => {
                if out.insert(name.clone(), scalar_text(other)).is_some() {
                    r.error(
                        at,
                        format!("two secrets become the variable KILN_SECRET_{name}; rename one"),
                    );
                }
            }
        }
    }
}

/// The environment variable suffix of a secret path: `docker.password` →
/// `docker_password`.
fn secret_name(path: &str) -> String {
    path.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

struct Templates<'a> {
    parameters: &'a Map<String, Value>,
    secrets: &'a Map<String, Value>,
}

impl Templates<'_> {
    /// Renders `<% $parameters.x %>` and turns `<% $secrets.x %>` into a
    /// reference to the secret's variable, so the value never lands in the
    /// stored command, its logs or `ps` output.
    fn render(&self, text: &str, path: &str, r: &mut Reader) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("<%") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("%>") else {
                r.error(path, "template `<%` is never closed with `%>`");
                return out;
            };
            let expr = after[..end].trim();
            out.push_str(&self.expand(expr, path, r));
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn expand(&self, expr: &str, path: &str, r: &mut Reader) -> String {
        if let Some(key) = expr.strip_prefix("$parameters.") {
            match lookup(self.parameters, key) {
                Some(v @ (Value::Object(_) | Value::Array(_))) => {
                    r.error(
                        path,
                        format!("parameter {key} is {}, not a value", type_name(v)),
                    );
                    String::new()
                }
                Some(v) => scalar_text(v),
                None => {
                    r.error(
                        path,
                        format!("uses parameter {key}, which is not defined in parameters"),
                    );
                    String::new()
                }
            }
        } else if let Some(key) = expr.strip_prefix("$secrets.") {
            match lookup(self.secrets, key) {
                Some(Value::Object(_) | Value::Array(_)) | None => {
                    r.error(
                        path,
                        format!("uses secret {key}, which is not defined in secrets"),
                    );
                    String::new()
                }
                Some(_) => format!("${{KILN_SECRET_{}}}", secret_name(key)),
            }
        } else {
            r.error(
                path,
                format!(
                    "template {} is not supported; use <% $parameters.NAME %> or <% $secrets.NAME %>",
                    quoted(&format!("<% {expr} %>"))
                ),
            );
            String::new()
        }
    }
}

fn lookup<'v>(tree: &'v Map<String, Value>, dotted: &str) -> Option<&'v Value> {
    let mut parts = dotted.split('.');
    let mut cur = tree.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn read_role(
    name: &str,
    spec: &Map<String, Value>,
    path: &str,
    templates: &Templates<'_>,
    (pre, post): (&[String], &[String]),
    r: &mut Reader,
) -> TaskRole {
    r.unknown_keys(spec, path, ROLE_KEYS);
    for key in ["data", "output", "script"] {
        if spec.contains_key(key) {
            r.warn(
                field(path, key),
                format!(
                    "{key} prerequisites are not supported by kiln and are ignored; use mounts"
                ),
            );
        }
    }
    if let Some(n) = r.opt_uint(spec, "taskRetryCount", path, limits::MAX_RETRIES) {
        if n > 0 {
            r.warn(
                field(path, "taskRetryCount"),
                "per-task retries are not supported (OpenPAI ignores them too); use jobRetryCount",
            );
        }
    }
    let completion = r.opt_object(spec, "completion", path);
    let cp = field(path, "completion");
    if let Some(c) = completion {
        r.unknown_keys(c, &cp, &["minFailedInstances", "minSucceededInstances"]);
    }
    let min_count = |key: &str, absent: Option<u32>, r: &mut Reader| match completion {
        None => absent,
        // OpenPAI writes -1 for "not set"; null means the same.
        Some(c) if c.get(key).and_then(Value::as_i64) == Some(-1) => None,
        Some(c) => r.nullable_uint(c, key, &cp, limits::MAX_REPLICAS, absent),
    };
    let min_failed = min_count("minFailedInstances", Some(1), r);
    let min_succeeded = min_count("minSucceededInstances", None, r);

    let rp = field(path, "resourcePerInstance");
    let res = r.opt_object(spec, "resourcePerInstance", path);
    if res.is_none() && !r.has_failed(&rp) {
        r.error(&rp, "is required");
    }
    let has_res = res.is_some();
    let empty = Map::new();
    let res = res.unwrap_or(&empty);
    r.unknown_keys(res, &rp, &["cpu", "memoryMB", "gpu", "ports"]);
    let mut ports = Vec::new();
    if let Some(pm) = r.opt_object(res, "ports", &rp) {
        let pp = field(&rp, "ports");
        for (label, count) in pm {
            let count = r
                .uint_value(count, &field(&pp, label), limits::MAX_PORTS)
                .unwrap_or(0);
            ports.push(PortSpec {
                label: label.clone(),
                begin_at: 0,
                count: count as u16,
            });
        }
    }
    let shm_mb = r
        .opt_object(spec, "extraContainerOptions", path)
        .and_then(|o| {
            let op = field(path, "extraContainerOptions");
            r.unknown_keys(o, &op, &["shmMB", "infiniband"]);
            if o.get("infiniband") == Some(&Value::Bool(true)) {
                r.warn(
                    field(&op, "infiniband"),
                    "InfiniBand devices are not passed to tasks by kiln",
                );
            }
            r.opt_uint(o, "shmMB", &op, limits::MAX_MEMORY_MB)
        })
        .unwrap_or(DEFAULT_SHM_MB);

    let cmd_path = field(path, "commands");
    let commands: Vec<String> = match spec.get("commands") {
        None | Some(Value::Null) => {
            r.error(&cmd_path, "is required");
            Vec::new()
        }
        Some(v) => r
            .array(v, &cmd_path)
            .map(|list| {
                list.iter()
                    .enumerate()
                    .filter_map(|(i, c)| r.string_value(c, &index(&cmd_path, i)))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let script: Vec<String> = pre
        .iter()
        .chain(&commands)
        .chain(post)
        .map(|line| templates.render(line, &cmd_path, r))
        .collect();

    TaskRole {
        pids: None,
        name: name.to_owned(),
        replicas: r
            .opt_uint(spec, "instances", path, limits::MAX_REPLICAS)
            .unwrap_or(1) as u32,
        cpus: if has_res {
            r.req_uint(res, "cpu", &rp, limits::MAX_CPUS).unwrap_or(1) as u32
        } else {
            1
        },
        memory_mb: if has_res {
            r.req_uint(res, "memoryMB", &rp, limits::MAX_MEMORY_MB)
                .unwrap_or(limits::MIN_MEMORY_MB)
        } else {
            limits::MIN_MEMORY_MB
        },
        shm_mb,
        gpus: r.opt_uint(res, "gpu", &rp, limits::MAX_GPUS).unwrap_or(0) as u32,
        gpu_type: None,
        image: None,
        ports,
        command: if commands.is_empty() {
            String::new()
        } else {
            script.join("\n")
        },
        min_failed,
        min_succeeded,
        env: Default::default(),
        restart_policy: Default::default(),
    }
}
