//! The container engine's side of a supervisor's life once the image is
//! here (`image_pull`): the client's command with the task's environment in
//! a file only root reads, the container's session and OOM kills, and the
//! container removed once the task ended, with the engine's groups.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::container::{client_env, env_file_text, plan_env, Container};
use super::files::{write_atomic, TaskDir};
use std::os::unix::fs::OpenOptionsExt;

/// A file of the task folder only root reads (it holds the task's
/// secrets or a registry credential).
pub(super) fn write_private(file: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    std::io::Write::write_all(&mut f, bytes)
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// On an engine that binds GPUs to the step (Slurm), the container gets
/// the devices bound here, numbered from 0 inside.
pub(super) fn gpus_of_step(ct: &mut Container, env: &mut [(String, String)]) {
    // The machine's own indices: with ConstrainDevices Slurm numbers
    // CUDA_VISIBLE_DEVICES from 0 within the step.
    let bound = std::env::var("SLURM_STEP_GPUS")
        .or_else(|_| std::env::var("SLURM_JOB_GPUS"))
        .ok()
        .or_else(|| {
            env.iter()
                .find(|(k, _)| k == "CUDA_VISIBLE_DEVICES")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_default();
    ct.gpus = bound
        .split(',')
        .filter_map(|g| g.trim().parse::<u32>().ok())
        .filter(|g| Path::new(&format!("/dev/nvidia{g}")).exists())
        .collect();
    if !ct.gpus.is_empty() {
        super::container::renumber_gpus(env, ct.gpus.len());
    }
}

/// A command of the container engine's client, with only the part of the
/// supervisor's environment that configures the engine (see
/// `container::client_env`).
pub(super) fn engine(ct: &Container) -> Command {
    let mut c = Command::new(&ct.program);
    c.env_clear().envs(client_env(std::env::vars()));
    c
}

/// How long a started container may take to show its init's pid.
const SESSION_WAIT: Duration = Duration::from_secs(120);

/// Adds the container's session to `started.json` once the engine shows
/// its init's pid, so its processes' CPU and memory count as the task's.
pub(super) fn record_session(
    ct: &Container,
    dir: &TaskDir,
    mut started: super::files::Started,
    task_done: Arc<AtomicBool>,
    oom_seen: Arc<AtomicBool>,
) {
    let (ct, dir) = (ct.clone(), dir.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + SESSION_WAIT;
        while Instant::now() < deadline && !task_done.load(Ordering::SeqCst) {
            let pid = engine(&ct)
                .args(ct.pid_args())
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .trim()
                        .parse::<i32>()
                        .ok()
                })
                .filter(|p| *p > 0);
            if let Some(pid) = pid {
                started.container_sid = Some(pid);
                let _ = write_atomic(&dir.started(), &started);
                watch_v1_oom(pid, &task_done, &oom_seen);
                return;
            }
            // A timer: how often the engine is asked while it starts it.
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

/// cgroup v1 counts an OOM kill only in the killed process's own group:
/// the container's, below kiln's, gone with the container. While the task
/// runs, that group's counter is looked at, so a kill is seen (one that
/// ends the container can still go unseen: the supervisor then judges by
/// kiln's group, see `TaskGroup::v1_limit_hit`). v2 counts kills in kiln's
/// group too, and needs none of this.
fn watch_v1_oom(pid: i32, task_done: &AtomicBool, oom_seen: &AtomicBool) {
    let Some(group) = v1_memory_group(pid) else {
        return;
    };
    let file = group.join("memory.oom_control");
    while !task_done.load(Ordering::SeqCst) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            return;
        };
        let kills = text
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse::<u64>().ok());
        if kills.is_some_and(|n| n > 0) {
            oom_seen.store(true, Ordering::SeqCst);
            return;
        }
        // A timer: how often the counter is read.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The v1 memory group of a process, as a folder.
fn v1_memory_group(pid: i32) -> Option<PathBuf> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_owned())
    })?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mount = mounts.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 4 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "memory"))
            .then(|| PathBuf::from(f[1]))
    })?;
    Some(mount.join(path.trim_start_matches('/')))
}

