//! `kiln`: the single binary. `kiln server` runs the control loop and the
//! API; every other verb is either offline (validate, render) or a client of
//! a server (`KILN_URL`, `KILN_TOKEN`).

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod client;
mod files_cmds;
mod job_cmds;
mod progress;
mod queue_cmds;
mod registry_cmds;
mod run_cmd;
mod spec_cmds;
mod user_cmds;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "GPU training jobs: submit, queue, place, run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Human-readable text.
    Text,
    /// The same objects the API returns.
    Json,
    /// The canonical job in kiln's own YAML (converts any format to kiln's).
    Yaml,
    /// The job as OpenPAI v1 JSON, where it fits that format.
    OpenpaiV1,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Stream {
    /// stdout and stderr in the order they were written.
    Output,
    Stdout,
    Stderr,
}

#[derive(Subcommand)]
enum FilesCommand {
    /// List a folder of your space (default: its top).
    Ls {
        path: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Upload a file or a whole folder.
    Put {
        local: std::path::PathBuf,
        remote: String,
    },
    /// Download a file or a whole folder.
    Get {
        remote: String,
        local: std::path::PathBuf,
    },
    /// Make a folder (and its parents).
    Mkdir { path: String },
    /// Remove a file or an empty folder; -r for a folder and everything in it.
    Rm {
        path: String,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Move or rename.
    Mv { from: String, to: String },
    /// How much your space holds, and its quota.
    Du {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Make dataset NAME of a folder of your space (moved, not copied).
    Add { name: String, space_folder: String },
    /// List the datasets jobs can mount (`mounts: [dataset:NAME]`).
    Ls {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Remove a dataset and its files.
    Rm { name: String },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Store your credential for REGISTRY (host[:port], as images name it);
    /// your tasks' pulls from it use it. The password or token is asked
    /// for, unechoed, or read from standard input.
    Login {
        registry: String,
        #[arg(short = 'u', long)]
        username: String,
        /// Read the password or token from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the registries you stored a credential for (never the secret).
    Ls {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Forget your credential for REGISTRY.
    Logout { registry: String },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user (admin only); prints the new user's token.
    Add {
        name: String,
        /// Read a password for web logins from standard input (asked for,
        /// unechoed, when that is a terminal).
        #[arg(long)]
        password_stdin: bool,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// Run the user's tasks as this Unix account (its uid and gid; never
        /// root). Default: a uid kiln allocates for the user.
        #[arg(long, value_name = "ACCOUNT")]
        unix_user: Option<String>,
        /// A queue the user may submit to besides `default` (repeatable).
        #[arg(long = "queue", value_name = "QUEUE")]
        queues: Vec<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// List users (admin only).
    Ls {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Set the password for the web UI and WebDAV: yours, or (admin)
    /// NAME's. Asked for twice, unechoed, at a terminal; else one line of
    /// standard input.
    Passwd { name: Option<String> },
    /// Issue a new token, for yourself or (admin) for NAME.
    Token {
        name: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Revoke every token and web sign-in of NAME (admin) or your own;
    /// `kiln user token` makes a new one.
    Revoke {
        name: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the kiln server: the scheduler, the local engine and the API.
    // Boxed: its many flags would otherwise size every verb's value.
    Server(Box<ServerArgs>),
    /// Submit a job spec (any supported format); prints the job id.
    Submit {
        /// Spec file, or - for standard input.
        file: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
        /// Wait until the job finishes; exit 0 SUCCEEDED, 1 FAILED or STOPPED.
        #[arg(long)]
        wait: bool,
    },
    /// Run one command as a job and follow its output, like srun; exit 0
    /// when it succeeds, 1 when it fails or is stopped.
    Run(run_cmd::RunArgs),
    /// List jobs, newest first.
    Ls {
        /// Only jobs in this state (WAITING, RUNNING, SUCCEEDED, ...).
        #[arg(long)]
        state: Option<String>,
        /// Only this user's jobs (admin).
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Show a job: state, tasks, events.
    Show {
        /// `user~name`, or `name` for your own job.
        job: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Print a task's log.
    Logs {
        job: String,
        /// Task id (`worker-0`); needed when the job has several tasks.
        #[arg(long)]
        task: Option<String>,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        #[arg(long, value_enum, default_value = "output")]
        stream: Stream,
        /// Keep printing new output until the task ends, like `kubectl logs -f`.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Wait for a job to finish: exit 0 SUCCEEDED, 1 FAILED or STOPPED, 2 timeout.
    Wait {
        job: String,
        #[arg(long)]
        timeout: Option<u64>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Stop a job (its tasks get SIGTERM, then SIGKILL after the grace period).
    Stop {
        job: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Delete a finished job with its logs.
    Rm { job: String },
    /// Submit a copy of a job under a new name.
    Clone {
        job: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Lengthen a running job's max duration, e.g. `kiln extend train 2h`.
    Extend {
        job: String,
        duration: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// The newest resource use (CPU, memory) and training metrics of a job.
    Top {
        job: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Start TensorBoard on a job's TensorBoard folder and print a link
    /// that opens it in a browser (the link signs you in once).
    Tensorboard {
        job: String,
        /// Stop the job's TensorBoard instead.
        #[arg(long)]
        stop: bool,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// A job's event history.
    Events {
        job: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Your space: list, upload, download, make folders, remove, move.
    Files {
        #[command(subcommand)]
        command: FilesCommand,
    },
    /// Shared read-only datasets: list; the admin adds and removes them.
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
    },
    /// Your credentials for private container registries.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Users and their API tokens.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Queues: guaranteed shares of the cluster that lend what they do not
    /// use; the admin makes them and grants them to users.
    Queue {
        #[command(subcommand)]
        command: queue_cmds::QueueCommand,
    },
    /// The machine's CPUs, memory and GPUs, and who holds them.
    Nodes {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Format,
    },
    /// Check a job spec in any supported format; exit 0 when valid.
    Validate {
        /// Spec file, or - for standard input.
        file: String,
    },
    /// Internal: supervise one task (started by the local engine).
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// The task's run folder, holding launch.json.
        #[arg(required_unless_present = "standby")]
        dir: Option<std::path::PathBuf>,
        /// Start now and wait for the folder on stdin (the local engine
        /// keeps one ready, so that a task's start does not wait for it).
        #[arg(long, conflicts_with = "dir")]
        standby: bool,
    },
    /// The batch script of a Slurm attempt: starts its tasks' steps.
    #[command(name = "__slurm-launch", hide = true)]
    SlurmLaunch {
        /// The attempt's folder on the shared path.
        dir: std::path::PathBuf,
        /// End the allocation after this many seconds with nothing running.
        #[arg(long, default_value = "600")]
        idle_secs: u64,
    },
    /// Show the canonical job and each task's environment under an example
    /// placement; `-o yaml` / `-o openpai-v1` print the job converted instead.
    Render {
        /// Spec file, or - for standard input.
        file: String,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Output,
        /// User the job is rendered for (default: the spec's user, else $USER).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8420")]
    listen: String,
    /// Close a connection that has not sent a whole request line and
    /// headers within this long (also how long an idle kept-alive
    /// connection stays open).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    http_header_timeout: String,
    /// Fail a request whose body has sent nothing for this long. Answers
    /// are never cut: `kiln logs -f` follows as long as it needs.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    http_body_timeout: String,
    /// Most connections open at once; more are closed as they arrive
    /// (default: the open-files limit, raised to its hard limit at start,
    /// less 256, at most 16384).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most connections open at once from one client address (an IPv6
    /// client: its /64).
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_connections_per_ip: usize,
    /// Data folder (default: KILN_DATA, else $XDG_DATA_HOME/kiln).
    #[arg(long)]
    data: Option<std::path::PathBuf>,
    /// Declare N fake GPUs (N or N:MODEL) instead of discovering real ones.
    #[arg(long, value_name = "N[:MODEL]")]
    fake_gpus: Option<String>,
    /// CPUs to offer instead of the detected count.
    #[arg(long)]
    cpus: Option<u32>,
    /// Memory to offer instead of the detected amount (e.g. 16Gi).
    #[arg(long)]
    memory: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when tasks are stopped.
    #[arg(long, default_value_t = 10)]
    stop_grace: u64,
    /// How long a task restarted in place by its restart policy first
    /// waits; the wait doubles up to 30 times this and starts over after a
    /// run of 60 times this (10s: 5 min and 10 min). Hidden: for tests.
    #[arg(long, value_name = "DURATION", default_value = "10s", hide = true)]
    restart_backoff: String,
    /// Fair share: how fast past usage is forgotten (Slurm's
    /// PriorityDecayHalfLife), e.g. 7d, 1d, 12h.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    fair_share_half_life: String,
    /// Most one user's space may hold, e.g. 100Gi (default: no limit).
    #[arg(long)]
    quota: Option<String>,
    /// Run tasks without the bubblewrap sandbox (no /mnt, no mounts).
    #[arg(long)]
    no_sandbox: bool,
    /// Which container engine runs tasks that name an image: auto (podman,
    /// else docker, where one answers), podman, docker or none. Needs the
    /// sandbox too, for the same view of the space.
    #[arg(long, value_name = "ENGINE", default_value = "auto")]
    containers: String,
    /// The OCI runtime podman runs containers with (runc, crun); by default
    /// podman's own, or runc where the cgroups are not v2 alone.
    #[arg(long, value_name = "NAME")]
    container_runtime: Option<String>,
    /// A host folder every container gets read-only, as HOST or
    /// HOST:INSIDE (site software: a shared Python, CUDA); repeatable.
    #[arg(long = "container-mount", value_name = "HOST[:INSIDE]")]
    container_mounts: Vec<String>,
    /// Seconds between samples of running tasks' CPU and memory.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    sample_every: u64,
    /// Tell a job (an event and a warning) once all its GPUs have shown 0%
    /// use this long, e.g. 30m; "off" never does.
    #[arg(long, value_name = "DURATION", default_value = "30m")]
    idle_gpu_notice: String,
    /// Stop a job once all its GPUs have shown 0% use this long, e.g. 2h
    /// (default: off; jobs are only told).
    #[arg(long, value_name = "DURATION")]
    idle_gpu_release: Option<String>,
    /// With --fake-gpus: read each GPU sample from this JSON file, a list of
    /// {index, utilizationPercent, memoryUsedBytes, processes}, instead of
    /// reporting no use. For tests and demonstrations of the GPU series.
    #[arg(long, value_name = "FILE", hide = true, requires = "fake_gpus")]
    fake_gpu_usage: Option<std::path::PathBuf>,
    /// Where the cgroup hierarchy is mounted, instead of /sys/fs/cgroup: a
    /// hybrid machine's v2 hierarchy (/sys/fs/cgroup/unified), for tests.
    #[arg(long, value_name = "DIR", hide = true)]
    cgroup_mount: Option<std::path::PathBuf>,
    /// Put each task's cgroup in this group (a path below the cgroup
    /// mount, e.g. /system.slice/kiln-tasks.service) instead of the
    /// server's own: see dist/ and docs/install.md.
    #[arg(long, value_name = "PATH")]
    cgroup_group: Option<String>,
    /// The TensorBoard program that `kiln tensorboard JOB` runs (default:
    /// `tensorboard` on PATH).
    #[arg(long, value_name = "PROGRAM")]
    tensorboard: Option<std::path::PathBuf>,
    /// Stop a job's TensorBoard once nobody has used it this long.
    #[arg(long, value_name = "DURATION", default_value = "30m")]
    tensorboard_idle: String,
    /// Most TensorBoards running at once (each is a Python process of a few
    /// hundred MB); the least recently used one makes room.
    #[arg(long, value_name = "N", default_value_t = 8)]
    tensorboard_max: usize,
    /// Where TensorBoards are served. They get their own port (another
    /// origin than the UI, so a board's page cannot act as its viewer);
    /// default: the --listen address with a port picked at start.
    #[arg(long, value_name = "ADDR")]
    tensorboard_listen: Option<String>,
    /// The boards' public base URL when a proxy serves them, e.g.
    /// https://tensorboard.lab.example (default: the host the caller used,
    /// with the boards' port).
    #[arg(long, value_name = "URL")]
    tensorboard_url: Option<String>,
    /// As root, each user's tasks run as a uid of their own, allocated from
    /// this range and recorded (FIRST-LAST).
    #[arg(
        long,
        value_name = "FIRST-LAST",
        default_value = "1500000000-1500999999"
    )]
    task_uids: kiln_server::identity::UidRange,
    /// A kiln user named like a Unix account of this machine runs as that
    /// account (never root) instead of an allocated uid.
    #[arg(long)]
    map_unix_users: bool,
    /// What runs tasks: `local` (this machine) or `slurm` (the Slurm cluster
    /// whose commands are on PATH; needs --shared).
    #[arg(long, value_name = "ENGINE", default_value = "local")]
    engine: String,
    /// With --engine slurm: a folder at the same path on this machine and on
    /// every Slurm node (task folders, logs and launch records live there).
    #[arg(long, value_name = "DIR")]
    shared: Option<std::path::PathBuf>,
    /// With --engine slurm: the Slurm partition of a kiln queue (repeatable);
    /// an unmapped queue uses the partition of its name, else the default.
    #[arg(long, value_name = "QUEUE=PARTITION")]
    slurm_partition: Vec<String>,
    /// With --engine slurm: between polls of squeue and sinfo.
    #[arg(long, value_name = "DURATION", default_value = "1s", hide = true)]
    slurm_poll: String,
}

/// A duration flag, or None for "off".
/// `--container-mount HOST[:INSIDE]`: an absolute host folder that
/// exists, at the same path inside unless another is given.
fn container_mount(text: &str) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (host, inside) = text.split_once(':').unwrap_or((text, text));
    let (host, inside) = (
        std::path::PathBuf::from(host),
        std::path::PathBuf::from(inside),
    );
    if !host.is_absolute() || !inside.is_absolute() {
        anyhow::bail!("--container-mount {text}: both paths must be absolute");
    }
    if !host.is_dir() {
        anyhow::bail!(
            "--container-mount {text}: {} is not a folder here",
            host.display()
        );
    }
    Ok((host, inside))
}

fn duration_or_off(flag: &str, text: &str) -> anyhow::Result<Option<u64>> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match kiln_spec::quantity::parse_duration_secs(text) {
        Ok(0) => Ok(None),
        Ok(secs) => Ok(Some(secs)),
        Err(e) => Err(anyhow::anyhow!("{flag}: {e}, or \"off\"")),
    }
}

/// A timeout flag of the HTTP listener: a duration of at least 1s.
fn request_timeout(flag: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    match kiln_spec::quantity::parse_duration_secs(text) {
        Ok(0) => Err(anyhow::anyhow!("{flag}: must be at least 1s")),
        Ok(secs) => Ok(std::time::Duration::from_secs(secs)),
        Err(e) => Err(anyhow::anyhow!("{flag}: {e}")),
    }
}

/// Colours in the server's log only for a person at a terminal: a log
/// file, a pipe or the journal would keep the escape codes as noise.
/// `NO_COLOR` (https://no-color.org) turns them off at a terminal too.
fn log_colours() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `--engine`, `--shared`, `--slurm-partition` and `--slurm-poll` together.
fn slurm_settings(
    engine: &str,
    shared: Option<std::path::PathBuf>,
    partitions: &[String],
    poll: &str,
) -> anyhow::Result<Option<kiln_server::SlurmSettings>> {
    match engine {
        "local" => {
            if shared.is_some() || !partitions.is_empty() {
                anyhow::bail!("--shared and --slurm-partition are for --engine slurm");
            }
            Ok(None)
        }
        "slurm" => {
            let Some(shared) = shared else {
                anyhow::bail!(
                    "--engine slurm needs --shared DIR: a folder at the same path on this \
                     machine and on every Slurm node"
                );
            };
            let mut map = std::collections::HashMap::new();
            for p in partitions {
                let Some((q, part)) = p.split_once('=') else {
                    anyhow::bail!("--slurm-partition {p:?}: expected QUEUE=PARTITION");
                };
                map.insert(q.to_owned(), part.to_owned());
            }
            let poll = match kiln_spec::quantity::parse_duration_secs(poll) {
                Ok(s) => std::time::Duration::from_secs(s.max(1)),
                Err(e) => anyhow::bail!("--slurm-poll: {e}"),
            };
            Ok(Some(kiln_server::SlurmSettings {
                shared,
                partitions: map,
                poll,
            }))
        }
        other => anyhow::bail!("--engine {other:?}: expected local or slurm"),
    }
}

fn server(a: ServerArgs) -> anyhow::Result<ExitCode> {
    let ServerArgs {
        listen,
        http_header_timeout,
        http_body_timeout,
        max_connections,
        max_connections_per_ip,
        data,
        fake_gpus,
        cgroup_mount,
        cgroup_group,
        cpus,
        memory,
        stop_grace,
        restart_backoff,
        fair_share_half_life,
        quota,
        no_sandbox,
        containers,
        container_runtime,
        container_mounts,
        sample_every,
        idle_gpu_notice,
        idle_gpu_release,
        fake_gpu_usage,
        tensorboard,
        tensorboard_idle,
        tensorboard_max,
        tensorboard_listen,
        tensorboard_url,
        task_uids,
        map_unix_users,
        engine,
        shared,
        slurm_partition,
        slurm_poll,
    } = a;
    let slurm = slurm_settings(&engine, shared, &slurm_partition, &slurm_poll)?;
    use kiln_engine::local::resources::{parse_fake_gpus, Overrides};
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(log_colours())
        .init();
    let overrides = Overrides {
        fake_gpus: fake_gpus
            .as_deref()
            .map(parse_fake_gpus)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--fake-gpus: {e}"))?,
        cpus,
        memory_mb: memory
            .as_deref()
            .map(|m| {
                kiln_spec::quantity::parse_memory_mib(m, kiln_spec::quantity::BareUnit::Mebibytes)
            })
            .transpose()
            .map_err(|e| anyhow::anyhow!("--memory: {e}"))?,
        cgroup_mount,
        cgroup_group,
    };
    let config = kiln_server::Config {
        data: client::data_dir(data)?,
        listen,
        http_header_timeout: request_timeout("--http-header-timeout", &http_header_timeout)?,
        http_body_timeout: request_timeout("--http-body-timeout", &http_body_timeout)?,
        max_connections: match max_connections {
            Some(0) => anyhow::bail!("--max-connections: must be at least 1"),
            n => n,
        },
        max_connections_per_ip: match max_connections_per_ip {
            0 => anyhow::bail!("--max-connections-per-ip: must be at least 1"),
            n => n,
        },
        overrides,
        exe: std::env::current_exe()?,
        stop_grace_secs: stop_grace,
        restart_backoff_ms: kiln_server::control::backoff::parse_first(&restart_backoff)
            .map_err(|e| anyhow::anyhow!("--restart-backoff: {e}"))?,
        fair_share_half_life_secs: kiln_spec::quantity::parse_duration_secs(&fair_share_half_life)
            .map_err(|e| anyhow::anyhow!("--fair-share-half-life: {e}"))?,
        quota_bytes: quota
            .as_deref()
            .map(|q| {
                kiln_spec::quantity::parse_memory_mib(q, kiln_spec::quantity::BareUnit::Mebibytes)
            })
            .transpose()
            .map_err(|e| anyhow::anyhow!("--quota: {e}"))?
            .map(|mib| mib.saturating_mul(1 << 20)),
        sandbox: !no_sandbox,
        containers: kiln_server::containers::Choice::parse(&containers)
            .map_err(|e| anyhow::anyhow!("--containers: {e}"))?,
        container_runtime,
        container_mounts: container_mounts
            .iter()
            .map(|m| container_mount(m))
            .collect::<anyhow::Result<_>>()?,
        sample_every_secs: sample_every,
        idle_gpu_notice_secs: duration_or_off("--idle-gpu-notice", &idle_gpu_notice)?,
        idle_gpu_release_secs: idle_gpu_release
            .as_deref()
            .map(|t| duration_or_off("--idle-gpu-release", t))
            .transpose()?
            .flatten(),
        fake_gpu_usage,
        tensorboard: match tensorboard {
            Some(p) if p.is_file() => Some(p),
            Some(p) => anyhow::bail!("--tensorboard: {} is not a program", p.display()),
            None => kiln_engine::local::sandbox::find_program("tensorboard"),
        },
        tensorboard_idle_secs: kiln_spec::quantity::parse_duration_secs(&tensorboard_idle)
            .map_err(|e| anyhow::anyhow!("--tensorboard-idle: {e}"))?,
        tensorboard_max,
        tensorboard_listen,
        task_uids,
        map_unix_users,
        slurm,
        tensorboard_url: match tensorboard_url {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Some(u),
            Some(u) => anyhow::bail!("--tensorboard-url: {u:?} is not an http:// or https:// URL"),
            None => None,
        },
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(kiln_server::serve(config, |addr| {
        // One line on stdout, for people and for scripts that started us
        // on port 0.
        println!("kiln listening on http://{addr}");
    }))?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Server(_) | Command::Supervise { .. } | Command::SlurmLaunch { .. }
    ) {
        // A client printing into `| head` should end quietly when the reader
        // goes away, as other command-line tools do, not panic on EPIPE.
        // SAFETY: restoring a default signal disposition at start-up, before
        // any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let json = |f: Format| f == Format::Json;
    let result = match cli.command {
        Command::Server(args) => server(*args),
        Command::Submit { file, output, wait } => job_cmds::submit(&file, json(output), wait),
        Command::Run(args) => run_cmd::run(args),
        Command::Ls {
            state,
            user,
            limit,
            output,
        } => job_cmds::list(state, user, limit, json(output)),
        Command::Show { job, output } => job_cmds::show(&job, json(output)),
        Command::Logs {
            job,
            task,
            tail,
            stream,
            follow,
        } => {
            let stream = match stream {
                Stream::Output => "output",
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            job_cmds::logs(&job, task, tail, stream, follow)
        }
        Command::Wait {
            job,
            timeout,
            output,
        } => job_cmds::wait(&job, timeout, json(output)),
        Command::Stop { job, output } => job_cmds::stop(&job, json(output)),
        Command::Rm { job } => job_cmds::remove(&job),
        Command::Clone { job, name, output } => job_cmds::clone(&job, name, json(output)),
        Command::Extend {
            job,
            duration,
            output,
        } => job_cmds::extend(&job, &duration, json(output)),
        Command::Events { job, output } => job_cmds::events(&job, json(output)),
        Command::Top { job, output } => job_cmds::top(&job, json(output)),
        Command::Tensorboard { job, stop, output } => {
            job_cmds::tensorboard(&job, stop, json(output))
        }
        Command::Nodes { output } => job_cmds::nodes(json(output)),
        Command::Files { command } => match command {
            FilesCommand::Ls { path, output } => {
                files_cmds::list(path.as_deref().unwrap_or(""), json(output))
            }
            FilesCommand::Put { local, remote } => files_cmds::put(&local, &remote),
            FilesCommand::Get { remote, local } => files_cmds::get(&remote, &local),
            FilesCommand::Mkdir { path } => files_cmds::mkdir(&path),
            FilesCommand::Rm { path, recursive } => files_cmds::remove(&path, recursive),
            FilesCommand::Mv { from, to } => files_cmds::rename(&from, &to),
            FilesCommand::Du { output } => files_cmds::usage(json(output)),
        },
        Command::Dataset { command } => match command {
            DatasetCommand::Add { name, space_folder } => {
                files_cmds::dataset_add(&name, &space_folder)
            }
            DatasetCommand::Ls { output } => files_cmds::dataset_list(json(output)),
            DatasetCommand::Rm { name } => files_cmds::dataset_remove(&name),
        },
        Command::Registry { command } => match command {
            RegistryCommand::Login {
                registry,
                username,
                password_stdin,
            } => registry_cmds::login(&registry, &username, password_stdin),
            RegistryCommand::Ls { output } => registry_cmds::list(json(output)),
            RegistryCommand::Logout { registry } => registry_cmds::logout(&registry),
        },
        Command::User { command } => match command {
            UserCommand::Add {
                name,
                password_stdin,
                admin,
                unix_user,
                queues,
                output,
            } => user_cmds::add(
                &name,
                password_stdin,
                admin,
                unix_user,
                queues,
                json(output),
            ),
            UserCommand::Ls { output } => user_cmds::list(json(output)),
            UserCommand::Token { name, output } => user_cmds::token(name, json(output)),
            UserCommand::Passwd { name } => user_cmds::passwd(name),
            UserCommand::Revoke { name, output } => user_cmds::revoke(name, json(output)),
        },
        Command::Queue { command } => queue_cmds::run(command),
        Command::Supervise { dir, standby } => match dir {
            Some(dir) if !standby => {
                kiln_engine::local::supervise(&kiln_engine::local::TaskDir::new(dir))
            }
            _ => kiln_engine::local::standby(),
        }
        .map(|()| ExitCode::SUCCESS)
        .map_err(anyhow::Error::from),
        Command::SlurmLaunch { dir, idle_secs } => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            std::env::current_exe()
                .map_err(anyhow::Error::from)
                .and_then(|exe| {
                    kiln_engine::slurm::launcher::run(
                        &dir,
                        &exe,
                        std::time::Duration::from_secs(idle_secs),
                    )
                    .map_err(anyhow::Error::from)
                })
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Validate { file } => spec_cmds::validate(&file),
        Command::Render { file, output, user } => match output {
            Output::Text => spec_cmds::render(&file, false, user.as_deref()),
            Output::Json => spec_cmds::render(&file, true, user.as_deref()),
            Output::Yaml => spec_cmds::export(&file, spec_cmds::Export::KilnYaml),
            Output::OpenpaiV1 => spec_cmds::export(&file, spec_cmds::Export::OpenpaiV1),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::from(2)
        }
    }
}
