//! kiln's server: the control loop that runs jobs on the local engine, and
//! the HTTP API over it. `kiln server` is a thin wrapper around [`serve`].

pub mod admission;
pub mod api;
pub mod auth;
pub mod containers;
pub mod control;
pub mod error;
pub mod http_serve;
pub mod identity;
pub mod layout;
pub mod metrics;
pub mod spaces;
pub mod tensorboard;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_engine::local::resources::{discover, Overrides};
use kiln_store::{SqliteStore, Store};
use tracing::info;

pub use error::ServerError;

/// Wall-clock milliseconds since the epoch: the time stamps of records,
/// events and samples.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
use layout::Layout;

pub struct Config {
    pub data: PathBuf,
    pub listen: String,
    /// A client must send a whole request head within this long (from the
    /// connection's start, or the end of its previous answer).
    pub http_header_timeout: std::time::Duration,
    /// A request body may send nothing for at most this long.
    pub http_body_timeout: std::time::Duration,
    /// Most connections open at once, both listeners together; None: from
    /// the open-files limit (raised to the hard limit at start).
    pub max_connections: Option<usize>,
    /// Most connections open at once from one client address.
    pub max_connections_per_ip: usize,
    pub overrides: Overrides,
    /// The kiln binary, re-executed to supervise each task.
    pub exe: PathBuf,
    pub stop_grace_secs: u64,
    /// Most bytes one user's space may hold; None = no limit.
    pub quota_bytes: Option<u64>,
    /// Run tasks under bubblewrap when it is installed (the default).
    pub sandbox: bool,
    /// Which container engine runs tasks that name an image.
    pub containers: containers::Choice,
    /// The OCI runtime podman runs them with; None: kiln's choice.
    pub container_runtime: Option<String>,
    /// Host folders every container gets read-only: (host, inside).
    pub container_mounts: Vec<(PathBuf, PathBuf)>,
    /// Seconds between samples of running tasks' CPU and memory.
    pub sample_every_secs: u64,
    /// After this long at 0% on all its GPUs, a job is told; None: never.
    pub idle_gpu_notice_secs: Option<u64>,
    /// After this long at 0% on all its GPUs, a job is stopped; None: never.
    pub idle_gpu_release_secs: Option<u64>,
    /// With fake GPUs: GPU readings from this JSON file (tests, demos).
    pub fake_gpu_usage: Option<PathBuf>,
    /// The `tensorboard` program; None when it is not installed.
    pub tensorboard: Option<PathBuf>,
    /// A TensorBoard nobody has used this long is stopped.
    pub tensorboard_idle_secs: u64,
    /// At most this many TensorBoards run at once.
    pub tensorboard_max: usize,
    /// Where the boards' own listener binds; None: the API's address with
    /// a port picked at start.
    pub tensorboard_listen: Option<String>,
    /// The boards' public base URL, when they are reached through a proxy.
    pub tensorboard_url: Option<String>,
    /// The uids kiln gives its users' tasks (when it runs as root).
    pub task_uids: identity::UidRange,
    /// A kiln user with the name of a Unix account runs as that account.
    pub map_unix_users: bool,
    /// How long a task restarted in place first waits; the wait doubles up
    /// to 30 times this and starts over after a run of 60 times this
    /// (default 10 s: 5 min and 10 min, as DESIGN.md says).
    pub restart_backoff_ms: u64,
    /// Fair share forgets usage with this half-life.
    pub fair_share_half_life_secs: u64,
    /// `--engine slurm`: Slurm runs the tasks; None: this machine does.
    pub slurm: Option<SlurmSettings>,
}

/// What `--engine slurm` needs (docs/engines.md section 3).
#[derive(Debug, Clone)]
pub struct SlurmSettings {
    /// The same path on this machine and on every node.
    pub shared: PathBuf,
    /// kiln queue → Slurm partition.
    pub partitions: std::collections::HashMap<String, String>,
    /// Between polls of squeue and sinfo.
    pub poll: std::time::Duration,
}

