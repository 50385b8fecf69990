//! OpenPAI job protocol v1: the JSON of seed 002's field table.

use serde_json::{Map, Value};

use super::reader::{field, index, Reader};
use crate::model::{JobSpec, TaskRole, DEFAULT_SHM_MB};
use crate::validate::{limits, Field, Paths};

const JOB_KEYS: &[&str] = &[
    "jobName",
    "image",
    "authFile",
    "dataDir",
    "outputDir",
    "codeDir",
    "virtualCluster",
    "taskRoles",
    "gpuType",
    "retryCount",
    "jobEnvs",
    "extras",
];

const ROLE_KEYS: &[&str] = &[
    "name",
    "taskNumber",
    "cpuNumber",
    "memoryMB",
    "shmMB",
    "gpuNumber",
    "portList",
    "command",
    "minFailedTaskCount",
    "minSucceededTaskCount",
];

pub struct V1Paths;

impl Paths for V1Paths {
    fn path(&self, f: Field<'_>) -> String {
        let role = |r: usize, key: &str| field(&index("taskRoles", r), key);
        let port = |r: usize, p: usize, key: &str| field(&index(&role(r, "portList"), p), key);
        match f {
            Field::Name => "jobName".into(),
            Field::User => "user".into(),
            Field::Queue => "virtualCluster".into(),
            Field::Image => "image".into(),
            Field::GpuType | Field::RoleGpuType(_) => "gpuType".into(),
            Field::WorkingDir => "workingDir".into(),
            Field::MaxDuration => "maxDuration".into(),
            Field::Roles => "taskRoles".into(),
            Field::NprocPerNode => "nprocPerNode".into(),
            Field::JobEnv(k) => field("jobEnvs", k),
            Field::Secret(k) => field("secrets", k),
            Field::MountSource(i) | Field::MountTarget(i) | Field::MountReadOnly(i) => {
                index("mounts", i)
            }
            Field::RoleName(r) => role(r, "name"),
            Field::Replicas(r) => role(r, "taskNumber"),
            Field::Cpus(r) => role(r, "cpuNumber"),
            Field::Memory(r) => role(r, "memoryMB"),
            Field::Shm(r) => role(r, "shmMB"),
            Field::Pids(r) => role(r, "pids"),
            Field::Gpus(r) => role(r, "gpuNumber"),
            Field::RoleImage(_) => "image".into(),
            Field::Command(r) => role(r, "command"),
            Field::MinFailed(r) => role(r, "minFailedTaskCount"),
            Field::MinSucceeded(r) => role(r, "minSucceededTaskCount"),
            Field::RoleEnv(_, k) => field("jobEnvs", k),
            Field::PortLabel(r, p) => port(r, p, "label"),
            Field::PortBeginAt(r, p) => port(r, p, "beginAt"),
            Field::PortCount(r, p) => port(r, p, "portNumber"),
        }
    }
}

pub(crate) fn read(doc: &Map<String, Value>, r: &mut Reader) -> (JobSpec, Box<dyn Paths>) {
    r.unknown_keys(doc, "", JOB_KEYS);
    let mut roles = Vec::new();
    match doc.get("taskRoles") {
        None | Some(Value::Null) => r.error("taskRoles", "is required"),
        Some(v) => {
            let list = r
                .array(v, "taskRoles")
                .filter(|l| r.within(l.len(), limits::MAX_ROLES, "taskRoles"));
            if let Some(list) = list {
                if list.is_empty() {
                    r.error("taskRoles", "at least one task role is required");
                }
                for (i, item) in list.iter().enumerate() {
                    let path = index("taskRoles", i);
                    match r.object(item, &path) {
                        Some(m) => roles.push(read_role(m, &path, r)),
                        None => roles.push(super::placeholder_role()),
                    }
                }
            }
        }
    }
    let name = r.req_string(doc, "jobName", "").unwrap_or_default();
    let job = JobSpec {
        code_dir: super::read_space_dir(doc, "codeDir", &name, r),
        data_dir: super::read_space_dir(doc, "dataDir", &name, r),
        output_dir: super::read_space_dir(doc, "outputDir", &name, r),
        name,
        user: None,
        description: None,
        queue: r.opt_string(doc, "virtualCluster", ""),
        preemptible: None,
        priority: 0,
        image: r.req_string(doc, "image", ""),
        auth_file: r.opt_string(doc, "authFile", ""),
        gpu_type: r.opt_string(doc, "gpuType", ""),
        retry_count: r
            .opt_uint(doc, "retryCount", "", limits::MAX_RETRIES)
            .unwrap_or(0) as u32,
        max_restarts: None,
        max_duration_secs: None,
        working_dir: None,
        mounts: Vec::new(),
        job_envs: r
            .opt_object(doc, "jobEnvs", "")
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        secrets: Default::default(),
        extras: r.opt_object(doc, "extras", "").cloned().unwrap_or_default(),
        pytorch: None,
        roles,
    };
    (job, Box::new(V1Paths))
}

fn read_role(m: &Map<String, Value>, path: &str, r: &mut Reader) -> TaskRole {
    r.unknown_keys(m, path, ROLE_KEYS);
    let ports = super::read_ports(
        m,
        path,
        &super::PortKeys {
            list: "portList",
            count: "portNumber",
            required: true,
        },
        r,
    );
    TaskRole {
        pids: None,
        name: r.req_string(m, "name", path).unwrap_or_default(),
        replicas: r
            .req_uint(m, "taskNumber", path, limits::MAX_REPLICAS)
            .unwrap_or(1) as u32,
        cpus: r
            .req_uint(m, "cpuNumber", path, limits::MAX_CPUS)
            .unwrap_or(1) as u32,
        memory_mb: r
            .req_uint(m, "memoryMB", path, limits::MAX_MEMORY_MB)
            .unwrap_or(limits::MIN_MEMORY_MB),
        shm_mb: r
            .opt_uint(m, "shmMB", path, limits::MAX_MEMORY_MB)
            .unwrap_or(DEFAULT_SHM_MB),
        gpus: r
            .req_uint(m, "gpuNumber", path, limits::MAX_GPUS)
            .unwrap_or(0) as u32,
        gpu_type: None,
        image: None,
        ports,
        command: r.req_string(m, "command", path).unwrap_or_default(),
        min_failed: r.nullable_uint(m, "minFailedTaskCount", path, limits::MAX_REPLICAS, Some(1)),
        min_succeeded: r.nullable_uint(
            m,
            "minSucceededTaskCount",
            path,
            limits::MAX_REPLICAS,
            None,
        ),
        env: Default::default(),
        restart_policy: Default::default(),
    }
}
