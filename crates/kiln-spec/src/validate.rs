//! The rules every job must satisfy, whatever format it came in. Rules run on
//! the canonical model; each format supplies [`Paths`] so an error names the
//! field as the user wrote it (`taskRoles[1].memoryMB` in OpenPAI JSON,
//! `roles[1].memory` in kiln's format).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::error::{Issue, SpecError};
use crate::ids::{
    check_job_name, check_port_label, check_queue_name, check_role_name, check_user_name, quoted,
};
use crate::model::{JobSpec, MountSource};

/// Bounds that keep every sum the scheduler makes far from overflow and refuse
/// requests no cluster could meet.
pub mod limits {
    pub const MAX_REPLICAS: u64 = 10_000;
    pub const MAX_TASKS: u64 = 10_000;
    pub const MAX_ROLES: usize = 64;
    pub const MAX_CPUS: u64 = 4096;
    pub const MIN_MEMORY_MB: u64 = 100;
    pub const MAX_MEMORY_MB: u64 = 1 << 31;
    pub const MAX_GPUS: u64 = 1024;
    pub const MAX_PORTS: u64 = 1000;
    pub const MAX_RETRIES: u64 = 1000;
    pub const MAX_DURATION_SECS: u64 = 366 * 86_400;
    pub const MAX_NPROC: u64 = 1024;
    pub const MAX_TEXT: usize = 1024;
    pub const MAX_PORT_LABELS: usize = 64;
    pub const MAX_MOUNTS: usize = 64;
    pub const MAX_ENV: usize = 1024;
    /// Problems reported for one submission; the rest are counted.
    pub const MAX_ISSUES: usize = 200;
}