/// Reads this installation's id, making one on first start.
fn instance_id(layout: &Layout) -> Result<String, ServerError> {
    let path = layout.instance();
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        _ => {
            let mut b = [0u8; 4];
            getrandom::fill(&mut b).map_err(|e| ServerError::Random(e.to_string()))?;
            let id = hex::encode(b);
            std::fs::write(&path, &id).map_err(|e| ServerError::io("write", &path, e))?;
            Ok(id)
        }
    }
}

/// Opens the data folder, recovers the jobs, binds the listener and serves
/// until SIGINT/SIGTERM. Calls `ready` with the bound address once it
/// accepts connections. Running tasks are left to their supervisors.
pub async fn serve(config: Config, ready: impl FnOnce(SocketAddr)) -> Result<(), ServerError> {
    std::fs::create_dir_all(&config.data)
        .map_err(|e| ServerError::io("create", &config.data, e))?;
    // Task folders, logs and KILN_OUTPUT_DIR are handed to processes in
    // other working folders, and read back after restarts started elsewhere:
    // they must be absolute.
    let root = std::fs::canonicalize(&config.data)
        .map_err(|e| ServerError::io("resolve", &config.data, e))?;
    // With `--engine slurm`, spaces, datasets and jobs live on the shared
    // path every node sees; the store stays here, on local disk.
    let layout = match &config.slurm {
        None => Layout::new(&root),
        Some(slurm) => {
            std::fs::create_dir_all(slurm.shared.join("jobs"))
                .map_err(|e| ServerError::io("create", &slurm.shared, e))?;
            let shared = std::fs::canonicalize(&slurm.shared)
                .map_err(|e| ServerError::io("resolve", &slurm.shared, e))?;
            Layout::new(&root).with_shared(shared)
        }
    };
    // codeDir copies of submissions that never reached the store.
    let _ = std::fs::remove_dir_all(layout.staging());
    let db = layout.db();
    let store: Arc<dyn Store> = Arc::new(
        tokio::task::spawn_blocking(move || SqliteStore::open(&db))
            .await
            .map_err(|e| ServerError::Random(e.to_string()))??,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    auth::bootstrap_admin(store.as_ref(), &layout.admin_token(), now)?;
    let root_server = kiln_engine::local::sandbox::running_as_root();
    if root_server {
        layout.restrict();
    }
    let identities = Arc::new(identity::Identities::new(
        Arc::clone(&store),
        root_server.then_some(config.task_uids),
        config.map_unix_users,
        layout.spaces(),
    ));
    let mut discovered = {
        let over = config.overrides.clone();
        tokio::task::spawn_blocking(move || discover(&over))
            .await
            .map_err(|e| ServerError::Random(e.to_string()))?
    };
    info!(
        cpus = discovered.node.cpus,
        memory_mb = discovered.node.memory_mb,
        gpus = discovered.node.gpus.len(),
        "resources discovered"
    );
    let bwrap = config
        .sandbox
        .then(kiln_engine::local::sandbox::find_bwrap)
        .flatten();
    match (&bwrap, config.sandbox) {
        (Some(b), _) => {
            info!(bwrap = %b.display(), "tasks run in a sandbox with the user's space at /mnt")
        }
        (None, true) => info!(
            "bubblewrap (bwrap) not found: tasks run unsandboxed and jobs with mounts are refused"
        ),
        (None, false) => {
            info!("sandbox off: tasks run unsandboxed and jobs with mounts are refused")
        }
    }
    if root_server && bwrap.is_some() && kiln_engine::local::sandbox::find_setpriv().is_none() {
        return Err(ServerError::Config(
            "kiln runs as root, and sandboxed tasks become their user's uid with setpriv, \
             which is not installed: install util-linux (apt-get install util-linux)"
                .into(),
        ));
    }
    if let (true, None, Some(closed)) = (root_server, &bwrap, layout::closed_ancestor(&root)) {
        // Unsandboxed tasks run as their users' uids in folders of the data
        // folder, by absolute path (TMPDIR, their output).
        let note = format!(
            "tasks run unsandboxed as their users' uids, which cannot pass {} (mode 0700) on the \
             way to the data folder {}: their TMPDIR and paths there fail. Install bubblewrap, \
             or give kiln a data folder others can pass through (--data /var/lib/kiln)",
            closed.display(),
            root.display()
        );
        tracing::warn!("{note}");
        discovered.notes.push(note);
    }
    let (containers, containers_note) = pick_containers(&config, bwrap.is_some()).await?;
    let prom = Arc::new(metrics::prom::Prom::new());
    let gpu_source = gpu_usage_source(&config, discovered.gpu_source);
    let local = kiln_engine::local::LocalConfig {
        exe: config.exe.clone(),
        data: layout.root().to_owned(),
        shared: layout.shared().map(Path::to_owned),
        jobs: layout.jobs(),
        discovered,
        instance: instance_id(&layout)?,
        stop_grace_secs: config.stop_grace_secs,
        host_ip: "127.0.0.1".into(),
        host_root: if bwrap.is_some() {
            kiln_engine::local::sandbox::host_root()
        } else {
            Vec::new()
        },
        bwrap: bwrap.clone(),
        containers: containers.clone(),
        containers_note,
        container_mounts: config.container_mounts.clone(),
        setpriv: kiln_engine::local::sandbox::find_setpriv(),
    };
    let cfg = control::ControlConfig {
        layout: layout.clone(),
        schedule_seconds: Some(prom.schedule.clone()),
        identities: Arc::clone(&identities),
        restart_backoff: control::backoff::Backoff::from_first(config.restart_backoff_ms),
        fair_share_half_life_secs: config.fair_share_half_life_secs,
        test_pass_delay: test_pass_delay(),
    };
    let engine = choose_engine(&config, &layout, local).await?;
    let control = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || control::start(store, cfg, engine))
            .await
            .map_err(|e| ServerError::Random(e.to_string()))??
    };
    let spaces = Arc::new(
        spaces::Spaces::new(layout.spaces(), config.quota_bytes)
            .with_identities(Arc::clone(&identities)),
    );
    let layout_datasets = layout.datasets();
    let mut hub = metrics::Hub::new(Arc::clone(&store), layout.clone(), bwrap.is_some())
        .with_identities(Arc::clone(&identities));
    if let Some(source) = gpu_source {
        hub = hub.with_gpus(metrics::GpuWatch {
            source,
            policy: kiln_metrics::idle::IdlePolicy {
                notice_after_ms: config.idle_gpu_notice_secs.map(|s| s * 1000),
                release_after_ms: config.idle_gpu_release_secs.map(|s| s * 1000),
                // Three missed rounds break a stretch of idle samples.
                max_gap_ms: Some(config.sample_every_secs.max(1) * 3000),
            },
            control: control.clone(),
        });
    }
    let hub = Arc::new(hub);
    tokio::spawn(sample_forever(
        Arc::clone(&hub),
        std::time::Duration::from_secs(config.sample_every_secs.max(1)),
    ));
    let boards = Arc::new(tensorboard::Boards::new(
        config.tensorboard.clone(),
        bwrap.clone().map(|b| (b, root.clone())),
        std::time::Duration::from_secs(config.tensorboard_idle_secs.max(1)),
        config.tensorboard_max,
    ));
    tokio::spawn(Arc::clone(&boards).reap_forever());
    let conns = http_limits(&config);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    // Boards get their own origin; see api/tensorboard.rs.
    let board_listen = config
        .tensorboard_listen
        .clone()
        .unwrap_or_else(|| SocketAddr::new(addr.ip(), 0).to_string());
    let board_listener = tokio::net::TcpListener::bind(&board_listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: board_listen.clone(),
            source,
        })?;
    let board_addr = board_listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: board_listen.clone(),
            source,
        })?;
    let state = api::AppState {
        identities,
        store,
        control: control.clone(),
        layout,
        dav: Arc::new(api::dav::Dav::new(Arc::clone(&spaces))),
        hub,
        prom,
        boards,
        passes: Arc::new(tensorboard::Passes::default()),
        spaces,
        datasets: Arc::new(spaces::Datasets::new(layout_datasets)),
        engine: admission::Engine {
            sandboxed: bwrap.is_some(),
            containers: containers.is_some(),
            // The local engine has the one machine it runs on.
            capacity_can_grow: false,
        },
        boards_at: api::BoardsAt {
            port: board_addr.port(),
            public: config.tensorboard_url.clone(),
        },
    };
    let app = api::router(state.clone());
    let board_app = api::board_router(state);
    info!(%addr, %board_addr, data = %root.display(), "kiln server listening; TensorBoards on their own port");
    ready(addr);
    let boards_served = tokio::spawn(http_serve::serve(
        board_listener,
        board_app,
        Arc::clone(&conns),
        std::future::pending(),
    ));
    http_serve::serve(listener, app, conns, shutdown_signal()).await;
    boards_served.abort();
    control.shutdown();
    info!("kiln server stopped; running tasks continue under their supervisors");
    Ok(())
}

