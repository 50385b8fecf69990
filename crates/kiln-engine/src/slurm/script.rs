//! The words kiln says to Slurm (docs/engines.md 3.2, 3.3): one `sbatch` per attempt
//! that holds the whole gang, and one `srun` step per task. Argument lists, not shell
//! lines: the shell passes them to `Command::args`, so nothing needs quoting except
//! the one `--wrap` command.

use std::path::Path;
use std::time::Duration;

use crate::EngineError;

/// What one task of an attempt asks for, as kiln's spec says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    /// The task id (`worker-1`).
    pub task: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub gpus: u32,
    /// kiln's `gpuType`: a substring of a GPU model.
    pub gpu_type: Option<String>,
}

/// What Slurm allocates per task. Tasks of one shape share one block of options.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    /// At least 1: Slurm gives every task a CPU.
    pub cpus: u32,
    pub memory_mb: u64,
    pub gpus: u32,
    /// kiln's `gpuType`, where the task has GPUs.
    pub gpu_type: Option<String>,
}

/// The tasks of one shape, in task order; one component of the Slurm job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeGroup {
    pub shape: Shape,
    pub tasks: Vec<String>,
}

fn shape_of(t: &TaskRequest) -> Shape {
    Shape {
        cpus: t.cpus.max(1),
        memory_mb: t.memory_mb,
        gpus: t.gpus,
        gpu_type: t.gpu_type.clone().filter(|_| t.gpus > 0),
    }
}

/// Groups tasks by shape, shapes in order of first appearance and tasks in task
/// order. With `pad` (`--slurm-pad-shapes`) every task takes the largest shape, so
/// the job is a plain one that the main scheduler can start at once; that is not
/// possible when tasks ask for different GPU types, and they stay apart.
pub fn group_by_shape(tasks: &[TaskRequest], pad: bool) -> Vec<ShapeGroup> {
    let mut groups: Vec<ShapeGroup> = Vec::new();
    for t in tasks {
        let shape = shape_of(t);
        match groups.iter_mut().find(|g| g.shape == shape) {
            Some(g) => g.tasks.push(t.task.clone()),
            None => groups.push(ShapeGroup {
                shape,
                tasks: vec![t.task.clone()],
            }),
        }
    }
    if !pad || groups.len() < 2 {
        return groups;
    }
    let mut types = groups.iter().filter_map(|g| g.shape.gpu_type.as_ref());
    let first = types.next();
    if types.any(|t| Some(t) != first) {
        return groups;
    }
    let shape = Shape {
        cpus: groups.iter().map(|g| g.shape.cpus).max().unwrap_or(1),
        memory_mb: groups.iter().map(|g| g.shape.memory_mb).max().unwrap_or(0),
        gpus: groups.iter().map(|g| g.shape.gpus).max().unwrap_or(0),
        gpu_type: first.cloned(),
    };
    let tasks = tasks.iter().map(|t| t.task.clone()).collect();
    vec![ShapeGroup { shape, tasks }]
}

/// Picks the one Slurm gres type that kiln's `gpuType` names: a case-insensitive
/// substring, as locally (`A100` matches `nvidia_a100_80gb`). An exact match wins
/// over longer ones. None or several is an error that names the types there are, so
/// the user can correct the spec.
pub fn match_gpu_type<'a>(wanted: &str, types: &'a [String]) -> Result<&'a str, EngineError> {
    let w = wanted.to_lowercase();
    if let Some(exact) = types.iter().find(|t| t.to_lowercase() == w) {
        return Ok(exact);
    }
    let mut all: Vec<&str> = types.iter().map(String::as_str).collect();
    all.sort_unstable();
    all.dedup();
    let hits: Vec<&str> = all
        .iter()
        .copied()
        .filter(|t| t.to_lowercase().contains(&w))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] if all.is_empty() => Err(EngineError::SlurmGpuType(format!(
            "no GPU type in Slurm matches gpuType {wanted}: Slurm names no GPU types here"
        ))),
        [] => Err(EngineError::SlurmGpuType(format!(
            "no GPU type in Slurm matches gpuType {wanted}; the types are {}",
            all.join(", ")
        ))),
        many => Err(EngineError::SlurmGpuType(format!(
            "gpuType {wanted} matches several GPU types in Slurm ({}); name one of them",
            many.join(", ")
        ))),
    }
}

/// Slurm's time limit for an attempt: kiln's own timer ends the job at its max
/// duration; this backstop leaves room for two grace periods and a minute more.
pub fn time_limit_minutes(max_duration: Duration, grace: Duration) -> u64 {
    let ms = (max_duration + grace * 2 + Duration::from_secs(60)).as_millis();
    u64::try_from(ms.div_ceil(60_000)).unwrap_or(u64::MAX)
}

/// One attempt's `sbatch`.
#[derive(Debug, Clone)]
pub struct SubmitRequest<'a> {
    /// This kiln server's instance name: its jobs are `kiln-<instance>-…`.
    pub instance: &'a str,
    /// The job's key (`alice~bert`).
    pub key: &'a str,
    pub attempt: u32,
    pub partition: &'a str,
    /// Nodes in the partition: a heterogeneous job needs one per component.
    pub partition_nodes: usize,
    /// `<attempt>/launcher.log`.
    pub output: &'a Path,
    /// The batch step's command: `<shared>/bin/kiln-<id> __slurm-launch <attempt>`.
    pub launcher: &'a [String],
    pub max_duration: Option<Duration>,
    pub grace: Duration,
    /// kiln's priority; a negative one becomes Slurm's (positive) nice.
    pub priority: i32,
    /// The admin's `--slurm-extra-args`.
    pub extra_args: &'a [String],
    /// The GPU types `sinfo` reported, for matching `gpuType`.
    pub gpu_types: &'a [String],
}

