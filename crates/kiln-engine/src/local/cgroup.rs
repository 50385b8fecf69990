//! Holding one task to its memory and CPU share with a cgroup of its own,
//! and telling an out-of-memory kill from any other SIGKILL.
//!
//! The task joins its group between fork and exec (it writes "0", meaning
//! "myself", to `cgroup.procs`, or v1's `tasks`), so nothing it starts escapes
//! the limits.
//! Version 1 (memory, cpu and pids hierarchies, as on kiln's CI machines) is
//! exercised by tests; version 2 uses the same steps with v2's file names,
//! in the group `delegation` prepared, and is tested on a real cgroup2 mount
//! as far as the machine's controllers allow.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// Limits for one task, with where its groups go (from resource discovery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub memory_mb: Option<u64>,
    pub cpus: Option<u32>,
    pub cgroup_version: u8,
    pub memory_root: Option<PathBuf>,
    pub cpu_root: Option<PathBuf>,
    /// At most this many processes and threads (`pids.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_root: Option<PathBuf>,
    /// v2: the task gets a group here whatever its limits, so everything it
    /// started ends with it (`cgroup.kill`) and OOM kills can be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_root: Option<PathBuf>,
    /// This task's group name, unique on the machine.
    pub group: String,
}

/// The name of one run of one task's group, unique on the machine: the
/// installation, the job, its attempt, the task and which run of it.
pub fn group_name(instance: &str, key: i64, attempt: u32, task: &str, gen: u32) -> String {
    format!("kiln-{instance}-{key}-a{attempt}-{task}-{gen}")
}

/// Removes this installation's groups under `roots` that no running task
/// holds (`keep`): those of supervisors that died before they could remove
/// them. What still runs in such a group is a task nobody supervises (its
/// output and exit would be lost, and it holds GPUs the scheduler has given
/// back): it is killed first. Returns how many groups were removed.
pub fn sweep(roots: &[PathBuf], instance: &str, keep: &std::collections::HashSet<String>) -> usize {
    let prefix = format!("kiln-{instance}-");
    let mut removed = 0;
    for root in roots {
        let Ok(entries) = fs::read_dir(root) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) || keep.contains(&name) {
                continue;
            }
            let dir = e.path();
            kill_group(&dir);
            // The kernel releases a group a moment after its last process.
            for _ in 0..50 {
                if fs::remove_dir(&dir).is_ok() {
                    removed += 1;
                    break;
                }
                if !dir.exists()
                    || fs::read_dir(&dir).is_ok_and(|mut d| {
                        d.any(|c| c.is_ok_and(|c| c.file_type().is_ok_and(|t| t.is_dir())))
                    })
                {
                    break; // gone, or has groups of its own: not kiln's to remove
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    removed
}

/// SIGKILLs everything in the group at `dir`: `cgroup.kill` where the
/// kernel has it (v2), else each process in `cgroup.procs`.
fn kill_group(dir: &Path) {
    let kill_file = OpenOptions::new().write(true).open(dir.join("cgroup.kill"));
    if let Ok(mut f) = kill_file {
        if std::io::Write::write_all(&mut f, b"1").is_ok() {
            return;
        }
    }
    let pids = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// What kiln's group for a task holds for what runs in groups below it:
/// a container made inside it (`--cgroup-parent`, the group's path within
/// its hierarchy) is held by its limits, and kiln reads its OOM kills.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldForChildren {
    pub parent: Option<String>,
    pub memory: bool,
    pub cpu: bool,
    pub pids: bool,
}

/// The parent a container engine is given, and which limits it brings.
/// On v2 one group holds them all. On v1 the parent is the memory group's
/// path, which the engine makes in every hierarchy: the CPU and process
/// limits hold only where kiln's groups lie at the same path.
pub fn held_for_children(l: &Limits) -> HeldForChildren {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let within = |root: &Option<PathBuf>| {
        root.as_ref()
            .and_then(|r| path_in_hierarchy(&mounts, &r.join(&l.group)))
    };
    if l.cgroup_version == 2 {
        let Some(parent) = within(&l.group_root) else {
            return HeldForChildren::default();
        };
        return HeldForChildren {
            parent: Some(parent),
            memory: l.memory_root.is_some(),
            cpu: l.cpu_root.is_some(),
            pids: l.pids_root.is_some(),
        };
    }
    let Some(parent) = within(&l.memory_root) else {
        return HeldForChildren::default();
    };
    HeldForChildren {
        cpu: within(&l.cpu_root).as_ref() == Some(&parent),
        pids: within(&l.pids_root).as_ref() == Some(&parent),
        memory: true,
        parent: Some(parent),
    }
}

/// A cgroup folder's path within its hierarchy ("/a/b" for
/// /sys/fs/cgroup/memory/a/b), from the mount table's text.
pub fn path_in_hierarchy(mounts: &str, dir: &Path) -> Option<String> {
    mounts
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 3 && matches!(f[2], "cgroup" | "cgroup2")).then(|| Path::new(f[1]))
        })
        .filter_map(|m| dir.strip_prefix(m).ok().map(|rest| (m, rest)))
        .max_by_key(|(m, _)| m.as_os_str().len())
        .map(|(_, rest)| format!("/{}", rest.display()))
}

