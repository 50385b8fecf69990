//! Tasks in the job's image, through docker or podman. The task sees what
//! the bubblewrap sandbox would show it (the space at /mnt, mounts, a
//! private /tmp, /dev/shm of the job's size, only its own GPUs) plus the
//! image's own software, on the host's network as distributed PyTorch
//! expects, as its user's uid with no capabilities. Its limits are kiln's
//! own cgroup, which the container is made inside of (`cgroup_parent`), so
//! OOM kills, process limits and usage read as for any task. Building the
//! command lines is pure; `container_run` runs them in the supervisor.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::files::RunAs;
use super::sandbox::Bind;
use crate::engine::ImagePull;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Podman,
}

impl Runtime {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "docker" => Ok(Runtime::Docker),
            "podman" => Ok(Runtime::Podman),
            other => Err(format!(
                "unknown container engine {other:?}: use podman, docker, auto or none"
            )),
        }
    }

    pub fn program(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }
}

/// The container engine of this machine, as the server found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEngine {
    pub runtime: Runtime,
    /// The docker or podman binary.
    pub program: PathBuf,
    /// Its version, for `kiln nodes`.
    pub version: String,
    /// The OCI runtime it runs containers with (runc, crun).
    pub oci_runtime: String,
    /// Options before the verb, the same for every command (podman's
    /// `--runtime`, `--cgroup-manager`).
    pub global_args: Vec<String>,
    /// Whether `--cgroup-parent` takes a cgroup path here, so containers
    /// can be made inside kiln's task groups (podman with cgroupfs).
    pub cgroup_paths: bool,
}

impl ContainerEngine {
    /// "podman 4.3.1 (runc)", for `kiln nodes` and the logs.
    pub fn describe(&self) -> String {
        format!(
            "{} {} ({})",
            self.runtime.program(),
            self.version,
            self.oci_runtime
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub runtime: Runtime,
    /// The docker or podman binary.
    pub program: PathBuf,
    #[serde(default)]
    pub global_args: Vec<String>,
    pub image: String,
    /// Unique per task run, so a stop can remove exactly this container.
    pub name: String,
    /// In order: later binds go on top of earlier ones.
    pub binds: Vec<Bind>,
    /// Host folder that becomes the task's private /tmp.
    pub tmp: PathBuf,
    pub shm_mb: u64,
    /// Host GPU indices handed to the container as devices (none for fake
    /// GPUs, which have no device files).
    pub gpus: Vec<u32>,
    /// Working folder inside the container.
    pub workdir: PathBuf,
    /// The uid and gid inside (kiln as root); None: the image's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<RunAs>,
    /// kiln's cgroup for the task, as the engine names a parent: the
    /// container is made inside it and held by its limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    /// Limits the engine sets on the container itself, for those kiln's
    /// group does not hold. CPU in thousandths of a CPU; 0: none.
    pub cpu_millis: u64,
    pub memory_mb: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    /// With whose credentials the image is pulled, and whether afresh.
    #[serde(default)]
    pub pull: ImagePull,
}

/// GPUs handed to a container as devices are numbered from 0 inside it.
pub fn renumber_gpus(env: &mut [(String, String)], count: usize) {
    let inside = (0..count)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for (k, v) in env.iter_mut() {
        if k == "CUDA_VISIBLE_DEVICES" || k == "NVIDIA_VISIBLE_DEVICES" {
            v.clone_from(&inside);
        }
    }
}

/// Docker Hub's full name for a short image name, as docker reads it
/// ("pytorch/pytorch:2.4" is docker.io/pytorch/pytorch:2.4, "ubuntu" is
/// docker.io/library/ubuntu); podman would otherwise ask which registry
/// meant, and with no terminal, fail. Other names stay as they are.
pub fn qualified(image: &str) -> String {
    if registry_of(image) != "docker.io" || image.starts_with("docker.io/") {
        image.to_owned()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    }
}

/// A full image name without its tag or digest: what one user's pull with
/// credentials makes private to those the registry lets pull it.
pub fn repository_of(qualified: &str) -> &str {
    let name = qualified.split('@').next().unwrap_or(qualified);
    match name.rsplit_once('/') {
        Some((path, last)) => match last.split_once(':') {
            Some((repo, _)) => &name[..path.len() + 1 + repo.len()],
            None => name,
        },
        None => name.split(':').next().unwrap_or(name),
    }
}

/// The registry an image reference names: its first part where that is a
/// host (has a dot or a port, or is localhost), else Docker Hub's.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The engines' credentials file (`auth.json` for podman, `config.json`
/// for docker): one registry, user name and secret. Docker Hub is also
/// written under the name docker's client looks it up by.
pub fn auth_json(registry: &str, username: &str, secret: &str) -> String {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{secret}"));
    let mut auths = serde_json::Map::new();
    auths.insert(registry.to_owned(), serde_json::json!({ "auth": auth }));
    if registry == "docker.io" {
        auths.insert(
            "https://index.docker.io/v1/".to_owned(),
            serde_json::json!({ "auth": auth }),
        );
    }
    serde_json::json!({ "auths": auths }).to_string()
}

/// OpenPAI's authFile: the registry, the user name and the password, one
/// per line.
pub fn parse_auth_file(text: &str) -> Result<(String, String, String), String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next(), lines.next()) {
        (Some(r), Some(u), Some(p)) => {
            let registry = r
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            Ok((registry.to_owned(), u.to_owned(), p.to_owned()))
        }
        _ => Err(
            "an authFile holds three lines: the registry, the user name and the password".into(),
        ),
    }
}

