//! Which container engine runs the tasks that name an image: the one asked
//! for (`--containers podman|docker`), none (`none`), or by default the
//! first of podman and docker that answers on this machine (`auto`). What
//! the engine says of itself is read once, at start.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_engine::local::container::{ContainerEngine, Runtime};
use serde_json::Value;

/// `--containers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    #[default]
    Auto,
    None,
    Engine(Runtime),
}

impl Choice {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Choice::Auto),
            "none" | "off" => Ok(Choice::None),
            other => Runtime::parse(other).map(Choice::Engine),
        }
    }
}

/// How long an engine may take to describe itself before it counts as
/// not answering (a docker client whose daemon is gone can hang).
const ASK_FOR: Duration = Duration::from_secs(15);

/// Runs `program args`, returning its standard output if it succeeded in
/// time, else its words.
fn ask(program: &Path, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let deadline = Instant::now() + ASK_FOR;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => {
                // A timer: how often the child is looked at.
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not answer within {} s",
                    program.display(),
                    ASK_FOR.as_secs()
                ));
            }
            Err(e) => return Err(format!("lost {}: {e}", program.display())),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("lost {}: {e}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{} info failed: {}",
            program.display(),
            err.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
        ))
    }
}

/// The engine as `podman info --format json` describes it, with the OCI
/// runtime kiln uses: `runtime` when the admin named one, else runc where
/// the host is not on cgroup v2 alone and podman would use crun (which
/// refuses hybrid and v1 hierarchies). `runc_here`: whether runc is on PATH.
pub fn podman_from_info(
    program: &Path,
    info: &Value,
    runtime: Option<&str>,
    runc_here: bool,
) -> Result<ContainerEngine, String> {
    let host = info.get("host").ok_or("podman info has no host")?;
    let version = info
        .pointer("/version/Version")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    let default_runtime = host
        .pointer("/ociRuntime/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let v2 = host.get("cgroupVersion").and_then(Value::as_str) == Some("v2");
    let manager = host
        .get("cgroupManager")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut global_args = Vec::new();
    let oci_runtime = match runtime {
        Some(r) => r.to_owned(),
        None if !v2 && default_runtime == "crun" && runc_here => "runc".to_owned(),
        None => default_runtime.clone(),
    };
    if oci_runtime != default_runtime {
        global_args.extend(["--runtime".to_owned(), oci_runtime.clone()]);
    }
    // Containers go inside kiln's own task groups, which `--cgroup-parent`
    // can name only as paths (systemd would want a slice).
    if manager != "cgroupfs" {
        global_args.extend(["--cgroup-manager".to_owned(), "cgroupfs".to_owned()]);
    }
    Ok(ContainerEngine {
        runtime: Runtime::Podman,
        program: program.to_owned(),
        version,
        oci_runtime,
        global_args,
        cgroup_paths: true,
    })
}

/// The engine as `docker info --format '{{json .}}'` describes it.
pub fn docker_from_info(program: &Path, info: &Value) -> Result<ContainerEngine, String> {
    let version = info
        .get("ServerVersion")
        .and_then(Value::as_str)
        .ok_or("docker info has no ServerVersion: its daemon did not answer")?
        .to_owned();
    let oci_runtime = info
        .get("DefaultRuntime")
        .and_then(Value::as_str)
        .unwrap_or("runc")
        .to_owned();
    Ok(ContainerEngine {
        runtime: Runtime::Docker,
        program: program.to_owned(),
        version,
        oci_runtime,
        global_args: Vec::new(),
        cgroup_paths: info.get("CgroupDriver").and_then(Value::as_str) == Some("cgroupfs"),
    })
}

/// Why docker cannot run tasks for a root kiln: its daemon binds mount
/// sources by path in its own mount namespace, where kiln cannot pin a
/// user's folders (podman's runtime inherits the supervisor's, where they
/// are pinned). A user could swap a folder for a link to anywhere between
/// kiln's check and the daemon's bind.
pub const DOCKER_AS_ROOT: &str = "docker's daemon binds a task's folders by path, in a mount \
     namespace where kiln cannot pin them, so users could swap one for a link to the host's \
     files: as root (many users), kiln runs images with podman only";

fn try_engine(rt: Runtime, runtime: Option<&str>) -> Result<ContainerEngine, String> {
    if rt == Runtime::Docker && kiln_engine::local::sandbox::running_as_root() {
        return Err(DOCKER_AS_ROOT.into());
    }
    if rt == Runtime::Docker && runtime.is_some() {
        // docker's runtime is the daemon's setting (or per container).
        return Err("--container-runtime is for podman; set docker's in its daemon.json".into());
    }
    let program = kiln_engine::local::sandbox::find_program(rt.program())
        .ok_or_else(|| format!("{} is not installed", rt.program()))?;
    let text = match rt {
        Runtime::Podman => ask(&program, &["info", "--format", "json"])?,
        Runtime::Docker => ask(&program, &["info", "--format", "{{json .}}"])?,
    };
    let info: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} info said something unreadable: {e}", rt.program()))?;
    match rt {
        Runtime::Podman => podman_from_info(
            &program,
            &info,
            runtime,
            kiln_engine::local::sandbox::find_program("runc").is_some(),
        ),
        Runtime::Docker => docker_from_info(&program, &info),
    }
}