/// Processes and threads a task may have unless its job says otherwise:
/// plenty for data loader workers and compilers, far from a fork bomb.
pub const DEFAULT_PIDS_MAX: u64 = 4096;

const CPU_PERIOD_US: u64 = 100_000;

pub(crate) struct TaskGroup {
    version: u8,
    memory_dir: Option<PathBuf>,
    pids_dir: Option<PathBuf>,
    dirs: Vec<PathBuf>,
    /// Open `cgroup.procs` (v2) or `tasks` (v1) of each group, written by
    /// the child before exec.
    procs: Vec<File>,
}

fn write(path: &Path, value: &str) -> Result<(), EngineError> {
    fs::write(path, value).map_err(EngineError::io("write", path))
}

impl TaskGroup {
    /// Creates and configures the groups; on any failure the groups made so
    /// far are removed again, so nothing is left behind.
    pub fn create(l: &Limits) -> Result<TaskGroup, EngineError> {
        let mut g = TaskGroup {
            version: l.cgroup_version,
            memory_dir: None,
            pids_dir: None,
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        match g.configure(l) {
            Ok(()) => Ok(g),
            Err(e) => {
                g.remove();
                Err(e)
            }
        }
    }

    fn configure(&mut self, l: &Limits) -> Result<(), EngineError> {
        let g = self;
        let mut make = |root: &Path| -> Result<PathBuf, EngineError> {
            let dir = root.join(&l.group);
            if g.dirs.contains(&dir) {
                return Ok(dir); // v2: one group holds both controllers
            }
            // A group that exists already belongs to another task: sharing it
            // would mix two tasks' limits and accounting.
            fs::create_dir(&dir).map_err(EngineError::io("create", &dir))?;
            g.dirs.push(dir.clone());
            Ok(dir)
        };
        if let (2, Some(root)) = (l.cgroup_version, &l.group_root) {
            make(root)?;
        }
        if let (Some(mb), Some(root)) = (l.memory_mb, &l.memory_root) {
            let dir = make(root)?;
            let bytes = mb.saturating_mul(1024 * 1024).to_string();
            if l.cgroup_version == 2 {
                write(&dir.join("memory.max"), &bytes)?;
                // Swap would let a task run past its limit, slowly.
                let _ = fs::write(dir.join("memory.swap.max"), "0");
                // An OOM kill ends the whole task, as Kubernetes does, rather
                // than leaving it running without the process it lost.
                let _ = fs::write(dir.join("memory.oom.group"), "1");
            } else {
                write(&dir.join("memory.limit_in_bytes"), &bytes)?;
                let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), &bytes);
            }
            g.memory_dir = Some(dir);
        }
        if let (Some(cpus), Some(root)) = (l.cpus, &l.cpu_root) {
            let dir = make(root)?;
            let quota = u64::from(cpus).saturating_mul(CPU_PERIOD_US);
            if l.cgroup_version == 2 {
                write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            } else {
                write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        if let (Some(max), Some(root)) = (l.pids_max, &l.pids_root) {
            let dir = make(root)?;
            write(&dir.join("pids.max"), &max.to_string())?;
            g.pids_dir = Some(dir);
        }
        // v1: the child joins through `tasks`, moving its one thread (it
        // has only one between fork and exec; what it starts later
        // inherits the groups). A thread's move skips the global lock that
        // moving a whole process through `cgroup.procs` takes, which waits
        // for an RCU grace period: 5-20 ms per task here, against 0.45 ms.
        let join = if l.cgroup_version == 2 {
            "cgroup.procs"
        } else {
            "tasks"
        };
        for dir in g.dirs.clone() {
            let procs = dir.join(join);
            let f = OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(EngineError::io("open", &procs))?;
            g.procs.push(f);
        }
        Ok(())
    }

    /// Kills every process still in the groups: what a task started and
    /// moved out of its process group (`setsid`, `set -m`) is still here.
    pub fn kill_all(&self) {
        for dir in &self.dirs {
            kill_group(dir);
        }
    }

    /// Files the child writes "0" to, before exec, to join its groups.
    pub fn join_files(&self) -> Result<Vec<File>, EngineError> {
        self.procs
            .iter()
            .zip(&self.dirs)
            .map(|(f, d)| f.try_clone().map_err(EngineError::io("open", d)))
            .collect()
    }

    /// Whether the kernel's OOM killer killed something in the group.
    pub fn oom_killed(&self) -> bool {
        let Some(dir) = &self.memory_dir else {
            return false;
        };
        let (file, key) = if self.version == 2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let text = fs::read_to_string(dir.join(file)).unwrap_or_default();
        // Lines are "name value"; match the name exactly (v1 also has
        // "oom_kill_disable").
        let kills = text.lines().find_map(|l| {
            let (name, value) = l.split_once(' ')?;
            (name == key).then(|| value.trim().parse::<u64>().ok())?
        });
        match kills {
            Some(n) => n > 0,
            // Kernels before 4.13 have no oom_kill counter: hitting the
            // limit at all is the nearest sign.
            None => fs::read_to_string(dir.join("memory.failcnt"))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0),
        }
    }