/// How the task's environment reaches the container. The engine's client
/// runs as root, so the task's variables must not be its environment (the
/// loader's, and the engine's own settings such as `CONTAINERS_CONF`, would
/// act on it): they go through a file only root reads, except values with a
/// line break, which a file of `NAME=value` lines cannot hold and which go
/// by name from the client's environment, if their names are harmless.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvPlan {
    pub file: Vec<(String, String)>,
    pub by_name: Vec<(String, String)>,
}

/// Whether the engine's client (or the loader starting it) acts on a
/// variable of this name.
pub fn client_reads(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "CONTAINERS_",
        "_CONTAINERS_",
        "CONTAINER_",
        "DOCKER_",
        "PODMAN_",
        "BUILDAH_",
        "REGISTRY_",
        "STORAGE_",
        "XDG_",
        "GO",
        "SSL_",
        "DBUS_",
        "SYSTEMD_",
        "LISTEN_",
        "NOTIFY_",
    ];
    const NAMES: &[&str] = &["HOME", "PATH", "USER", "SHELL", "TERM", "NO_PROXY"];
    let upper = name.to_ascii_uppercase();
    super::loader_env::acts_at_start(name)
        || PREFIXES.iter().any(|p| upper.starts_with(p))
        || NAMES.contains(&upper.as_str())
        || upper.ends_with("_PROXY")
}

/// What of the supervisor's (the server's) environment the engine's client
/// runs with: what configures the engine and reaches its registries, and
/// nothing else (no token or key the admin's shell holds can be pulled into
/// a container by name).
pub fn client_env(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    const NAMES: &[&str] = &[
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TZ",
        "TMPDIR",
        "XDG_RUNTIME_DIR",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "REGISTRY_AUTH_FILE",
        "DOCKER_HOST",
        "DOCKER_CONFIG",
        "DOCKER_CERT_PATH",
        "DOCKER_TLS_VERIFY",
        "CONTAINER_HOST",
        "CONTAINER_CONNECTION",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ];
    vars.filter(|(k, _)| NAMES.contains(&k.as_str()) || k.starts_with("CONTAINERS_"))
        .collect()
}