type MakeEngine =
    Box<dyn FnOnce(kiln_engine::engine::EventSink) -> Box<dyn kiln_engine::Engine> + Send>;

/// The container engine for tasks that name an image, or why none (for
/// `kiln nodes`). Containers show tasks the sandbox's view of the space,
/// so they need bubblewrap's place in the launch too.
async fn pick_containers(
    config: &Config,
    sandbox: bool,
) -> Result<
    (
        Option<kiln_engine::local::container::ContainerEngine>,
        Option<String>,
    ),
    ServerError,
> {
    let choice = config.containers;
    if !sandbox {
        return match choice {
            containers::Choice::Engine(rt) => Err(ServerError::Config(format!(
                "--containers {} gives tasks the same view of the space as the sandbox, \
                 which needs bubblewrap: install it (apt-get install bubblewrap) and drop \
                 --no-sandbox",
                rt.program()
            ))),
            _ => Ok((
                None,
                Some("off: containers need the sandbox (bubblewrap)".into()),
            )),
        };
    }
    let runtime = config.container_runtime.clone();
    let found = tokio::task::spawn_blocking(move || containers::choose(choice, runtime.as_deref()))
        .await
        .map_err(|e| ServerError::Config(format!("looking for a container engine: {e}")))?
        .map_err(ServerError::Config)?;
    Ok(match found {
        Ok(engine) => {
            info!(engine = %engine.describe(), program = %engine.program.display(), "tasks with an image run in a container");
            (Some(engine), None)
        }
        Err(why) => {
            info!(why = %why, "tasks with an image run on the host's software");
            (None, Some(why))
        }
    })
}