/// A field of the canonical model, by position.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    Name,
    User,
    Queue,
    Image,
    GpuType,
    WorkingDir,
    MaxDuration,
    Roles,
    NprocPerNode,
    JobEnv(&'a str),
    Secret(&'a str),
    MountSource(usize),
    MountTarget(usize),
    MountReadOnly(usize),
    RoleName(usize),
    Replicas(usize),
    Cpus(usize),
    Memory(usize),
    Shm(usize),
    Pids(usize),
    Gpus(usize),
    RoleGpuType(usize),
    RoleImage(usize),
    Command(usize),
    MinFailed(usize),
    MinSucceeded(usize),
    RoleEnv(usize, &'a str),
    PortLabel(usize, usize),
    PortBeginAt(usize, usize),
    PortCount(usize, usize),
}

/// Where a canonical field sits in the document the user submitted.
pub trait Paths {
    fn path(&self, field: Field<'_>) -> String;
}

/// Variables kiln sets in every task; a spec may not set them itself, or a
/// job could break its own rendezvous or escape its GPU placement.
pub fn reserved_env(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "MASTER_ADDR",
        "MASTER_PORT",
        "WORLD_SIZE",
        "RANK",
        "LOCAL_RANK",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "PYTHONUNBUFFERED",
    ];
    const PREFIXES: &[&str] = &["PAI_", "PET_", "KILN_"];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Checks a job built in code (CLI flags, API edits) against every rule, with
/// paths in kiln's native format.
pub fn validate_job(job: &JobSpec) -> Result<(), SpecError> {
    let paths = crate::formats::native::NativePaths { single: false };
    let (issues, _) = validate(job, &paths, &HashSet::new(), false);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(SpecError::Invalid { issues })
    }
}

struct Check<'p> {
    paths: &'p dyn Paths,
    skip: &'p HashSet<String>,
    issues: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Check<'_> {
    /// Records `msg` at `field` unless that field (or what holds it) already
    /// failed to parse.
    fn fail(&mut self, field: Field<'_>, msg: impl Into<String>) {
        let path = self.paths.path(field);
        if !self.failed_within(&path) {
            self.issues.push(Issue::new(path, msg));
        }
    }

    fn skipped(&self, field: Field<'_>) -> bool {
        self.failed_within(&self.paths.path(field))
    }

    /// Whether `path` or a field holding it failed to parse: looks up each
    /// ancestor (`a.b[1].c` → `a.b[1]` → `a.b` → `a`), never scanning the set.
    fn failed_within(&self, path: &str) -> bool {
        if self.skip.is_empty() {
            return false;
        }
        let mut p = path;
        loop {
            if self.skip.contains(p) {
                return true;
            }
            match p.rfind(['.', '[']) {
                Some(i) if i > 0 => p = &p[..i],
                _ => return false,
            }
        }
    }

    fn name(&mut self, field: Field<'_>, r: Result<(), String>) {
        if let Err(e) = r {
            self.fail(field, e);
        }
    }

    /// An image reference (`[registry/]name[:tag][@digest]`), which becomes
    /// an argument of the container engine: never an option.
    fn image(&mut self, field: Field<'_>, v: &Option<String>) {
        let Some(v) = v else { return };
        if let Err(e) = plain_text(v) {
            self.fail(field, e);
            return;
        }
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
        // A first part with a colon is a registry's host:port when a path
        // follows; podman would read other forms (`oci:/path`,
        // `containers-storage:…`) as transports, which copy from anywhere.
        const TRANSPORTS: &[&str] = &[
            "docker",
            "docker-archive",
            "docker-daemon",
            "oci",
            "oci-archive",
            "dir",
            "containers-storage",
            "sif",
            "tarball",
            "ostree",
            "atomic",
        ];
        let transport = v
            .split_once(':')
            .is_some_and(|(t, _)| TRANSPORTS.contains(&t));
        let bad_host = v.split_once('/').is_some_and(|(first, _)| {
            first.split_once(':').is_some_and(|(_, port)| {
                port.is_empty() || !port.chars().all(|c| c.is_ascii_digit())
            })
        });
        if v.is_empty()
            || v.len() > 512
            || !v.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !v.chars().all(ok_char)
            || transport
            || bad_host
        {
            self.fail(
                field,
                format!(
                    "{} is not an image reference ([registry/]name[:tag][@digest], starting with a letter or digit)",
                    quoted(v)
                ),
            );
        }
    }

    fn text(&mut self, field: Field<'_>, v: &Option<String>) {
        if let Some(v) = v {
            if let Err(e) = plain_text(v) {
                self.fail(field, e);
            }
        }
    }

    fn range(&mut self, field: Field<'_>, got: u64, min: u64, max: u64) {
        if got < min {
            self.fail(field, format!("must be at least {min}, got {got}"));
        } else if got > max {
            self.fail(field, format!("must be at most {max}, got {got}"));
        }
    }

    fn env_name(&mut self, field: Field<'_>, key: &str) {
        if key.is_empty() || key.contains(['=', '\0']) || key.len() > limits::MAX_TEXT {
            self.fail(
                field,
                format!("{} is not a valid environment variable name", quoted(key)),
            );
        } else if reserved_env(key) {
            self.fail(
                field,
                format!("{key} is set by kiln for every task and cannot be overridden"),
            );
        }
    }
}

/// A short single-line value: no control characters, bounded length.
fn plain_text(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if v.len() > limits::MAX_TEXT {
        return Err(format!(
            "must be at most {} characters, got {}",
            limits::MAX_TEXT,
            v.len()
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("{} contains a control character", quoted(v)));
    }
    Ok(())
}

/// A path that stays where it is put: no `..`, no NUL, no empty components.
fn clean_path(p: &str, absolute: bool) -> Result<(), String> {
    if p.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if p.len() > limits::MAX_TEXT {
        return Err(format!("must be at most {} characters", limits::MAX_TEXT));
    }
    if absolute && !p.starts_with('/') {
        return Err(format!("{} must be an absolute path", quoted(p)));
    }
    if !absolute && p.starts_with('/') {
        return Err(format!(
            "{} must be relative to your space, without a leading '/'",
            quoted(p)
        ));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("{} must not contain '..'", quoted(p)));
    }
    if p.chars().any(char::is_control) {
        return Err(format!("{} contains a control character", quoted(p)));
    }
    Ok(())
}

/// Every rule, reported all at once, and the warnings. `skip` holds paths
/// that failed to parse.
pub(crate) fn validate(
    job: &JobSpec,
    paths: &dyn Paths,
    skip: &HashSet<String>,
    stored: bool,
) -> (Vec<Issue>, Vec<Issue>) {
    use limits::*;
    let mut c = Check {
        paths,
        skip,
        issues: Vec::new(),
        warnings: Vec::new(),
    };

    c.name(
        Field::Name,
        if stored {
            crate::ids::check_stored_job_name(&job.name)
        } else {
            check_job_name(&job.name)
        },
    );
    if let Some(user) = &job.user {
        c.name(Field::User, check_user_name(user));
    }
    if let Some(q) = &job.queue {
        c.name(Field::Queue, check_queue_name(q));
    }
    c.image(Field::Image, &job.image);
    c.text(Field::GpuType, &job.gpu_type);
    if let Some(dir) = &job.working_dir {
        if let Err(e) = clean_path(dir, true) {
            c.fail(Field::WorkingDir, e);
        }
    }
    if let Some(secs) = job.max_duration_secs {
        c.range(Field::MaxDuration, secs, 1, MAX_DURATION_SECS);
    }
    if let Some(n) = job.pytorch.as_ref().and_then(|p| p.nproc_per_node) {
        c.range(Field::NprocPerNode, u64::from(n), 1, MAX_NPROC);
    }

    for (key, value) in &job.job_envs {
        c.env_name(Field::JobEnv(key), key);
        if matches!(value, Value::Array(_) | Value::Object(_)) {
            c.fail(
                Field::JobEnv(key),
                "must be a string, number or boolean (it becomes an environment variable)",
            );
        }
        if let Value::String(s) = value {
            if s.contains('\0') {
                c.fail(Field::JobEnv(key), "contains a NUL byte");
            }
        }
    }
    for (key, value) in &job.secrets {
        if key.is_empty()
            || !key
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            c.fail(
                Field::Secret(key),
                format!(
                    "secret name {} may only contain letters, digits and '_'",
                    quoted(key)
                ),
            );
        }
        if value.contains('\0') {
            c.fail(Field::Secret(key), "contains a NUL byte");
        }
    }

    let mut targets: HashMap<&str, usize> = HashMap::new();
    for (i, m) in job.mounts.iter().enumerate() {
        match &m.source {
            MountSource::Space(p) => {
                if let Err(e) = clean_path(p, false) {
                    c.fail(Field::MountSource(i), e);
                }
            }
            MountSource::Dataset(name) => {
                c.name(Field::MountSource(i), check_job_name(name));
                if !m.read_only {
                    c.fail(
                        Field::MountReadOnly(i),
                        "datasets are always mounted read-only",
                    );
                }
            }
        }
        if let Err(e) = clean_path(&m.target, true) {
            c.fail(Field::MountTarget(i), e);
        } else if m.target.trim_end_matches('/').is_empty() {
            c.fail(Field::MountTarget(i), "cannot mount over '/'");
        } else if let Some(first) = targets.insert(m.target.trim_end_matches('/'), i) {
            c.fail(
                Field::MountTarget(i),
                format!(
                    "{} is already the target of mount {first}",
                    quoted(&m.target)
                ),
            );
        }
    }

    if job.roles.is_empty() {
        c.fail(Field::Roles, "at least one task role is required");
    }
    if job.roles.len() > MAX_ROLES {
        c.fail(
            Field::Roles,
            format!("at most {MAX_ROLES} task roles, got {}", job.roles.len()),
        );
    }
    if job.total_tasks() > MAX_TASKS {
        c.fail(
            Field::Roles,
            format!(
                "at most {MAX_TASKS} tasks per job, got {}",
                job.total_tasks()
            ),
        );
    }

    let mut names: HashMap<&str, usize> = HashMap::new();
    for (r, role) in job.roles.iter().enumerate() {
        if let Err(e) = check_role_name(&role.name) {
            c.fail(Field::RoleName(r), e);
        } else if let Some(first) = names.insert(&role.name, r) {
            c.fail(
                Field::RoleName(r),
                format!(
                    "task role name {} is already used by task role {first}",
                    quoted(&role.name)
                ),
            );
        }
        let replicas = u64::from(role.replicas);
        c.range(Field::Replicas(r), replicas, 1, MAX_REPLICAS);
        c.range(Field::Cpus(r), u64::from(role.cpus), 1, MAX_CPUS);
        c.range(
            Field::Memory(r),
            role.memory_mb,
            MIN_MEMORY_MB,
            MAX_MEMORY_MB,
        );
        c.range(Field::Gpus(r), u64::from(role.gpus), 0, MAX_GPUS);
        let memory_ok = (MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&role.memory_mb)
            && !c.skipped(Field::Memory(r));
        if role.shm_mb < 1 {
            c.fail(Field::Shm(r), "must be at least 1, got 0");
        } else if role.shm_mb > role.memory_mb && memory_ok {
            c.fail(
                Field::Shm(r),
                format!(
                    "must be at most the task's memory ({} MB), got {}",
                    role.memory_mb, role.shm_mb
                ),
            );
        }
        // bwrap, its init and the task's shell are three already.
        if let Some(p) = role.pids {
            c.range(Field::Pids(r), u64::from(p), 8, 4_194_304);
        }
        c.text(Field::RoleGpuType(r), &role.gpu_type);
        c.image(Field::RoleImage(r), &role.image);
        if role.command.trim().is_empty() {
            c.fail(Field::Command(r), "must not be empty");
        } else if role.command.contains('\0') {
            c.fail(Field::Command(r), "contains a NUL byte");
        }
        for (field, count) in [
            (Field::MinFailed(r), role.min_failed),
            (Field::MinSucceeded(r), role.min_succeeded),
        ] {
            match count {
                Some(0) => c.fail(field, "must be null or at least 1, got 0"),
                // FrameworkController accepts this and it never triggers;
                // say so rather than refuse a job OpenPAI would run.
                Some(n) if u64::from(n) > replicas && !c.skipped(Field::Replicas(r)) => {
                    let path = c.paths.path(field);
                    c.warnings.push(Issue::new(
                        path,
                        format!(
                            "{n} is more than the role's {}, so it never triggers; null says that plainly",
                            crate::words::count(replicas, "task")
                        ),
                    ));
                }
                _ => {}
            }
        }
        for (key, value) in &role.env {
            c.env_name(Field::RoleEnv(r, key), key);
            if value.contains('\0') {
                c.fail(Field::RoleEnv(r, key), "contains a NUL byte");
            }
        }

        let mut labels: HashMap<&str, usize> = HashMap::new();
        let mut fixed: Vec<(u32, u32, usize)> = Vec::new();
        for (p, port) in role.ports.iter().enumerate() {
            if let Err(e) = check_port_label(&port.label) {
                c.fail(Field::PortLabel(r, p), e);
            } else if let Some(first) = labels.insert(&port.label, p) {
                c.fail(
                    Field::PortLabel(r, p),
                    format!(
                        "port label {} is already used by port {first}",
                        quoted(&port.label)
                    ),
                );
            }
            c.range(Field::PortCount(r, p), u64::from(port.count), 0, MAX_PORTS);
            if port.begin_at != 0 {
                let start = u32::from(port.begin_at);
                let end = start + u32::from(port.count);
                if end > 65_536 {
                    c.fail(
                        Field::PortBeginAt(r, p),
                        format!("ports {start}..{} run past 65535", end - 1),
                    );
                }
                if let Some((_, _, other)) = fixed.iter().find(|(s, e, _)| start < *e && *s < end) {
                    c.fail(
                        Field::PortBeginAt(r, p),
                        format!("overlaps the ports of port {other}"),
                    );
                }
                fixed.push((start, end, p));
            }
        }
    }
    (c.issues, c.warnings)
}