/// The `sbatch` arguments for an attempt: one plain job for one shape, else one
/// heterogeneous component per shape separated by `:`.
pub fn sbatch_args(req: &SubmitRequest, groups: &[ShapeGroup]) -> Result<Vec<String>, EngineError> {
    if groups.is_empty() {
        return Err(EngineError::SlurmRequest("the attempt has no tasks".into()));
    }
    if groups.len() > 1 && groups.len() > req.partition_nodes {
        return Err(EngineError::SlurmRequest(format!(
            "its tasks come in {} shapes, and Slurm places each shape of a heterogeneous \
             job on its own node, but partition {} has {}; give the roles the same \
             resources, or ask the admin for --slurm-pad-shapes",
            groups.len(),
            req.partition,
            kiln_spec::words::count(req.partition_nodes as u64, "node"),
        )));
    }
    let mut args = vec![
        "--parsable".to_string(),
        "--no-requeue".to_string(),
        format!(
            "--job-name=kiln-{}-{}-a{}",
            req.instance, req.key, req.attempt
        ),
        format!("--output={}", req.output.display()),
    ];
    let mut each = vec![format!("--partition={}", req.partition)];
    if let Some(max) = req.max_duration {
        each.push(format!("--time={}", time_limit_minutes(max, req.grace)));
    }
    // Only a lower priority is passed on: Slurm lets only its operators set
    // a negative nice, and the job is submitted as its user.
    if req.priority < 0 {
        each.push(format!("--nice={}", -i64::from(req.priority)));
    }
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            args.push(":".to_string());
        }
        args.extend(each.iter().cloned());
        let s = &g.shape;
        args.push(format!("--ntasks={}", g.tasks.len()));
        args.push(format!("--cpus-per-task={}", s.cpus));
        // Per CPU in every component: sbatch refuses --mem in one component and
        // --mem-per-cpu in another. At least 1 MiB, since 0 means "all of it".
        let per_cpu = s.memory_mb.div_ceil(u64::from(s.cpus)).max(1);
        args.push(format!("--mem-per-cpu={per_cpu}M"));
        if s.gpus > 0 {
            match &s.gpu_type {
                Some(t) => {
                    let slurm_type = match_gpu_type(t, req.gpu_types)?;
                    args.push(format!("--gpus-per-task={slurm_type}:{}", s.gpus));
                }
                None => args.push(format!("--gpus-per-task={}", s.gpus)),
            }
        }
        if i == 0 {
            args.extend(req.extra_args.iter().cloned());
        }
    }
    let words: Vec<String> = req.launcher.iter().map(|w| sh_quote(w)).collect();
    args.push(format!("--wrap=exec {}", words.join(" ")));
    Ok(args)
}

/// One task's step inside the allocation (docs/engines.md 3.3).
#[derive(Debug, Clone)]
pub struct StepRequest<'a> {
    /// The component of a heterogeneous job; `None` for a plain job.
    pub het_group: Option<usize>,
    pub node: &'a str,
    pub cpus: u32,
    pub memory_mb: u64,
    pub gpus: u32,
    /// The Slurm GPU type the job asked for ([`match_gpu_type`]'s answer), if it
    /// named one. The step must name it too: inside a job that asked for
    /// `--gpus-per-task=fake:1`, `srun --gres=gpu:1` fails with "Invalid GRES
    /// specification (with and without type identification)" (Slurm 22.05).
    pub gpu_type: Option<&'a str>,
    /// `<task>.<gen>`.
    pub job_name: &'a str,
    /// `<task dir>/srun.log`.
    pub output: &'a Path,
    /// `<shared>/bin/kiln-<id> __supervise <task dir>`.
    pub command: &'a [String],
}

/// The `srun` arguments for one task. `--exact` with `--mem` lets steps share a
/// node; an explicit `--gres` keeps a step to its own GPUs (by default it would get
/// all the job's); `--export=NONE` because the supervisor builds the environment.
pub fn srun_args(step: &StepRequest) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(c) = step.het_group {
        args.push(format!("--het-group={c}"));
    }
    args.extend([
        "--nodes=1".to_string(),
        "--ntasks=1".to_string(),
        format!("--nodelist={}", step.node),
        "--exact".to_string(),
        format!("--cpus-per-task={}", step.cpus.max(1)),
        format!("--mem={}M", step.memory_mb.max(1)),
        if step.gpus > 0 {
            match step.gpu_type {
                Some(t) => format!("--gres=gpu:{t}:{}", step.gpus),
                None => format!("--gres=gpu:{}", step.gpus),
            }
        } else {
            "--gres=none".to_string()
        },
        "--kill-on-bad-exit=0".to_string(),
        "--input=none".to_string(),
        "--export=NONE".to_string(),
        format!("--job-name={}", step.job_name),
        format!("--output={}", step.output.display()),
    ]);
    args.extend(step.command.iter().cloned());
    args
}

/// Quotes one word for `sh`, which runs `--wrap`.
fn sh_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
