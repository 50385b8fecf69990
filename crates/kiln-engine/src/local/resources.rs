//! What this machine has: CPUs, memory and GPUs, and whether cgroups can hold
//! tasks to their share. GPUs come from NVML (loaded at run time, so a
//! machine without NVIDIA's driver simply has none), else from `nvidia-smi`,
//! else none; `--fake-gpus N[:MODEL]` declares GPUs where there are none so
//! everything GPU-related can be exercised here.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_sched::{Gpu, Node};
use serde::Serialize;

use super::delegation::{self, ControllerState};

/// Where the GPU list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuSource {
    Nvml,
    NvidiaSmi,
    Fake,
    None,
}

/// Whether per-task memory and CPU limits can be enforced, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cgroups {
    /// 1 or 2; None without a usable hierarchy.
    pub version: Option<u8>,
    /// Folder under which kiln can create one group per task.
    pub memory_root: Option<PathBuf>,
    pub cpu_root: Option<PathBuf>,
    /// Where a per-task `pids.max` can be set; None: no process limit.
    pub pids_root: Option<PathBuf>,
    /// v2: where each task gets a group even when no controller is
    /// delegated, so all it started can be killed at once (`cgroup.kill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_root: Option<PathBuf>,
    /// Said in `kiln nodes` and in job events when limits are not enforced.
    pub note: Option<String>,
    /// Memory, CPU and process limits one by one: what holds, or why not.
    pub controllers: Vec<ControllerState>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Discovered {
    pub node: Node,
    pub gpu_source: GpuSource,
    pub cgroups: Cgroups,
    /// Anything worth telling the operator (a failed NVML load, ...).
    pub notes: Vec<String>,
}

/// Operator overrides from the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub fake_gpus: Option<(u32, String)>,
    pub cpus: Option<u32>,
    pub memory_mb: Option<u64>,
    /// Where cgroups are mounted, if not `/sys/fs/cgroup` (a hybrid
    /// machine's v2 hierarchy at `/sys/fs/cgroup/unified`, for tests).
    pub cgroup_mount: Option<PathBuf>,
    /// The group (a path below the mount, e.g. `/system.slice/kiln-tasks.service`)
    /// to put tasks' groups in, instead of the server's own: a systemd unit
    /// delegated to kiln that a restart of the server leaves alone.
    pub cgroup_group: Option<String>,
}

/// Model name and memory of a fake GPU when `--fake-gpus N` names no model.
pub const FAKE_MODEL: &str = "Fake GPU";
const FAKE_MEMORY_MB: u64 = 16 * 1024;

/// `N` or `N:MODEL`, e.g. `4` or `4:A100`.
pub fn parse_fake_gpus(text: &str) -> Result<(u32, String), String> {
    let (count, model) = match text.split_once(':') {
        Some((c, m)) => (c, m.trim()),
        None => (text, FAKE_MODEL),
    };
    let n: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("--fake-gpus takes N or N:MODEL, e.g. 4 or 4:A100; got {text:?}"))?;
    if n > 64 {
        return Err(format!("--fake-gpus: at most 64 GPUs on one node, got {n}"));
    }
    if model.is_empty() {
        return Err("--fake-gpus: the model after ':' is empty".into());
    }
    Ok((n, model.to_owned()))
}

/// Rows of `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`.
pub fn parse_nvidia_smi(csv: &str) -> Result<Vec<Gpu>, String> {
    csv.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut cols = line.split(',').map(str::trim);
            let (Some(index), Some(name), Some(mem)) = (cols.next(), cols.next(), cols.next())
            else {
                return Err(format!("unexpected nvidia-smi line {line:?}"));
            };
            Ok(Gpu {
                index: index
                    .parse()
                    .map_err(|_| format!("bad GPU index in {line:?}"))?,
                model: name.to_owned(),
                memory_mb: mem
                    .parse()
                    .map_err(|_| format!("bad GPU memory in {line:?}"))?,
            })
        })
        .collect()
}

/// `MemTotal` of /proc/meminfo, in MiB.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Our own group in each v1 hierarchy ("4:memory:/a/b") or the v2 group ("0::/a").
pub fn parse_proc_cgroup(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((controllers.to_owned(), path.to_owned()))
        })
        .collect()
}