/// The client's command for the task: everything but the task's own
/// command. The task's environment goes into `container.env` (root's
/// alone); the client's own is the server's engine settings only.
pub(super) fn command(
    ct: &Container,
    env: &[(String, String)],
    dir: &TaskDir,
) -> Result<Command, String> {
    let plan = plan_env(env)?;
    let file = dir.path().join("container.env");
    write_private(&file, env_file_text(&plan.file).as_bytes())?;
    let names: Vec<String> = plan.by_name.iter().map(|(k, _)| k.clone()).collect();
    let mut cmd = engine(ct);
    cmd.args(ct.run_args(&file, &names, &rlimits()));
    cmd.envs(plan.by_name.iter().map(|(k, v)| (k, v)));
    Ok(cmd)
}

/// The supervisor's own open-file and process limits, for the task: what
/// a task outside a container gets. The engine's default would raise
/// them past what a host without CAP_SYS_RESOURCE may give, and fail.
fn rlimits() -> Vec<(&'static str, u64, u64)> {
    let get = |r| nix::sys::resource::getrlimit(r).ok();
    let cap = |v: u64| v.min(1 << 20);
    let mut out = Vec::new();
    if let Some((s, h)) = get(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        out.push(("nofile", cap(s), cap(h)));
    }
    if let Some((s, h)) = get(nix::sys::resource::Resource::RLIMIT_NPROC) {
        // conmon, which starts the container, runs with podman's own
        // process limit (32768), above which it cannot raise the task's.
        out.push(("nproc", s.min(32768), h.min(32768)));
    }
    out
}

/// Removes the container once the task ended, and the engine's `conmon`
/// groups inside kiln's, so kiln's can go; returns the engine's word on an
/// OOM kill (asked only where kiln's group cannot tell).
pub(super) fn finish(ct: &Container) -> bool {
    let quiet = |args: Vec<String>| {
        engine(ct)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
    };
    let oom = ct.cgroup_parent.is_none()
        && quiet(ct.oom_args())
            .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true");
    let _ = quiet(ct.cleanup_args());
    if let Some(parent) = &ct.cgroup_parent {
        for dir in engine_groups(parent) {
            remove_child_groups(&dir);
        }
    }
    oom
}

/// Removes the engine's groups below kiln's (`conmon`, a `libpod-*` its
/// cleanup has not removed yet): the kernel frees a group a moment after
/// its last process, and the engine's own cleanup may still run. Looked at
/// again for up to a second.
fn remove_child_groups(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut wait = Duration::from_millis(2);
    loop {
        let left: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .filter(|p| std::fs::remove_dir(p).is_err())
                    .collect()
            })
            .unwrap_or_default();
        if left.is_empty() || Instant::now() > deadline {
            return;
        }
        // A timer: the kernel's release of the groups has no event to wait on.
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_millis(100));
    }
}

/// The container of a run whose supervisor died without an exit record
/// (killed with SIGKILL): removed, so it runs on unwatched no longer.
pub(crate) fn remove_orphan(dir: &TaskDir) {
    if let Ok(Some(ct)) = dir.read_launch().map(|l| l.container) {
        let _ = finish(&ct);
        remove_parents(&ct);
    }
}

/// The engine makes the parent in every cgroup hierarchy it uses, not
/// only in those kiln holds: once kiln removed its own, the rest go.
pub(super) fn remove_parents(ct: &Container) {
    if let Some(parent) = &ct.cgroup_parent {
        for dir in engine_groups(parent) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn engine_groups(parent: &str) -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 3 && matches!(f[2], "cgroup" | "cgroup2"))
                .then(|| Path::new(f[1]).join(parent.trim_start_matches('/')))
        })
        .filter(|d| d.is_dir())
        .collect()
}