/// A name a shell and both engines take as a variable's: a letter or `_`,
/// then letters, digits and `_` (never a pattern like podman's `NAME*`).
fn plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits the task's environment; Err names a variable that can go
/// neither way.
pub fn plan_env(env: &[(String, String)]) -> Result<EnvPlan, String> {
    let mut plan = EnvPlan::default();
    for (k, v) in env {
        // One `NAME=value` line each: a name with a break or a space would
        // make lines of its own.
        if k.is_empty() || k.contains(|c: char| c.is_whitespace() || c == '=' || c.is_control()) {
            return Err(format!(
                "{k:?} cannot be a container's environment variable name"
            ));
        }
        // podman 5 reads quotes in an env file; a value that starts with
        // one goes by name, as one with a line break does.
        let by_name = v.contains('\n') || v.starts_with(['"', '\'']);
        if !by_name {
            plan.file.push((k.clone(), v.clone()));
        } else if !plain_name(k) {
            return Err(format!(
                "the variable {k:?} holds a line break or starts with a quote, which a \
                 container gets only for names of letters, digits and _"
            ));
        } else if client_reads(k) {
            return Err(format!(
                "the variable {k} holds a line break or starts with a quote, which a \
                 container's environment can only get from the engine's own environment, \
                 where {k} would act on the engine"
            ));
        } else {
            plan.by_name.push((k.clone(), v.clone()));
        }
    }
    Ok(plan)
}

/// The env file's text: one `NAME=value` per line, as docker and podman read
/// it (no quoting; the value is the rest of the line).
pub fn env_file_text(file: &[(String, String)]) -> String {
    let mut text = String::new();
    for (k, v) in file {
        text.push_str(k);
        text.push('=');
        text.push_str(v);
        text.push('\n');
    }
    text
}

/// The task's command in the image: bash where the image has it (kiln's
/// contract), else the image's sh, so images without bash (Alpine,
/// busybox) still run.
const SHELL: &str = "if command -v bash >/dev/null 2>&1; then exec bash -c \"$1\"; \
                     else exec sh -c \"$1\"; fi";

impl Container {
    fn verb(&self, verb: &[&str]) -> Vec<String> {
        let mut a = self.global_args.clone();
        a.extend(verb.iter().map(|s| (*s).to_owned()));
        a
    }

    /// Arguments after the program, up to the image and the shell that
    /// takes the command (the supervisor adds the command last).
    /// `rlimits`: (name, soft, hard) the task gets, the supervisor's own.
    pub fn run_args(
        &self,
        env_file: &std::path::Path,
        by_name: &[String],
        rlimits: &[(&str, u64, u64)],
    ) -> Vec<String> {
        let mut a = self.verb(&[
            "run",
            "--init",
            "--pull",
            "never",
            "--log-driver",
            "none",
            "--network",
            "host",
            "--ipc",
            "private",
            "--cap-drop",
            "all",
            "--security-opt",
            "no-new-privileges",
        ]);
        a.extend(["--name".into(), self.name.clone()]);
        if let Some(u) = self.user {
            a.extend(["--user".into(), format!("{}:{}", u.uid, u.gid)]);
        }
        if let Some(p) = &self.cgroup_parent {
            a.extend(["--cgroup-parent".into(), p.clone()]);
        }
        if self.cpu_millis > 0 {
            let cpus = self.cpu_millis as f64 / 1000.0;
            a.extend(["--cpus".into(), format!("{cpus}")]);
        }
        if self.memory_mb > 0 {
            // Swap off, as kiln's own limits have it.
            a.extend(["--memory".into(), format!("{}m", self.memory_mb)]);
            a.extend(["--memory-swap".into(), format!("{}m", self.memory_mb)]);
        }
        // Held by kiln's group (None), the engine's own default limit
        // (2048 or 4096, by version) must not cap the job's `pids`.
        let pids = self
            .pids_max
            .map_or_else(|| "-1".to_owned(), |n| n.to_string());
        a.extend(["--pids-limit".into(), pids]);
        a.extend(["--shm-size".into(), format!("{}m", self.shm_mb)]);
        for (name, soft, hard) in rlimits {
            a.extend(["--ulimit".into(), format!("{name}={soft}:{hard}")]);
        }
        a.extend(["--volume".into(), format!("{}:/tmp", self.tmp.display())]);
        for b in &self.binds {
            let ro = if b.read_only { ":ro" } else { "" };
            a.extend([
                "--volume".into(),
                format!("{}:{}{ro}", b.source.display(), b.target.display()),
            ]);
        }
        if !self.gpus.is_empty() {
            let list = self
                .gpus
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            match self.runtime {
                // The NVIDIA container toolkit's own flag.
                Runtime::Docker => a.extend(["--gpus".into(), format!("\"device={list}\"")]),
                // Podman reaches GPUs through CDI names.
                Runtime::Podman => {
                    for g in &self.gpus {
                        a.extend(["--device".into(), format!("nvidia.com/gpu={g}")]);
                    }
                }
            }
        }
        a.extend(["--env-file".into(), env_file.display().to_string()]);
        for name in by_name {
            a.extend(["--env".into(), name.clone()]);
        }
        a.extend(["--workdir".into(), self.workdir.display().to_string()]);
        // The image is never taken for an option, whatever it says.
        a.extend([
            "--".into(),
            self.image.clone(),
            "/bin/sh".into(),
            "-c".into(),
            SHELL.into(),
            "kiln-task".into(),
        ]);
        a
    }