/// The engine to use, or why there is none (for `kiln nodes`). An engine
/// asked for by name that does not answer is an error.
pub fn choose(
    choice: Choice,
    runtime: Option<&str>,
) -> Result<Result<ContainerEngine, String>, String> {
    match choice {
        Choice::None => Ok(Err("off (--containers none)".into())),
        Choice::Engine(rt) => try_engine(rt, runtime)
            .map(Ok)
            .map_err(|e| format!("--containers {}: {e}", rt.program())),
        Choice::Auto => {
            let mut why = Vec::new();
            for rt in [Runtime::Podman, Runtime::Docker] {
                match try_engine(rt, runtime) {
                    Ok(e) => return Ok(Ok(e)),
                    Err(e) => why.push(e),
                }
            }
            Ok(Err(format!("no container engine: {}", why.join("; "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn on_hybrid_cgroups_podman_gets_runc_and_paths_for_parents() {
        let info = json!({
            "host": {"cgroupManager": "systemd", "cgroupVersion": "v1", "ociRuntime": {"name": "crun"}},
            "version": {"Version": "4.3.1"}
        });
        let e = podman_from_info(Path::new("/usr/bin/podman"), &info, None, true).expect("engine");
        assert_eq!(e.oci_runtime, "runc");
        assert_eq!(
            e.global_args,
            ["--runtime", "runc", "--cgroup-manager", "cgroupfs"]
        );
        assert_eq!(e.describe(), "podman 4.3.1 (runc)");
        // Without runc, podman's own choice stays.
        let e = podman_from_info(Path::new("/usr/bin/podman"), &info, None, false).expect("engine");
        assert_eq!(e.oci_runtime, "crun");
    }

    #[test]
    fn on_cgroup_v2_podmans_runtime_is_kept_and_the_admins_wins() {
        let info = json!({
            "host": {"cgroupManager": "cgroupfs", "cgroupVersion": "v2", "ociRuntime": {"name": "crun"}},
            "version": {"Version": "5.0.0"}
        });
        let e = podman_from_info(Path::new("/usr/bin/podman"), &info, None, true).expect("engine");
        assert_eq!((e.oci_runtime.as_str(), e.global_args.len()), ("crun", 0));
        let e = podman_from_info(Path::new("/usr/bin/podman"), &info, Some("runc"), true)
            .expect("engine");
        assert_eq!(e.global_args, ["--runtime", "runc"]);
    }

    #[test]
    fn a_docker_client_without_its_daemon_is_no_engine() {
        let info = json!({"ServerErrors": ["Cannot connect to the Docker daemon"]});
        assert!(docker_from_info(Path::new("/usr/bin/docker"), &info)
            .unwrap_err()
            .contains("daemon"));
        let info =
            json!({"ServerVersion": "28.2.2", "DefaultRuntime": "runc", "CgroupDriver": "systemd"});
        let e = docker_from_info(Path::new("/usr/bin/docker"), &info).expect("engine");
        assert!(!e.cgroup_paths);
        assert_eq!(Choice::parse("auto"), Ok(Choice::Auto));
        assert_eq!(Choice::parse("none"), Ok(Choice::None));
        assert!(Choice::parse("lxc").is_err());
    }
}
