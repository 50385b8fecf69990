//! A run's folder before its supervisor starts: the private /tmp, the
//! sandbox or container, the cgroup limits, the machine's part of the
//! environment, and `launch.json` with all of it.

use std::path::{Path, PathBuf};

use super::container::{Container, ContainerEngine};
use super::engine::{group_of, LocalConfig, LocalEngine};
use super::perms::{give, set_mode};
use super::sandbox::SwitchUser;
use super::{Bind, LaunchSpec, Limits, Sandbox, TaskDir};
use crate::engine::{KnownTask, NodeState, Prepared, RunAs, TaskLaunch, TaskRef, TaskShape};
use crate::error::EngineError;

/// A task's private folder (its /tmp): the task's uid alone may enter it.
fn task_folder(tmp: &Path, run_as: Option<RunAs>) -> Result<(), String> {
    std::fs::create_dir_all(tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    if let Some(id) = run_as {
        give(tmp, id, 0o700)?;
        // The task folder holds the launch record (the task's secrets) and
        // logs: others may pass through it to their mount points, not list it.
        if let Some(parent) = tmp.parent() {
            set_mode(parent, 0o711);
        }
    }
    Ok(())
}

/// What of the server's environment a task gets, and its scratch folder.
fn base_env(tmp: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
            .collect();
    env.push(("TMPDIR".into(), tmp.display().to_string()));
    env
}

fn limits(cfg: &LocalConfig, t: &TaskRef, shape: &TaskShape) -> Option<Limits> {
    let cg = &cfg.discovered.cgroups;
    let version = cg.version?;
    if cg.memory_root.is_none()
        && cg.cpu_root.is_none()
        && cg.pids_root.is_none()
        && cg.group_root.is_none()
    {
        return None;
    }
    Some(Limits {
        memory_mb: (shape.memory_mb > 0).then_some(shape.memory_mb),
        cpus: (shape.cpus > 0).then_some(shape.cpus),
        pids_max: Some(
            shape
                .pids
                .map_or(super::cgroup::DEFAULT_PIDS_MAX, u64::from),
        ),
        pids_root: cg.pids_root.clone(),
        group_root: cg.group_root.clone(),
        cgroup_version: version,
        memory_root: cg.memory_root.clone(),
        cpu_root: cg.cpu_root.clone(),
        group: group_of(&cfg.instance, t),
    })
}

/// A task in its image (see `container`): the sandbox's binds, the
/// admin's site folders read-only, and kiln's cgroup for the task as the
/// container's parent where the engine takes one.
fn container(
    cfg: &LocalConfig,
    engine: &ContainerEngine,
    image: &str,
    t: &TaskLaunch,
    sb: Sandbox,
) -> Container {
    // The space first (the supervisor mounts what lies inside it itself),
    // then the admin's site folders.
    let mut binds = sb.binds;
    binds.extend(cfg.container_mounts.iter().map(|(source, target)| Bind {
        source: source.clone(),
        target: target.clone(),
        read_only: true,
        beneath: None,
    }));
    let limits = limits(cfg, &t.task, &t.shape);
    let held = limits
        .as_ref()
        .filter(|_| engine.cgroup_paths)
        .map(super::cgroup::held_for_children)
        .unwrap_or_default();
    let memory_mb = if held.memory { 0 } else { t.shape.memory_mb };
    let cpu_millis = if held.cpu {
        0
    } else {
        u64::from(t.shape.cpus) * 1000
    };
    let pids_max = if held.pids {
        None
    } else {
        Some(
            t.shape
                .pids
                .map_or(super::cgroup::DEFAULT_PIDS_MAX, u64::from),
        )
    };
    Container {
        runtime: engine.runtime,
        program: engine.program.clone(),
        global_args: engine.global_args.clone(),
        image: image.to_owned(),
        // Unique per run of a task, so a stop or a cleanup names exactly it.
        name: group_of(&cfg.instance, &t.task),
        binds,
        tmp: sb.tmp,
        shm_mb: sb.shm_mb,
        // Fake GPUs have no device files to hand in.
        gpus: t
            .gpus
            .iter()
            .copied()
            .filter(|g| Path::new(&format!("/dev/nvidia{g}")).exists())
            .collect(),
        workdir: sb.workdir,
        user: t.run_as,
        cgroup_parent: held.parent,
        cpu_millis,
        memory_mb,
        pids_max,
        pull: t.pull.clone(),
    }
}

/// The file system view of one task (see `sandbox`).
fn sandbox(cfg: &LocalConfig, bwrap: &Path, t: &TaskLaunch, tmp: &Path) -> Sandbox {
    let binds = t
        .files
        .mounts
        .iter()
        .map(|m| Bind {
            source: m.source.clone(),
            target: m.target.clone(),
            read_only: m.read_only,
            beneath: m.beneath.clone(),
        })
        .collect();
    let mut devices: Vec<PathBuf> = t
        .gpus
        .iter()
        .map(|g| PathBuf::from(format!("/dev/nvidia{g}")))
        .collect();
    if !t.gpus.is_empty() {
        devices.extend(
            [
                "/dev/nvidiactl",
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools",
                "/dev/nvidia-modeset",
            ]
            .iter()
            .map(PathBuf::from),
        );
    }
    // Only what exists: fake GPUs have no device files.
    devices.retain(|d| d.exists());
    Sandbox {
        bwrap: bwrap.to_owned(),
        root: cfg.host_root.clone(),
        hide: std::iter::once(cfg.data.clone())
            .chain(cfg.shared.clone())
            .collect(),
        dirs: Vec::new(),
        binds,
        tmp: tmp.to_owned(),
        shm_mb: t.shape.shm_mb,
        devices,
        workdir: t.files.workdir_inside.clone(),
        drop_caps: super::sandbox::running_as_root(),
        switch_user: SwitchUser::of(t.run_as, cfg.setpriv.as_deref()),
    }
}

impl LocalEngine {
    /// Writes one run's folder and launch record.
    pub(crate) fn prepare_one(&self, t: &TaskLaunch) -> Result<Prepared, EngineError> {
        let cfg = &self.cfg;
        let dir = self.task_dir(&t.task);
        let tmp = dir.path().join("tmp");
        task_folder(&tmp, t.run_as).map_err(EngineError::Folder)?;
        let sandbox = cfg.bwrap.as_ref().map(|b| sandbox(cfg, b, t, &tmp));
        // A role's image (or the job's) runs in a container showing what
        // the sandbox would.
        let (sandbox, container) = match (&cfg.containers, &t.image, sandbox) {
            (Some(engine), Some(image), Some(sb)) => {
                (None, Some(container(cfg, engine, image, t, sb)))
            }
            (_, _, sb) => (sb, None),
        };
        let inside = sandbox.is_some() || container.is_some();
        let mut all = base_env(if inside { Path::new("/tmp") } else { &tmp });
        let mut task_env = t.env.clone();
        if let Some(ct) = &container {
            // The image's own PATH, not the host's.
            all.retain(|(k, _)| k != "PATH");
            if !ct.gpus.is_empty() {
                super::container::renumber_gpus(&mut task_env, ct.gpus.len());
            }
        }
        if t.run_as.is_some() {
            // The task's own name and a home it can write to (the server's
            // HOME is root's).
            let home = if inside {
                t.files.home_inside.display().to_string()
            } else {
                tmp.display().to_string()
            };
            all.retain(|(k, _)| !matches!(k.as_str(), "USER" | "LOGNAME" | "HOME"));
            all.push(("USER".into(), t.files.user.clone()));
            all.push(("LOGNAME".into(), t.files.user.clone()));
            all.push(("HOME".into(), home));
        }
        all.extend(task_env);
        // The working folder: inside the sandbox it is bwrap's to enter (the
        // supervisor starts bwrap from the task folder).
        let working_dir = if inside {
            dir.path().to_owned()
        } else {
            t.files.workdir_host.clone()
        };
        let launch = LaunchSpec {
            command: t.command.clone(),
            env: all,
            working_dir,
            stop_grace_secs: cfg.stop_grace_secs,
            limits: limits(cfg, &t.task, &t.shape),
            sandbox,
            container,
            run_as: t.run_as,
            gpus_from_step: false,
            stop_file: None,
        };
        dir.write_launch(&launch)?;
        Ok(Prepared {
            task: t.task.clone(),
            dir: dir.path().display().to_string(),
        })
    }

    /// A fresh folder for the next run of a task, with the launch of an
    /// earlier one and `run_as` as of now (a launch record from before kiln
    /// gave uids has none).
    pub(crate) fn prepare_next(
        &self,
        from: &KnownTask,
        run_as: Option<RunAs>,
    ) -> Result<Prepared, EngineError> {
        let missing = || EngineError::Folder("its launch record is missing".into());
        let mut launch = TaskDir::new(&from.dir)
            .read_launch()
            .map_err(|_| missing())?;
        // A folder nobody has used: a crash may have left later ones behind.
        let mut task = from.task.clone();
        task.gen += 1;
        while self.task_dir(&task).path().exists() {
            task.gen += 1;
        }
        let dir = self.task_dir(&task);
        launch.run_as = run_as;
        if let Some(sb) = &mut launch.sandbox {
            sb.switch_user = SwitchUser::of(run_as, self.cfg.setpriv.as_deref());
        }
        let tmp = dir.path().join("tmp");
        task_folder(&tmp, launch.run_as).map_err(EngineError::Folder)?;
        let group = group_of(&self.cfg.instance, &task);
        match (&mut launch.sandbox, &mut launch.container) {
            // Inside the sandbox the new folder is the task's /tmp.
            (Some(sb), _) => sb.tmp = tmp.clone(),
            (None, Some(ct)) => {
                ct.tmp = tmp.clone();
                ct.name = group.clone();
                ct.user = run_as;
                if let Some(parent) = &mut ct.cgroup_parent {
                    *parent = Path::new(parent.as_str())
                        .with_file_name(&group)
                        .display()
                        .to_string();
                }
            }
            (None, None) => {
                for (k, v) in &mut launch.env {
                    if k == "TMPDIR" {
                        *v = tmp.display().to_string();
                    }
                }
            }
        }
        if let Some(l) = &mut launch.limits {
            l.group = group;
        }
        dir.write_launch(&launch)
            .map_err(|e| EngineError::Folder(format!("cannot write its launch record: {e}")))?;
        Ok(Prepared {
            task,
            dir: dir.path().display().to_string(),
        })
    }
}

/// This machine as the API shows it, without what kiln's jobs hold (the
/// loop adds that).
pub(super) fn node_state(cfg: &LocalConfig) -> NodeState {
    use serde_json::{json, Map, Value};
    let cg = &cfg.discovered.cgroups;
    let limits = match (&cg.note, cg.version) {
        (Some(note), _) => format!("not enforced: {note}"),
        (None, Some(v)) => format!("enforced with cgroup v{v}"),
        (None, None) => "not enforced: no usable cgroups".into(),
    };
    let pids_limit = match (&cg.pids_root, cg.version) {
        (Some(_), Some(v)) => format!(
            "enforced with cgroup v{v}: {} processes per task unless the job says `pids`",
            super::cgroup::DEFAULT_PIDS_MAX
        ),
        _ => "not enforced: no writable pids controller".into(),
    };
    let mut details = Map::new();
    details.insert(
        "gpuSource".into(),
        Value::String(format!("{:?}", cfg.discovered.gpu_source)),
    );
    details.insert("limits".into(), Value::String(limits));
    details.insert(
        "controllers".into(),
        serde_json::to_value(&cg.controllers).unwrap_or_else(|_| json!([])),
    );
    details.insert("pidsLimit".into(), Value::String(pids_limit));
    let containers = match (&cfg.containers, &cfg.containers_note) {
        (Some(e), _) => e.describe(),
        (None, Some(why)) => why.clone(),
        (None, None) => "off".into(),
    };
    details.insert("containers".into(), Value::String(containers));
    details.insert("notes".into(), json!(cfg.discovered.notes));
    NodeState {
        node: cfg.discovered.node.clone(),
        details,
    }
}
