//! The canonical job written back out: kiln's native JSON/YAML (lossless) and
//! OpenPAI v1 JSON for jobs that fit it.

use serde_json::{json, Map, Value};

use crate::error::{Issue, SpecError};
use crate::model::{JobSpec, RestartPolicy};

pub fn to_json(job: &JobSpec) -> Result<String, SpecError> {
    serde_json::to_string_pretty(job).map_err(|e| SpecError::Encode {
        format: "JSON",
        message: e.to_string(),
    })
}

pub fn to_yaml(job: &JobSpec) -> Result<String, SpecError> {
    serde_norway::to_string(job).map_err(|e| SpecError::Encode {
        format: "YAML",
        message: e.to_string(),
    })
}

/// OpenPAI v1 JSON. Fields v1 has no place for are refused, each named,
/// rather than dropped.
pub fn to_openpai_v1(job: &JobSpec) -> Result<Value, SpecError> {
    let mut lost = Vec::new();
    let mut lose = |path: &str, what: &str| {
        lost.push(Issue::new(path, format!("OpenPAI v1 has no {what}")));
    };
    if job.description.is_some() {
        lose("description", "description");
    }
    if job.preemptible.is_some() {
        lose("preemptible", "preemptible flag");
    }
    if job.priority != 0 {
        lose("priority", "priority");
    }
    if job.max_restarts.is_some() {
        lose("maxRestarts", "in-place restart budget");
    }
    if job.max_duration_secs.is_some() {
        lose("maxDuration", "maximum duration");
    }
    if job.working_dir.is_some() {
        lose("workingDir", "working folder");
    }
    if !job.mounts.is_empty() {
        lose("mounts", "mounts (use dataDir / codeDir / outputDir)");
    }
    if !job.secrets.is_empty() {
        lose("secrets", "secrets");
    }
    if job.pytorch.is_some() {
        lose("pytorch", "framework hints");
    }
    if job.image.is_none() {
        lose("image", "job without an image (image is required)");
    }
    for (i, r) in job.roles.iter().enumerate() {
        let at = |f: &str| format!("roles[{i}].{f}");
        if r.image.is_some() {
            lose(&at("image"), "per-role image");
        }
        if r.gpu_type.is_some() {
            lose(&at("gpuType"), "per-role GPU type");
        }
        if !r.env.is_empty() {
            lose(&at("env"), "per-role environment (use jobEnvs)");
        }
        if r.restart_policy != RestartPolicy::Never {
            lose(&at("restartPolicy"), "restart policy");
        }
    }
    if !lost.is_empty() {
        return Err(SpecError::NotRepresentable {
            format: "OpenPAI v1",
            issues: lost,
        });
    }

    let mut out = Map::new();
    out.insert("jobName".into(), json!(job.name));
    out.insert("image".into(), json!(job.image));
    for (key, v) in [
        ("authFile", &job.auth_file),
        ("dataDir", &job.data_dir),
        ("outputDir", &job.output_dir),
        ("codeDir", &job.code_dir),
        ("virtualCluster", &job.queue),
        ("gpuType", &job.gpu_type),
    ] {
        if let Some(v) = v {
            out.insert(key.into(), json!(v));
        }
    }
    out.insert("retryCount".into(), json!(job.retry_count));
    let roles: Vec<Value> = job
        .roles
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "taskNumber": r.replicas,
                "cpuNumber": r.cpus,
                "memoryMB": r.memory_mb,
                "shmMB": r.shm_mb,
                "gpuNumber": r.gpus,
                "portList": r.ports.iter().map(|p| json!({
                    "label": p.label, "beginAt": p.begin_at, "portNumber": p.count,
                })).collect::<Vec<_>>(),
                "command": r.command,
                "minFailedTaskCount": r.min_failed,
                "minSucceededTaskCount": r.min_succeeded,
            })
        })
        .collect();
    out.insert("taskRoles".into(), Value::Array(roles));
    if !job.job_envs.is_empty() {
        out.insert(
            "jobEnvs".into(),
            Value::Object(
                job.job_envs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        );
    }
    if !job.extras.is_empty() {
        out.insert("extras".into(), Value::Object(job.extras.clone()));
    }
    Ok(Value::Object(out))
}