/// Looks at this machine. Never fails: what cannot be found is reported in
/// `notes` and counted as absent.
pub fn discover(over: &Overrides) -> Discovered {
    let mut notes = Vec::new();
    let cgroup_root = over
        .cgroup_mount
        .as_deref()
        .unwrap_or(Path::new("/sys/fs/cgroup"));
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut own = parse_proc_cgroup(&own);
    if let Some(group) = &over.cgroup_group {
        for (_, path) in &mut own {
            path.clone_from(group);
        }
    }
    let cgroups = detect_cgroups(cgroup_root, &own);

    let cpus = over
        .cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let memory_mb = over.memory_mb.unwrap_or_else(|| {
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo(&t))
            .unwrap_or(0);
        // A memory limit on kiln's own group caps what its tasks can use.
        let limit = cgroups
            .memory_root
            .as_ref()
            .and_then(|root| own_memory_limit_mb(root, cgroups.version));
        limit.map_or(total, |l| l.min(total))
    });

    let (gpus, gpu_source) = match &over.fake_gpus {
        Some((n, model)) => (
            (0..*n)
                .map(|index| Gpu {
                    index,
                    model: model.clone(),
                    memory_mb: FAKE_MEMORY_MB,
                })
                .collect(),
            GpuSource::Fake,
        ),
        None => real_gpus(&mut notes),
    };
    Discovered {
        node: Node {
            name: hostname(),
            cpus,
            memory_mb,
            gpus,
        },
        gpu_source,
        cgroups,
        notes,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

fn real_gpus(notes: &mut Vec<String>) -> (Vec<Gpu>, GpuSource) {
    match nvml_gpus() {
        Ok(gpus) => return (gpus, GpuSource::Nvml),
        Err(e) => notes.push(format!("NVML: {e}")),
    }
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            match parse_nvidia_smi(&String::from_utf8_lossy(&o.stdout)) {
                Ok(gpus) => return (gpus, GpuSource::NvidiaSmi),
                Err(e) => notes.push(format!("nvidia-smi: {e}")),
            }
        }
        Ok(o) => notes.push(format!(
            "nvidia-smi failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(_) => notes.push("nvidia-smi: not installed".into()),
    }
    (Vec::new(), GpuSource::None)
}

/// NVML through the driver's library, loaded now rather than linked, so the
/// binary runs on machines without it. The driver ships `libnvidia-ml.so.1`;
/// the unversioned name exists only with development packages.
fn nvml_gpus() -> Result<Vec<Gpu>, String> {
    let mut last = String::new();
    for lib in ["libnvidia-ml.so.1", "libnvidia-ml.so"] {
        let nvml = match nvml_wrapper::Nvml::builder().lib_path(lib.as_ref()).init() {
            Ok(n) => n,
            Err(e) => {
                last = format!("cannot load {lib}: {e}");
                continue;
            }
        };
        let count = nvml.device_count().map_err(|e| e.to_string())?;
        let mut gpus = Vec::new();
        for i in 0..count {
            let d = nvml.device_by_index(i).map_err(|e| e.to_string())?;
            gpus.push(Gpu {
                index: d.index().map_err(|e| e.to_string())?,
                model: d.name().map_err(|e| e.to_string())?,
                memory_mb: d.memory_info().map_err(|e| e.to_string())?.total / (1024 * 1024),
            });
        }
        return Ok(gpus);
    }
    Err(last)
}

fn detect_cgroups(root: &Path, own: &[(String, String)]) -> Cgroups {
    if root.join("cgroup.controllers").exists() {
        let path = own
            .iter()
            .find(|(c, _)| c.is_empty())
            .map(|(_, p)| p.as_str())
            .unwrap_or("/");
        let setup = delegation::delegate(root, path);
        let held = |c: &str| {
            setup
                .controllers
                .iter()
                .any(|s| s.controller == c && s.enforced)
                .then(|| setup.group.clone())
        };
        return Cgroups {
            version: Some(2),
            memory_root: held("memory"),
            cpu_root: held("cpu"),
            pids_root: held("pids"),
            group_root: setup.writable.then(|| setup.group.clone()),
            note: note_of(2, &setup.controllers),
            controllers: setup.controllers,
        };
    }
    let v1 = |controller: &str| {
        let (_, path) = own
            .iter()
            .find(|(c, _)| c.split(',').any(|x| x == controller))?;
        let dir = root.join(controller).join(path.trim_start_matches('/'));
        writable(&dir).then_some(dir)
    };
    let (memory_root, cpu_root, pids_root) = (v1("memory"), v1("cpu"), v1("pids"));
    let state = |c: &str, dir: &Option<PathBuf>, holds: String| match dir {
        Some(_) => ControllerState::held(c, holds),
        None => ControllerState::not_held(
            c,
            format!("no writable cgroup v1 {c} hierarchy for kiln's group"),
        ),
    };
    let swap = match &memory_root {
        Some(d) if d.join("memory.memsw.limit_in_bytes").exists() => "swap included",
        _ => "swap not limited (no memory.memsw.limit_in_bytes: swap accounting is off)",
    };
    let controllers = vec![
        state(
            "memory",
            &memory_root,
            format!("memory.limit_in_bytes per task, {swap}"),
        ),
        state(
            "cpu",
            &cpu_root,
            "cpu.cfs_quota_us per task (its CPUs' worth of time per 100 ms)".into(),
        ),
        state("pids", &pids_root, "pids.max per task".into()),
    ];
    if memory_root.is_none() && cpu_root.is_none() {
        return Cgroups {
            version: None,
            memory_root: None,
            cpu_root: None,
            pids_root: None,
            group_root: None,
            note: Some(
                "no writable cgroup hierarchy: memory and CPU limits are not enforced".into(),
            ),
            controllers,
        };
    }
    Cgroups {
        version: Some(1),
        note: note_of(1, &controllers),
        controllers,
        memory_root,
        cpu_root,
        pids_root,
        group_root: None,
    }
}

/// One line for events and `kiln nodes` when memory or CPU limits are not
/// enforced (the process limit has its own line).
fn note_of(version: u8, controllers: &[ControllerState]) -> Option<String> {
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !c.enforced && c.controller != "pids")
        .map(|c| format!("{}: {}", c.controller, c.detail))
        .collect();
    (!missing.is_empty()).then(|| {
        let which = controllers
            .iter()
            .filter(|c| !c.enforced && c.controller != "pids")
            .map(|c| {
                if c.controller == "cpu" {
                    "CPU"
                } else {
                    "memory"
                }
            })
            .collect::<Vec<_>>()
            .join(" and ");
        format!(
            "cgroup v{version}: {which} limits are not enforced ({})",
            missing.join("; ")
        )
    })
}

