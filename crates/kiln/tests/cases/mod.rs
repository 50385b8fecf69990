//! End-to-end cases that run against every engine (docs/engines.md section 5):
//! each case is a `fn(&Eng)`, and `engine_cases!` expands one `#[test]` per
//! case for one engine, in a `mod local` or `mod slurm` of a test binary. An
//! engine that is absent here skips its cases loudly: Slurm without
//! `SLURM_CONF` (unless `KILN_REQUIRE_SLURM=1`), PyTorch without
//! `KILN_TEST_PYTHON` (unless `KILN_REQUIRE_TORCH=1`).

#![allow(dead_code)]

pub mod lifecycle;
pub mod seeds;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::common::{self, Server};

/// Expands cases into tests for one engine: `engine_cases!(Slurm: a, b)`.
macro_rules! engine_cases {
    ($kind:ident: $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                if let Some(e) = $crate::cases::Eng::get($crate::cases::Kind::$kind) {
                    $crate::cases::run(&e, $crate::cases::$case);
                }
            }
        )+
    };
}

// Each test binary instantiates some of them.
#[allow(unused_imports)]
pub use lifecycle::{
    completion_rules, is_debug, logs_followed_live_and_stop, max_duration_and_extend, never_fits,
    retry_count,
};
#[allow(unused_imports)]
pub use seeds::{ailab_distributed, crater_mnist, kubeflow_ddp, openpai_ports};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    Slurm,
}

/// One engine, as the cases see it.
pub struct Eng {
    pub kind: Kind,
}

pub fn run(e: &Eng, case: fn(&Eng)) {
    case(e)
}

/// Held by Slurm cases that need the whole cluster (their tasks must span
/// both nodes, or they fill it).
static WHOLE: Mutex<()> = Mutex::new(());

impl Eng {
    /// The engine, or None (said) when it is absent here.
    pub fn get(kind: Kind) -> Option<Eng> {
        match kind {
            Kind::Local => Some(Eng { kind }),
            Kind::Slurm => have_cluster().then_some(Eng { kind }),
        }
    }

    pub fn slurm(&self) -> bool {
        self.kind == Kind::Slurm
    }

    /// A server on this engine: unsandboxed, a 1 s stop grace, 100 ms
    /// restart back-off; local with 16 CPUs, 64 GiB and 4 fake GPUs.
    pub fn server(&self) -> Server {
        self.server_env(&[])
    }

    pub fn server_env(&self, envs: &[(&str, &str)]) -> Server {
        match self.kind {
            Kind::Local => Server::start_env(common::DEFAULT_ARGS, envs),
            Kind::Slurm => slurm_server(envs),
        }
    }

    /// A server whose tasks find the PyTorch venv's python3 first, and the
    /// venv's bin folder; None (said) without one.
    pub fn torch_server(&self) -> Option<(Server, PathBuf)> {
        let bin = common::torch_bin()?;
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Some((self.server_env(&[("PATH", &path)]), bin))
    }

    /// The largest node's GPUs: 4 fake ones locally, gpu:fake:2 per Slurm node.
    pub fn gpus_per_node(&self) -> u64 {
        match self.kind {
            Kind::Local => 4,
            Kind::Slurm => 2,
        }
    }

    /// Seconds to wait for what takes `secs` locally: Slurm adds its
    /// scheduling, the launcher and a step per task.
    pub fn secs(&self, secs: u64) -> u64 {
        match self.kind {
            Kind::Local => secs,
            Kind::Slurm => secs * 3,
        }
    }

    /// The whole cluster, on Slurm.
    pub fn whole(&self) -> Option<MutexGuard<'static, ()>> {
        self.slurm()
            .then(|| WHOLE.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Where the server keeps its jobs' task folders.
    pub fn jobs_dir(&self, s: &Server) -> PathBuf {
        match self.kind {
            Kind::Local => s.data.path().join("jobs"),
            Kind::Slurm => s.data.path().join("shared/jobs"),
        }
    }
}

pub fn have_cluster() -> bool {
    if std::env::var_os("SLURM_CONF").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("KILN_REQUIRE_SLURM").is_none(),
        "KILN_REQUIRE_SLURM is set but SLURM_CONF is not"
    );
    eprintln!("SKIPPED: no Slurm cluster (scripts/slurm-cluster up DIR sets SLURM_CONF)");
    false
}

/// A server on the Slurm engine, its shared folder beside its store (inside
/// the data folder, so a dropped server's launchers and steps die with it).
pub fn slurm_server(envs: &[(&str, &str)]) -> Server {
    let data = tempfile::tempdir().expect("tmp");
    common::open_tree(data.path());
    let shared = data.path().join("shared");
    std::fs::create_dir_all(&shared).expect("shared");
    common::open_tree(&shared);
    let shared = shared.display().to_string();
    Server::start_in_env(
        data,
        &[
            "--engine",
            "slurm",
            "--shared",
            &shared,
            "--stop-grace",
            "1",
            "--no-sandbox",
            "--restart-backoff",
            "100ms",
        ],
        envs,
    )
}

/// The Slurm job ids of a kiln job's attempts (from the attempt folders on
/// the shared path: the launch record names the job), in attempt order.
pub fn slurm_jobs_of(jobs: &Path, job_id: &str) -> Vec<u64> {
    let want = format!("\"{job_id}\"");
    let mut found = Vec::new();
    for key in std::fs::read_dir(jobs).into_iter().flatten().flatten() {
        let mut attempts: Vec<(u32, u64)> = Vec::new();
        let mut ours = false;
        for a in std::fs::read_dir(key.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = a.file_name().to_string_lossy().into_owned();
            let Some(n) = name.strip_prefix("attempt-").and_then(|n| n.parse().ok()) else {
                continue;
            };
            for t in std::fs::read_dir(a.path()).into_iter().flatten().flatten() {
                let launch =
                    std::fs::read_to_string(t.path().join("launch.json")).unwrap_or_default();
                ours |= launch.contains(&want);
            }
            if let Some(id) = std::fs::read_to_string(a.path().join("slurm-job"))
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                attempts.push((n, id));
            }
        }
        if ours {
            attempts.sort_unstable();
            found.extend(attempts.into_iter().map(|(_, id)| id));
        }
    }
    found
}

/// Slurm's time limit of a job, as squeue prints it (`2:00`).
pub fn slurm_time_limit(job: u64) -> String {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-j", &job.to_string(), "-o", "%l"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The hosts a job's tasks ran on.
pub fn hosts(job: &serde_json::Value) -> std::collections::BTreeSet<String> {
    job["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t["host"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