    /// Whether the image is here already (exit status 0).
    pub fn exists_args(&self) -> Vec<String> {
        match self.runtime {
            Runtime::Podman => self.verb(&["image", "exists", "--", &self.image]),
            Runtime::Docker => {
                self.verb(&["image", "inspect", "--format", "{{.Id}}", "--", &self.image])
            }
        }
    }

    /// `auth`: the credentials file, for podman (docker reads it from
    /// `DOCKER_CONFIG`, see `container_run`).
    pub fn pull_args(&self, auth: Option<&std::path::Path>) -> Vec<String> {
        let mut a = self.verb(&["pull"]);
        if let (Some(f), Runtime::Podman) = (auth, self.runtime) {
            a.extend(["--authfile".into(), f.display().to_string()]);
        }
        a.extend(["--".into(), self.image.clone()]);
        a
    }

    /// The engine's own word on an OOM kill, where kiln's group cannot
    /// tell (no cgroup parent).
    pub fn oom_args(&self) -> Vec<String> {
        self.verb(&["inspect", "--format", "{{.State.OOMKilled}}", &self.name])
    }

    /// The pid of the container's init on the host (0 until it runs).
    pub fn pid_args(&self) -> Vec<String> {
        self.verb(&["inspect", "--format", "{{.State.Pid}}", &self.name])
    }