/// Whether kiln may create groups under `dir` (a real attempt, then undone).
pub(crate) fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!("kiln-probe-{}", std::process::id()));
    let ok = std::fs::create_dir(&probe).is_ok();
    if ok {
        let _ = std::fs::remove_dir(&probe);
    }
    ok
}

fn own_memory_limit_mb(dir: &Path, version: Option<u8>) -> Option<u64> {
    let file = match version {
        Some(2) => dir.join("memory.max"),
        _ => dir.join("memory.limit_in_bytes"),
    };
    let text = std::fs::read_to_string(file).ok()?;
    // "max" (v2) or a huge number (v1) mean no limit.
    let bytes: u64 = text.trim().parse().ok()?;
    (bytes < (1u64 << 60)).then_some(bytes / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_gpus_take_a_count_and_a_model() {
        assert_eq!(parse_fake_gpus("4"), Ok((4, FAKE_MODEL.to_string())));
        assert_eq!(parse_fake_gpus("2:A100"), Ok((2, "A100".to_string())));
        assert!(parse_fake_gpus("x").is_err());
        assert!(parse_fake_gpus("-1").is_err());
        assert!(parse_fake_gpus("1000").is_err());
        assert!(parse_fake_gpus("2:").is_err());
    }

    #[test]
    fn nvidia_smi_rows_become_gpus() {
        let csv = "0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100 80GB HBM3, 81559\n";
        let gpus = parse_nvidia_smi(csv).expect("parses");
        assert_eq!(gpus.len(), 2);
        assert_eq!(
            (gpus[1].index, gpus[1].model.as_str(), gpus[1].memory_mb),
            (1, "NVIDIA H100 80GB HBM3", 81559)
        );
        assert!(parse_nvidia_smi("0, name\n").is_err());
        assert!(parse_nvidia_smi("x, name, 1\n").is_err());
        assert_eq!(parse_nvidia_smi("\n"), Ok(vec![]));
    }

    #[test]
    fn meminfo_and_proc_cgroup() {
        assert_eq!(
            parse_meminfo("MemFree: 1 kB\nMemTotal:  24684084 kB\n"),
            Some(24105)
        );
        assert_eq!(parse_meminfo("nothing"), None);
        let own = parse_proc_cgroup("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/user.slice\n");
        assert_eq!(own[0], ("memory".to_string(), "/a/b".to_string()));
        assert_eq!(own[2], (String::new(), "/user.slice".to_string()));
    }

    #[test]
    fn this_machine_is_discovered_and_fakes_are_honoured() {
        let d = discover(&Overrides {
            fake_gpus: Some((4, "A100".into())),
            ..Default::default()
        });
        assert_eq!(d.gpu_source, GpuSource::Fake);
        let idx: Vec<u32> = d.node.gpus.iter().map(|g| g.index).collect();
        assert_eq!(idx, [0, 1, 2, 3]);
        assert!(d.node.cpus >= 1 && d.node.memory_mb > 0);
        let d = discover(&Overrides {
            fake_gpus: None,
            cpus: Some(3),
            memory_mb: Some(2048),
            ..Default::default()
        });
        assert_eq!((d.node.cpus, d.node.memory_mb), (3, 2048));
        // Either real GPUs were found, or the note says why there are none.
        assert!(d.gpu_source != GpuSource::None || !d.notes.is_empty());
        // Cgroups are either usable or the note says what is not enforced.
        assert!(d.cgroups.version.is_some() || d.cgroups.note.is_some());
    }
}
