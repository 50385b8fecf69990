//! `kiln __slurm-launch <attempt dir>`: the batch script of every attempt
//! (docs/engines.md 3.3). It runs inside the allocation, so the steps it starts
//! outlive a server killed with -9. It records what Slurm allocated, then starts
//! one `srun` step (running `kiln __supervise <task dir>`) for each task folder the
//! server marked `go`, turns `stop` files into SIGTERM for that step's srun (srun
//! forwards it to the step, where the supervisor takes it as its stop request), and
//! exits on `release`, or once nothing has run for `idle`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use super::alloc::Allocation;
use super::files::{self, SrunEnd, StepSpec};
use super::script::{srun_args, StepRequest};
use crate::error::EngineError;
use crate::local::files::{now_ms, write_atomic, Exit, TaskDir};

/// How often the launcher looks at the folder.
const TICK: Duration = Duration::from_millis(50);

struct Step {
    child: Child,
    stopped: bool,
}

/// The launcher's whole life; returns when it should exit.
pub fn run(dir: &Path, exe: &Path, idle: Duration) -> Result<(), EngineError> {
    if !files::create_new(&dir.join(files::LAUNCHER_CLAIM))? {
        info!(dir = %dir.display(), "another launcher has this attempt; running nothing");
        return Ok(());
    }
    let alloc = Allocation::from_env(|k| std::env::var(k).ok())?;
    write_atomic(&dir.join(files::ALLOCATION), &alloc)?;
    info!(job = alloc.job_id, "allocation recorded");
    let mut steps: HashMap<PathBuf, Step> = HashMap::new();
    let mut busy_at = Instant::now();
    loop {
        if dir.join(files::RELEASE).exists() {
            info!(running = steps.len(), "released");
            break;
        }
        start_new(dir, exe, &mut steps);
        reap(&mut steps, alloc.job_id);
        if !steps.is_empty() {
            busy_at = Instant::now();
        } else if busy_at.elapsed() > idle {
            info!(
                idle_secs = idle.as_secs(),
                "nothing to run; ending the allocation"
            );
            break;
        }
        std::thread::sleep(TICK);
    }
    // What still runs ends with the job.
    for step in steps.values() {
        let _ = kill(Pid::from_raw(step.child.id() as i32), Signal::SIGTERM);
    }
    Ok(())
}

/// Starts each task folder marked `go` that no launcher has started.
fn start_new(dir: &Path, exe: &Path, steps: &mut HashMap<PathBuf, Step>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let task = e.path();
        if steps.contains_key(&task)
            || !task.join(files::GO).exists()
            || task.join(files::SRUN_CLAIM).exists()
        {
            continue;
        }
        match files::create_new(&task.join(files::SRUN_CLAIM)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(err) => {
                warn!(task = %task.display(), error = %err, "cannot claim a task folder");
                continue;
            }
        }
        match start_one(&task, exe) {
            Ok(Some(child)) => {
                steps.insert(
                    task,
                    Step {
                        child,
                        stopped: false,
                    },
                );
            }
            Ok(None) => {}
            Err(error) => {
                warn!(task = %task.display(), %error, "cannot start a step");
                let end = SrunEnd {
                    exit_code: None,
                    signal: None,
                    error: Some(error.to_string()),
                };
                let _ = write_atomic(&task.join(files::SRUN_END), &end);
            }
        }
    }
}

/// One task's step; `None` when it was stopped before it started.
fn start_one(task: &Path, exe: &Path) -> Result<Option<Child>, EngineError> {
    let td = TaskDir::new(task);
    if task.join(files::STOP).exists() {
        // Stopped before it ran: no supervisor may ever take the folder.
        if td.try_claim(0)? {
            let exit = Exit {
                exit_code: None,
                signal: None,
                stop_requested: true,
                launch_error: None,
                refused: false,
                oom_killed: false,
                pids_limited: false,
                finished_at_ms: now_ms(),
            };
            write_atomic(&td.exit(), &exit)?;
        }
        return Ok(None);
    }
    let step: StepSpec = files::read_json(&task.join(files::STEP))?
        .ok_or_else(|| EngineError::Folder(format!("{} has no {}", task.display(), files::STEP)))?;
    let name = task
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let output = task.join("srun.log");
    let command = [
        exe.display().to_string(),
        "__supervise".to_owned(),
        task.display().to_string(),
    ];
    let args = srun_args(&StepRequest {
        het_group: step.het_group,
        node: &step.node,
        cpus: step.cpus,
        memory_mb: step.memory_mb,
        gpus: step.gpus,
        gpu_type: step.gpu_type.as_deref(),
        job_name: &name,
        output: &output,
        command: &command,
    });
    let child = Command::new("srun")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| EngineError::SlurmCommand {
            command: "srun".into(),
            why: e.to_string(),
        })?;
    info!(task = %name, node = %step.node, pid = child.id(), "step started");
    Ok(Some(child))
}

/// SIGTERM to a task's step, found by its name (the folder's) in squeue:
/// `scancel --signal=TERM JOB.STEP` signals the step's processes and leaves
/// the step be, so the supervisor has its grace period. (SIGTERM to srun
/// instead cancels the step at once: Slurm 22.05 on the test cluster.)
fn signal_step(job: u64, task: &Path) -> Result<bool, EngineError> {
    let name = task
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let run = |program: &str, args: &[String]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| EngineError::SlurmCommand {
                command: program.into(),
                why: e.to_string(),
            })
    };
    let out = run(
        "squeue",
        &[
            "-h".into(),
            "-s".into(),
            format!("--jobs={job}"),
            "--format=%i|%j".into(),
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(step) = text
        .lines()
        .filter_map(|l| l.trim().split_once('|'))
        .find(|(_, n)| *n == name)
        .map(|(id, _)| id.to_owned())
    else {
        return Ok(false);
    };
    let out = run("scancel", &["--signal=TERM".into(), step.clone()])?;
    if !out.status.success() {
        return Err(EngineError::SlurmCommand {
            command: "scancel".into(),
            why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    info!(task = %name, %step, "step signalled to stop");
    Ok(true)
}

/// Records ended steps and passes stop requests on.
fn reap(steps: &mut HashMap<PathBuf, Step>, job: u64) {
    steps.retain(|task, step| match step.child.try_wait() {
        Ok(Some(status)) => {
            use std::os::unix::process::ExitStatusExt;
            let end = SrunEnd {
                exit_code: status.code(),
                signal: status.signal(),
                error: None,
            };
            if let Err(e) = write_atomic(&task.join(files::SRUN_END), &end) {
                warn!(task = %task.display(), error = %e, "cannot record how srun ended");
            }
            false
        }
        Ok(None) => {
            if !step.stopped && task.join(files::STOP).exists() {
                match signal_step(job, task) {
                    Ok(true) => step.stopped = true,
                    // Not in squeue yet: the next tick tries again.
                    Ok(false) => {}
                    Err(e) => warn!(task = %task.display(), error = %e, "cannot signal a step"),
                }
            }
            true
        }
        Err(e) => {
            warn!(task = %task.display(), error = %e, "cannot wait for srun");
            true
        }
    });
}