/// The engine `--engine` names. Only here (and in main.rs) is an engine
/// named; the loop sees the trait.
async fn choose_engine(
    config: &Config,
    layout: &Layout,
    local: kiln_engine::local::LocalConfig,
) -> Result<MakeEngine, ServerError> {
    let (Some(slurm), Some(shared)) = (config.slurm.clone(), layout.shared()) else {
        return Ok(Box::new(move |events| {
            Box::new(kiln_engine::local::LocalEngine::new(local, events))
        }));
    };
    use kiln_engine::slurm::{Cli, SlurmApi, SlurmConfig, SlurmEngine};
    let shared = shared.to_owned();
    let conf = std::env::var_os("SLURM_CONF").map(PathBuf::from);
    let api: Arc<dyn SlurmApi> = Arc::new(Cli::new(
        conf.as_deref(),
        kiln_engine::slurm::cli::DEFAULT_TIMEOUT,
    ));
    let nodes = {
        let api = Arc::clone(&api);
        tokio::task::spawn_blocking(move || api.nodes())
            .await
            .map_err(|e| ServerError::Random(e.to_string()))?
            .map_err(|e| ServerError::Config(format!("--engine slurm: {e}")))?
    };
    info!(nodes = nodes.len(), shared = %shared.display(), "tasks run on Slurm");
    let mut local = local;
    // Slurm's task plugin limits CPUs, memory and devices; kiln's cgroups
    // are off, and task folders live on the shared path.
    local.discovered.cgroups.version = None;
    // Images run on the nodes with the engine the admin names (they have
    // it, at the same path); what this machine has says nothing of them.
    if !matches!(config.containers, containers::Choice::Engine(_)) && local.containers.is_some() {
        info!(
            "on Slurm, jobs' images run only with --containers podman|docker (the nodes' engine)"
        );
        local.containers = None;
    }
    // The nodes run this server's own binary from the shared path.
    let exe = {
        let (exe, shared) = (config.exe.clone(), shared.clone());
        tokio::task::spawn_blocking(move || kiln_engine::slurm::binary::place(&exe, &shared))
            .await
            .map_err(|e| ServerError::Random(e.to_string()))?
            .map_err(|e| ServerError::Config(format!("--engine slurm: {e}")))?
    };
    info!(exe = %exe.display(), "nodes run kiln from the shared path");
    local.exe = exe.clone();
    let cfg = SlurmConfig {
        exe,
        instance: local.instance.clone(),
        shared,
        partitions: slurm.partitions,
        poll: slurm.poll,
        launch_idle: std::time::Duration::from_secs(600),
        ports: (20_000, 29_999),
        local,
    };
    Ok(Box::new(move |events| {
        Box::new(SlurmEngine::new(cfg, api, nodes, events))
    }))
}