    /// v1 only: whether the group's memory use ever reached its limit:
    /// its peak at the limit (a container's charges, made in its own group
    /// below, leave the failure counters here at 0), or a failed charge.
    pub fn v1_limit_hit(&self) -> bool {
        let Some(dir) = self.memory_dir.as_ref().filter(|_| self.version == 1) else {
            return false;
        };
        let read = |f: &str| {
            fs::read_to_string(dir.join(f))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        };
        let peaked = |prefix: &str| {
            matches!(
                (read(&format!("{prefix}.max_usage_in_bytes")), read(&format!("{prefix}.limit_in_bytes"))),
                (Some(peak), Some(limit)) if peak >= limit
            )
        };
        peaked("memory")
            || peaked("memory.memsw")
            || ["memory.failcnt", "memory.memsw.failcnt"]
                .iter()
                .any(|f| read(f).is_some_and(|n| n > 0))
    }

    /// Whether a fork or clone in the group failed for its pids limit
    /// (`pids.events`: "max N", the same in v1 and v2).
    pub fn pids_limited(&self) -> bool {
        let Some(dir) = &self.pids_dir else {
            return false;
        };
        let text = fs::read_to_string(dir.join("pids.events")).unwrap_or_default();
        text.lines().any(|l| {
            l.split_once(' ')
                .is_some_and(|(k, v)| k == "max" && v.trim().parse::<u64>().is_ok_and(|n| n > 0))
        })
    }

    /// Removes the groups once their processes are gone. The kernel may
    /// take a moment to release a group after its last process exits
    /// (usually well under a millisecond, as a sandbox's init ends last):
    /// looked at again soon, then less often, for half a second at most.
    /// The task's end is recorded after this, so the next task on its GPUs
    /// waits for it: a fixed 10 ms between tries cost most hand-overs 10 ms.
    pub fn remove(self) {
        let give_up = std::time::Instant::now() + std::time::Duration::from_millis(500);
        for dir in self.dirs.iter().rev() {
            let mut pause = std::time::Duration::from_micros(200);
            while fs::remove_dir(dir).is_err() && dir.exists() {
                if std::time::Instant::now() >= give_up {
                    break;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_only_this_installations_groups_that_no_task_holds() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().to_owned();
        let held = group_name("abc", 1, 0, "main-0", 2);
        let stale = group_name("abc", 1, 0, "main-0", 1);
        let other = group_name("xyz", 1, 0, "main-0", 0);
        for g in [&held, &stale, &other, &"kiln-server".to_owned()] {
            fs::create_dir(root.join(g)).expect("group");
        }
        // A group that still has something in it cannot go (as one with
        // processes cannot).
        let busy = group_name("abc", 7, 0, "main-0", 0);
        fs::create_dir_all(root.join(&busy).join("child")).expect("busy");
        let keep = std::collections::HashSet::from([held.clone()]);
        assert_eq!(sweep(std::slice::from_ref(&root), "abc", &keep), 1);
        assert!(root.join(&held).exists() && root.join(&other).exists());
        assert!(root.join("kiln-server").exists() && root.join(&busy).exists());
        assert!(!root.join(&stale).exists());
    }
}
