//! Tasks in the job's image, when the node has docker or podman and kiln was
//! told to use it (`kiln server --containers docker|podman`). The task sees
//! what the bubblewrap sandbox would show it (the space at /mnt, mounts,
//! a private /tmp, /dev/shm of the job's size, only its own GPUs) plus the
//! image's own software, on the host's network as distributed PyTorch
//! expects. Building the command line is pure; the supervisor runs it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::sandbox::Bind;

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
                "unknown container runtime {other:?}: use docker or podman"
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub runtime: Runtime,
    /// The docker or podman binary.
    pub program: PathBuf,
    pub image: String,
    /// Unique per task run, so a stop can remove exactly this container.
    pub name: String,
    /// In order: later binds go on top of earlier ones.
    pub binds: Vec<Bind>,
    /// Host folder that becomes the task's private /tmp.
    pub tmp: PathBuf,
    pub shm_mb: u64,
    /// Host GPU indices the task was placed on.
    pub gpus: Vec<u32>,
    /// Working folder inside the container.
    pub workdir: PathBuf,
    /// Variables handed in by name: their values come from the supervisor's
    /// environment, so secrets never appear on a command line.
    pub env_names: Vec<String>,
    /// CPU limit in thousandths of a CPU (0: none).
    pub cpu_millis: u64,
    pub memory_mb: u64,
}

impl Container {
    /// Arguments after the program, up to and including `bash -c` (the
    /// supervisor adds the command).
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "run",
            "--rm",
            "--init",
            "--network",
            "host",
            "--ipc",
            "private",
        ]
        .map(String::from)
        .into();
        a.extend(["--name".into(), self.name.clone()]);
        a.extend(["--shm-size".into(), format!("{}m", self.shm_mb)]);
        if self.cpu_millis > 0 {
            let cpus = self.cpu_millis as f64 / 1000.0;
            a.extend(["--cpus".into(), format!("{cpus}")]);
        }
        if self.memory_mb > 0 {
            a.extend(["--memory".into(), format!("{}m", self.memory_mb)]);
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
        for name in &self.env_names {
            a.extend(["--env".into(), name.clone()]);
        }
        a.extend(["--workdir".into(), self.workdir.display().to_string()]);
        a.extend([self.image.clone(), "bash".into(), "-c".into()]);
        a
    }

    /// Removes the container should the runtime's client die before it
    /// (SIGKILL at the end of the grace period reaches only the client).
    pub fn cleanup_args(&self) -> Vec<String> {
        vec!["rm".into(), "--force".into(), self.name.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(runtime: Runtime, gpus: Vec<u32>) -> Container {
        Container {
            runtime,
            program: PathBuf::from(format!("/usr/bin/{}", runtime.program())),
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
            env_names: vec!["RANK".into(), "KILN_SECRET_WANDB".into()],
            cpu_millis: 4000,
            memory_mb: 16384,
        }
    }

    fn after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn docker_gets_the_sandbox_view_host_network_and_its_gpus() {
        let a = container(Runtime::Docker, vec![1, 3]).args();
        assert_eq!(&a[..3], ["run", "--rm", "--init"]);
        assert_eq!(after(&a, "--network"), ["host"]);
        assert_eq!(after(&a, "--shm-size"), ["8192m"]);
        assert_eq!(after(&a, "--cpus"), ["4"]);
        assert_eq!(after(&a, "--memory"), ["16384m"]);
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
        assert_eq!(after(&a, "--env"), ["RANK", "KILN_SECRET_WANDB"]);
        assert_eq!(after(&a, "--workdir"), ["/mnt/Output/ddp"]);
        assert_eq!(
            &a[a.len() - 3..],
            [
                "pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime",
                "bash",
                "-c"
            ]
        );
    }

    #[test]
    fn podman_names_gpus_through_cdi_and_no_gpus_means_no_flags() {
        let a = container(Runtime::Podman, vec![0, 2]).args();
        assert_eq!(
            after(&a, "--device"),
            ["nvidia.com/gpu=0", "nvidia.com/gpu=2"]
        );
        assert!(after(&a, "--gpus").is_empty());
        let none = container(Runtime::Docker, vec![]).args();
        assert!(after(&none, "--gpus").is_empty() && after(&none, "--device").is_empty());
    }

    #[test]
    fn cleanup_removes_exactly_this_container() {
        let c = container(Runtime::Docker, vec![]);
        assert_eq!(
            c.cleanup_args(),
            ["rm", "--force", "kiln-ab12-7-a0-worker-1-0"]
        );
        assert_eq!(Runtime::parse("podman"), Ok(Runtime::Podman));
        assert!(Runtime::parse("lxc")
            .unwrap_err()
            .contains("docker or podman"));
    }
}