/// The listeners' limits, with the open-files limit raised for them.
/// Test-only: env `KILN_TEST_PASS_DELAY_MS` makes the scheduler thread
/// sleep that long before each pass (tests/scheduler_thread.rs shows the
/// loop answering a stop meanwhile). An environment variable rather than
/// a flag, so `kiln server --help` never offers it; unset in production.
fn test_pass_delay() -> Option<std::time::Duration> {
    let ms = std::env::var("KILN_TEST_PASS_DELAY_MS").ok()?;
    match ms.trim().parse::<u64>() {
        Ok(ms) => {
            tracing::warn!(
                ms,
                "KILN_TEST_PASS_DELAY_MS is set: every scheduling pass is delayed (for tests only)"
            );
            Some(std::time::Duration::from_millis(ms))
        }
        Err(e) => {
            tracing::warn!(value = %ms, error = %e, "KILN_TEST_PASS_DELAY_MS is not a number of milliseconds; ignored");
            None
        }
    }
}

fn http_limits(config: &Config) -> Arc<http_serve::Connections> {
    let open_files = http_serve::raise_open_files(config.max_connections);
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| http_serve::default_max_connections(open_files));
    if let Some(soft) = open_files.filter(|&s| max_connections as u64 >= s) {
        tracing::warn!(
            max_connections,
            open_files = soft,
            "--max-connections is not below the open-files limit: a flood of connections can \
             still use up the server's descriptors"
        );
    }
    info!(
        max_connections,
        max_connections_per_ip = config.max_connections_per_ip,
        header_timeout_s = config.http_header_timeout.as_secs(),
        body_timeout_s = config.http_body_timeout.as_secs(),
        open_files,
        "HTTP limits"
    );
    http_serve::Connections::new(http_serve::Limits {
        header_timeout: config.http_header_timeout,
        body_timeout: config.http_body_timeout,
        max_connections,
        max_connections_per_ip: config.max_connections_per_ip,
    })
}

/// Where GPU use is read from: NVML for real GPUs; for fake GPUs nothing
/// (they are not used by anything), unless a test gives readings in a file.
fn gpu_usage_source(
    config: &Config,
    found: kiln_engine::local::resources::GpuSource,
) -> Option<Box<dyn kiln_engine::local::gpu_usage::GpuUsage>> {
    use kiln_engine::local::gpu_usage::{FromFile, Nvml};
    use kiln_engine::local::resources::GpuSource;
    match found {
        GpuSource::Fake => config
            .fake_gpu_usage
            .clone()
            .map(|p| Box::new(FromFile(p)) as Box<_>),
        GpuSource::Nvml => match Nvml::open() {
            Some(n) => Some(Box::new(n)),
            None => {
                tracing::warn!("NVML found the GPUs but cannot be opened again: no GPU use series");
                None
            }
        },
        GpuSource::NvidiaSmi | GpuSource::None => None,
    }
}

/// Samples running tasks on a fixed beat, off the async threads; a slow
/// round delays the next rather than piling up.
async fn sample_forever(hub: Arc<metrics::Hub>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let h = Arc::clone(&hub);
        let _ = tokio::task::spawn_blocking(move || h.sample()).await;
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