    /// Removes the container, at once: it ended, or its grace period did.
    pub fn cleanup_args(&self) -> Vec<String> {
        match self.runtime {
            Runtime::Podman => self.verb(&["rm", "--force", "--time", "0", &self.name]),
            Runtime::Docker => self.verb(&["rm", "--force", &self.name]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(runtime: Runtime, gpus: Vec<u32>) -> Container {
        Container {
            runtime,
            program: PathBuf::from(format!("/usr/bin/{}", runtime.program())),
            global_args: vec!["--runtime".into(), "runc".into()],
            image: "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime".into(),
            name: "kiln-ab12-7-a0-worker-1-0".into(),
            binds: vec![
                Bind {
                    source: "/var/lib/kiln/spaces/alice".into(),
                    target: "/mnt".into(),
                    read_only: false,
                    beneath: None,
                },
                Bind {
                    source: "/var/lib/kiln/datasets/imagenet".into(),
                    target: "/mnt/imagenet".into(),
                    read_only: true,
                    beneath: None,
                },
            ],
            tmp: "/var/lib/kiln/jobs/7/attempt-0/worker-1/tmp".into(),
            shm_mb: 8192,
            gpus,
            workdir: "/mnt/Output/ddp".into(),
            user: Some(RunAs {
                uid: 1_500_000_001,
                gid: 1_500_000_001,
            }),
            cgroup_parent: None,
            cpu_millis: 4000,
            memory_mb: 16384,
            pids_max: Some(4096),
            pull: ImagePull::default(),
        }
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    fn run(c: &Container) -> Vec<String> {
        c.run_args(
            std::path::Path::new("/jobs/7/env"),
            &["MULTI".into()],
            &[("nofile", 1024, 4096)],
        )
    }

    #[test]
    fn docker_gets_the_sandbox_view_host_network_and_its_gpus() {
        let a = run(&container(Runtime::Docker, vec![1, 3]));
        assert_eq!(&a[..4], ["--runtime", "runc", "run", "--init"]);
        assert_eq!(after(&a, "--pull"), ["never"]);
        assert_eq!(after(&a, "--network"), ["host"]);
        assert_eq!(after(&a, "--shm-size"), ["8192m"]);
        assert_eq!(after(&a, "--cpus"), ["4"]);
        assert_eq!(after(&a, "--memory"), ["16384m"]);
        assert_eq!(after(&a, "--memory-swap"), ["16384m"]);
        assert_eq!(after(&a, "--pids-limit"), ["4096"]);
        assert_eq!(after(&a, "--ulimit"), ["nofile=1024:4096"]);
        assert_eq!(
            after(&a, "--volume"),
            [
                "/var/lib/kiln/jobs/7/attempt-0/worker-1/tmp:/tmp",
                "/var/lib/kiln/spaces/alice:/mnt",
                "/var/lib/kiln/datasets/imagenet:/mnt/imagenet:ro",
            ]
        );
        assert_eq!(after(&a, "--gpus"), ["\"device=1,3\""]);
        assert!(after(&a, "--device").is_empty());
        // Values stay out of the command line.
        assert_eq!(after(&a, "--env-file"), ["/jobs/7/env"]);
        assert_eq!(after(&a, "--env"), ["MULTI"]);
        assert_eq!(after(&a, "--workdir"), ["/mnt/Output/ddp"]);
        assert_eq!(
            &a[a.len() - 6..a.len() - 2],
            [
                "--",
                "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime",
                "/bin/sh",
                "-c"
            ]
        );
    }

    #[test]
    fn the_task_is_its_users_uid_without_privileges() {
        let a = run(&container(Runtime::Podman, vec![]));
        assert_eq!(after(&a, "--user"), ["1500000001:1500000001"]);
        assert_eq!(after(&a, "--cap-drop"), ["all"]);
        assert_eq!(after(&a, "--security-opt"), ["no-new-privileges"]);
        for never in ["--privileged", "--pid", "--userns", "--rm"] {
            assert!(!a.iter().any(|x| x == never), "{never}: {a:?}");
        }
    }

    #[test]
    fn inside_kilns_group_the_engine_sets_no_limits_of_its_own() {
        let mut c = container(Runtime::Podman, vec![]);
        c.cgroup_parent = Some("/kiln.service/kiln-ab12-7-a0-worker-1-0".into());
        (c.cpu_millis, c.memory_mb, c.pids_max) = (0, 0, None);
        let a = run(&c);
        assert_eq!(
            after(&a, "--cgroup-parent"),
            ["/kiln.service/kiln-ab12-7-a0-worker-1-0"]
        );
        for flag in ["--cpus", "--memory", "--memory-swap"] {
            assert!(after(&a, flag).is_empty(), "{flag}");
        }
        assert_eq!(after(&a, "--pids-limit"), ["-1"]);
    }

    #[test]
    fn podman_names_gpus_through_cdi_and_no_gpus_means_no_flags() {
        let a = run(&container(Runtime::Podman, vec![0, 2]));
        assert_eq!(
            after(&a, "--device"),
            ["nvidia.com/gpu=0", "nvidia.com/gpu=2"]
        );
        assert!(after(&a, "--gpus").is_empty());
        let none = run(&container(Runtime::Docker, vec![]));
        assert!(after(&none, "--gpus").is_empty() && after(&none, "--device").is_empty());
    }

    #[test]
    fn pull_cleanup_and_inspect_name_exactly_this_image_and_container() {
        let c = container(Runtime::Podman, vec![]);
        assert_eq!(
            c.cleanup_args(),
            [
                "--runtime",
                "runc",
                "rm",
                "--force",
                "--time",
                "0",
                "kiln-ab12-7-a0-worker-1-0"
            ]
        );
        assert_eq!(
            c.pull_args(Some(std::path::Path::new("/jobs/7/auth.json"))),
            [
                "--runtime",
                "runc",
                "pull",
                "--authfile",
                "/jobs/7/auth.json",
                "--",
                "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime"
            ]
        );
        assert_eq!(Runtime::parse("podman"), Ok(Runtime::Podman));
        assert!(Runtime::parse("lxc")
            .unwrap_err()
            .contains("podman, docker"));
    }

    #[test]
    fn registries_credentials_and_auth_files() {
        assert_eq!(registry_of("pytorch/pytorch:2.4.0"), "docker.io");
        assert_eq!(registry_of("ubuntu"), "docker.io");
        assert_eq!(registry_of("ghcr.io/alice/train:1"), "ghcr.io");
        assert_eq!(registry_of("registry.lab:5000/x"), "registry.lab:5000");
        assert_eq!(registry_of("localhost/kiln-test/busybox"), "localhost");
        assert_eq!(
            qualified("pytorch/pytorch:2.4.0"),
            "docker.io/pytorch/pytorch:2.4.0"
        );
        assert_eq!(qualified("ubuntu:22.04"), "docker.io/library/ubuntu:22.04");
        assert_eq!(qualified("docker.io/x/y"), "docker.io/x/y");
        assert_eq!(qualified("ghcr.io/a/b"), "ghcr.io/a/b");
        assert_eq!(
            repository_of("registry.lab:5000/a/b:1"),
            "registry.lab:5000/a/b"
        );
        assert_eq!(
            repository_of("docker.io/library/ubuntu@sha256:ab"),
            "docker.io/library/ubuntu"
        );
        assert_eq!(repository_of("localhost/x"), "localhost/x");
        let v: serde_json::Value =
            serde_json::from_str(&auth_json("ghcr.io", "alice", "s3:cret")).expect("json");
        // base64("alice:s3:cret")
        assert_eq!(v["auths"]["ghcr.io"]["auth"], "YWxpY2U6czM6Y3JldA==");
        let hub: serde_json::Value =
            serde_json::from_str(&auth_json("docker.io", "a", "b")).expect("json");
        assert!(hub["auths"]["https://index.docker.io/v1/"]["auth"].is_string());
        assert_eq!(
            parse_auth_file("https://registry.lab:5000/\nalice\npw\n"),
            Ok(("registry.lab:5000".into(), "alice".into(), "pw".into()))
        );
        assert!(parse_auth_file("only-a-registry\n").is_err());
    }

    #[test]
    fn the_environment_goes_through_a_file_and_never_acts_on_the_client() {
        let env: Vec<(String, String)> = [
            ("RANK", "0"),
            ("LD_PRELOAD", "/mnt/evil.so"),
            ("CONTAINERS_CONF", "/mnt/evil.conf"),
            ("KEY", "-----BEGIN\nabc\n-----END"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let plan = plan_env(&env).expect("plan");
        assert_eq!(plan.file.len(), 3);
        assert_eq!(
            plan.by_name,
            [("KEY".into(), "-----BEGIN\nabc\n-----END".into())]
        );
        assert_eq!(
            env_file_text(&plan.file),
            "RANK=0\nLD_PRELOAD=/mnt/evil.so\nCONTAINERS_CONF=/mnt/evil.conf\n"
        );
        let bad = [("LD_PRELOAD".to_owned(), "/a.so\n/b.so".to_owned())];
        assert!(plan_env(&bad).unwrap_err().contains("LD_PRELOAD"));
        for name in ["A\nLD_PRELOAD", "A B", ""] {
            assert!(
                plan_env(&[(name.to_owned(), "x".to_owned())]).is_err(),
                "{name:?}"
            );
        }
        for name in [
            "https_proxy",
            "XDG_CONFIG_HOME",
            "GODEBUG",
            "PATH",
            "DOCKER_HOST",
        ] {
            assert!(client_reads(name), "{name}");
        }
        assert!(!client_reads("MASTER_ADDR"));
    }
}
