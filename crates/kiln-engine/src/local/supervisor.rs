//! The supervisor: one small process per task. It starts the task's command
//! in a process group of its own, copies its output to the log files, turns a
//! stop request (SIGTERM to the supervisor) into SIGTERM then SIGKILL for the
//! whole group, and records how the task ended. It runs in a session of its
//! own, so neither a server crash nor a Ctrl-C in the server's terminal
//! reaches it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::unistd::{setsid, Pid};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::cgroup::TaskGroup;
use super::files::{now_ms, write_atomic, Exit, Started, TaskDir};
use crate::error::EngineError;

/// Starts `exe __supervise DIR` (exe is the kiln binary) for a task whose
/// `launch.json` is written. The caller reaps the returned child while it
/// lives; after a server restart the supervisor is found again through
/// `started.json` and [`supervisor_alive`].
pub fn spawn_supervisor(exe: &Path, dir: &TaskDir) -> Result<Child, EngineError> {
    let log = File::create(dir.supervisor_log())
        .map_err(EngineError::io("create", dir.supervisor_log()))?;
    let err = log
        .try_clone()
        .map_err(EngineError::io("open", dir.supervisor_log()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("__supervise")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    // A stop request may come before the supervisor has its handlers in
    // place; blocked, it waits as pending instead of killing the supervisor
    // (and leaving no exit record). The supervisor unblocks it once ready.
    // SAFETY: sigprocmask is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| stop_signals().thread_block().map_err(std::io::Error::from));
    }
    cmd.spawn().map_err(|source| EngineError::Spawn {
        dir: dir.path().to_owned(),
        source,
    })
}

/// Whether the supervisor of a task still runs. Checks the process's command
/// line too, so a recycled pid is not taken for it.
pub fn supervisor_alive(dir: &TaskDir, started: &Started) -> bool {
    pid_supervises(dir, started.supervisor_pid)
}

/// Whether `pid` is a live supervisor of `dir`: started for it (the folder
/// on its command line), or a standby that took it (`__supervise` on its
/// command line, working in the folder; see `standby`).
pub fn pid_supervises(dir: &TaskDir, pid: i32) -> bool {
    if pid <= 0 || kill(Pid::from_raw(pid), None).is_err() || !same_uid_as_us(pid) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let want = dir.path().as_os_str().as_encoded_bytes();
    if cmdline.split(|b| *b == 0).any(|arg| arg == want) {
        return true;
    }
    cmdline.split(|b| *b == 0).any(|arg| arg == b"__supervise")
        && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir.path())
}

/// Whether `pid` runs as this process's uid, as supervisors do. A server
/// running as root runs every task as another uid, so no task can pass for
/// a supervisor, whatever its command line and working folder.
fn same_uid_as_us(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let real_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u32>().ok());
    real_uid == Some(nix::unistd::geteuid().as_raw())
}

/// The GPUs the engine bound to this step (Slurm sets `CUDA_VISIBLE_DEVICES`
/// in every step with GPUs; none set means none bound).
fn gpus_from_step(env: &mut Vec<(String, String)>) {
    let bound = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default();
    env.retain(|(k, _)| k != "CUDA_VISIBLE_DEVICES" && k != "NVIDIA_VISIBLE_DEVICES");
    env.push(("CUDA_VISIBLE_DEVICES".into(), bound.clone()));
    env.push(("NVIDIA_VISIBLE_DEVICES".into(), bound));
}

/// The signals that mean "stop" (or are ignored) to a supervisor.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set
}

/// How long output copiers may run on after the task's main process ended.
/// Only a process that left both the task's process group and its cgroup
/// (or a machine without cgroups) can hold the pipes open that long.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The supervisor's whole life. Returns once `exit.json` is written; once the
/// task is started, every later failure is logged and the task still gets
/// waited for and its end recorded, so no task is ever left unwatched.
pub fn supervise(dir: &TaskDir) -> Result<(), EngineError> {
    let signals = take_signals()?;
    claim(dir)?;
    supervise_with(dir, signals)
}

/// Running a task twice is worse than not running it: the first
/// supervisor claims the folder, and every start gets a fresh one.
pub(super) fn claim(dir: &TaskDir) -> Result<(), EngineError> {
    if !dir.try_claim(std::process::id() as i32)? {
        return Err(EngineError::AlreadyRan(dir.path().to_owned()));
    }
    Ok(())
}

/// Becomes a supervisor's own session and catches its stop requests; the
/// first thing a supervisor does, before it knows its folder.
pub(super) fn take_signals() -> Result<Signals, EngineError> {
    // A session of our own: no terminal signals, no dying with the server.
    // Fails only when already a group leader, which is fine.
    let _ = setsid();
    // Catch stop requests before anything else: one that arrives while the
    // task is being set up is queued here and acted on, never lost.
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(EngineError::Signals)?;
    stop_signals()
        .thread_unblock()
        .map_err(|e| EngineError::Signals(e.into()))?;
    Ok(signals)
}

/// A supervisor's life once its signals are caught (`signals` from
/// [`take_signals`]) and its folder claimed ([`claim`]).
pub(super) fn supervise_with(dir: &TaskDir, mut signals: Signals) -> Result<(), EngineError> {
    let mut spec = dir.read_launch()?;
    if spec.gpus_from_step {
        gpus_from_step(&mut spec.env);
        if let Some(ct) = spec.container.as_mut() {
            super::container_run::gpus_of_step(ct, &mut spec.env);
        }
    }

    // Logs are the user's own: no other uid on the machine may read them.
    let open = |path: std::path::PathBuf| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(EngineError::io("open", path))
    };
    let stdout_log = open(dir.stdout())?;
    let stderr_log = open(dir.stderr())?;
    let output_log = Arc::new(Mutex::new(open(dir.output())?));

    // Limits that cannot be set up do not stop the task; they are reported.
    let (cgroup, limits_note) = match spec.limits.as_ref().map(TaskGroup::create) {
        None => (None, None),
        Some(Ok(g)) => (Some(g), None),
        Some(Err(e)) => (None, Some(format!("limits not enforced: {e}"))),
    };
    // A container's client stays out of the group: the container is made
    // inside it (see `container`).
    let join = match cgroup.as_ref().map(TaskGroup::join_files) {
        Some(Ok(files)) if spec.container.is_none() => files,
        _ => Vec::new(),
    };
    let ended_early = |launch_error: Option<String>, refused: bool, cgroup: Option<TaskGroup>| {
        if let Some(g) = cgroup {
            g.remove();
        }
        let exit = Exit {
            exit_code: None,
            signal: None,
            stop_requested: launch_error.is_none(),
            launch_error,
            refused,
            oom_killed: false,
            pids_limited: false,
            finished_at_ms: now_ms(),
        };
        write_atomic(&dir.exit(), &exit)
    };
    if signals.pending().any(|sig| sig == SIGTERM || sig == SIGINT) {
        return ended_early(None, false, cgroup);
    }
    // Mount sources are resolved now, at the moment of use, beneath the
    // folder each belongs to; as root, pinned by descriptor.
    // Never a task as root by mistake: a sandboxed task with a uid to run
    // as must have the means to become it.
    if spec.run_as.is_some()
        && spec
            .sandbox
            .as_ref()
            .is_some_and(|sb| sb.switch_user.is_none())
        && super::sandbox::running_as_root()
    {
        return ended_early(
            Some("refusing to run the task as root: it has a uid but no way to become it".into()),
            false,
            cgroup,
        );
    }
    let resolved = match (spec.sandbox.as_mut(), spec.container.as_mut()) {
        (Some(sb), _) => pin_binds(sb, dir),
        // As root, pinned in a mount namespace of the supervisor's own,
        // which the engine's client and the runtime inherit.
        (None, Some(ct)) => pin_container_binds(ct, dir),
        (None, None) => Ok(()),
    };
    if let Err(e) = resolved {
        let refused = matches!(e, EngineError::Escapes(_));
        return ended_early(
            Some(format!("cannot prepare the task's mounts: {e}")),
            refused,
            cgroup,
        );
    }

    if let Some(ct) = spec.container.as_mut() {
        let mut stop_came = || signals.pending().any(|sig| sig == SIGTERM || sig == SIGINT);
        match super::image_pull::ensure_image(ct, dir, &mut stop_came) {
            Ok(super::image_pull::Pulled::Ready) => {}
            Ok(super::image_pull::Pulled::Stopped) => return ended_early(None, false, cgroup),
            // The image is the user's choice: a missing one fails the task
            // at once, never retried for free.
            Err(why) => return ended_early(Some(why), true, cgroup),
        }
    }

    // bwrap and setpriv run as root: what the loader acts on is set by
    // `env`, after the uid changed.
    let later = match spec.sandbox {
        Some(_) => {
            let (now, later) = super::loader_env::split(std::mem::take(&mut spec.env));
            spec.env = now;
            later
        }
        None => Vec::new(),
    };
    let mut cmd = match (&spec.container, &spec.sandbox) {
        (Some(ct), _) => match super::container_run::command(ct, &spec.env, dir) {
            Ok(c) => c,
            Err(why) => return ended_early(Some(why), true, cgroup),
        },
        (None, Some(sb)) => {
            let mut c = Command::new(&sb.bwrap);
            // bash by its full path: the task's PATH may start with folders
            // its uid cannot enter, each a failed exec on every start.
            let bash = super::sandbox::find_program("bash")
                .map_or_else(|| "bash".into(), |p| p.into_os_string());
            c.args(sb.args());
            if !later.is_empty() {
                let env = super::sandbox::find_program("env")
                    .map_or_else(|| "env".into(), |p| p.into_os_string());
                c.arg(env).args(super::loader_env::env_args(&later));
            }
            c.arg(bash).arg("-c");
            c
        }
        (None, None) => {
            let mut c = Command::new("bash");
            c.arg("-c");
            c
        }
    };
    cmd.arg(&spec.command);
    // A container's client has the server's engine settings only; the
    // task's environment goes in through a file (`container_run::command`).
    if spec.container.is_none() {
        cmd.env_clear().envs(spec.env.iter().map(|(k, v)| (k, v)));
    }
    cmd.current_dir(&spec.working_dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let joins_cgroup = !join.is_empty();
    // Bare tasks drop to their uid here. In the sandbox bwrap needs root to
    // build the view and setpriv drops to the uid inside it; a container's
    // client talks to its engine, which sets the uid inside the container.
    let run_as = spec
        .run_as
        .filter(|_| spec.container.is_none() && spec.sandbox.is_none());
    if joins_cgroup || run_as.is_some() {
        // SAFETY: between fork and exec only write(2), setgroups, setgid,
        // setuid and prctl run here, on files opened before the fork;
        // nothing allocates or takes a lock.
        unsafe {
            cmd.pre_exec(move || {
                // Join the groups first: as root, before giving it up.
                for mut f in &join {
                    f.write_all(b"0")?;
                }
                if let Some(id) = run_as {
                    drop_privileges(id)?;
                }
                Ok(())
            });
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let what = match (&spec.container, &spec.sandbox, joins_cgroup) {
                (Some(_), _, _) => "cannot start the task's container (docker or podman)",
                (None, Some(_), _) => "cannot start the task's sandbox (bwrap)",
                (None, None, true) => "cannot start the task (bash, or joining its cgroup)",
                (None, None, false) => "cannot start bash",
            };
            let who = run_as
                .map(|id| format!(" as uid {}", id.uid))
                .unwrap_or_default();
            let msg = format!("{what}{who} in {}: {e}", spec.working_dir.display());
            return ended_early(Some(msg), false, cgroup);
        }
    };
    let pid = child.id() as i32;
    let group = Pid::from_raw(pid);

    // From here on the task runs: failures are logged, never returned early.
    let stop_requested = Arc::new(AtomicBool::new(false));
    let task_done = Arc::new(AtomicBool::new(false));
    watch_signals(
        signals,
        group,
        // bwrap dies of SIGTERM at once and takes the task with it
        // (--die-with-parent); the grace period is for the task, so bwrap
        // is spared the first signal.
        spec.sandbox.is_some(),
        spec.stop_grace_secs,
        Arc::clone(&stop_requested),
        Arc::clone(&task_done),
    );
    let mut launch_error = None;
    let started = Started {
        supervisor_pid: std::process::id() as i32,
        pid,
        started_at_ms: now_ms(),
        limits_note,
        container_sid: None,
    };
    let recorded = write_atomic(&dir.started(), &started);
    let oom_seen = Arc::new(AtomicBool::new(false));
    if let (Ok(()), Some(ct)) = (&recorded, &spec.container) {
        super::container_run::record_session(
            ct,
            dir,
            started,
            Arc::clone(&task_done),
            Arc::clone(&oom_seen),
        );
    }
    if let Err(e) = recorded {
        // Without started.json nobody could find this task again: end it.
        eprintln!("kiln supervisor: {e}; stopping the task");
        launch_error = Some(format!("cannot record the task's start: {e}"));
        let _ = killpg(group, Signal::SIGKILL);
    }

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let copiers = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .zip([stdout_log, stderr_log])
    .filter_map(|(pipe, log)| pipe.map(|p| (p, log)))
    .map(|(pipe, log)| {
        let merged = Arc::clone(&output_log);
        let done = done_tx.clone();
        thread::spawn(move || {
            copy(pipe, log, &merged);
            let _ = done.send(());
        })
    })
    .count();
    drop(done_tx);

    let status = loop {
        match child.wait() {
            Ok(s) => break Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("kiln supervisor: cannot wait for the task: {e}");
                break None;
            }
        }
    };
    task_done.store(true, Ordering::SeqCst);
    let stopped = stop_requested.load(Ordering::SeqCst)
        || spec.stop_file.as_ref().is_some_and(|f| f.exists());
    // The task is its main process: whatever it left behind ends with it,
    // including what escaped the process group but not the cgroup.
    let _ = killpg(group, Signal::SIGKILL);
    if let Some(g) = &cgroup {
        g.kill_all();
    }
    // The container lives under the engine, not in our process group: a
    // client killed at the end of the grace period leaves it behind.
    let engine_oom = spec
        .container
        .as_ref()
        .is_some_and(super::container_run::finish);
    let deadline = std::time::Instant::now() + DRAIN_AFTER_EXIT;
    for _ in 0..copiers {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            eprintln!(
                "kiln supervisor: a process outside the task's group still holds its output; \
                 the rest of its output is not captured"
            );
            break;
        }
    }
    // No fsync of the logs: like the exit file (files.rs) and the store,
    // they survive any process dying, and only a power cut could lose their
    // last lines; three fsyncs per task cost more than that protects.

    // cgroup v1 counts an OOM kill only in the killed process's own group:
    // a container's, gone with it. A task ended by SIGKILL, not by a stop,
    // in a group that hit its memory limit is the sign there.
    let killed = status.is_some_and(|s| s.code() == Some(137) || s.signal() == Some(9));
    let oom_killed = engine_oom
        || oom_seen.load(Ordering::SeqCst)
        || cgroup.as_ref().is_some_and(TaskGroup::oom_killed)
        || (spec.container.is_some()
            && killed
            && !stopped
            && cgroup.as_ref().is_some_and(TaskGroup::v1_limit_hit));
    let pids_limited = cgroup.as_ref().is_some_and(TaskGroup::pids_limited);
    if let Some(g) = cgroup {
        g.remove();
    }
    if let Some(ct) = &spec.container {
        super::container_run::remove_parents(ct);
    }
    if status.is_none() && launch_error.is_none() {
        launch_error = Some("the supervisor lost track of the task".into());
    }
    let exit = Exit {
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        stop_requested: stopped,
        launch_error,
        refused: false,
        oom_killed,
        pids_limited,
        finished_at_ms: now_ms(),
    };
    write_atomic(&dir.exit(), &exit)
}

/// Resolves the sandbox's mount sources beneath their folders. As root the
/// supervisor takes a mount namespace of its own and pins each source by
/// descriptor onto a mount point in the task's folder (see `binds`).
fn pin_binds(sb: &mut super::sandbox::Sandbox, dir: &TaskDir) -> Result<(), EngineError> {
    if !sb.binds.iter().any(|b| b.beneath.is_some()) {
        return Ok(());
    }
    let pin = super::sandbox::running_as_root();
    if pin {
        super::binds::private_mount_namespace()?;
    }
    super::binds::resolve(&mut sb.binds, &dir.path().join("binds"), pin)?;
    // The first bind is the user's space (/mnt): mounts inside it are made
    // here, not by bwrap.
    if let (true, Some(inside)) = (pin, sb.binds.first().map(|b| b.target.clone())) {
        let owner = sb.switch_user.as_ref().map(|u| (u.uid, u.gid));
        super::binds::mount_inside(&mut sb.binds, &inside, owner)?;
    }
    Ok(())
}

/// A container's mount sources, resolved beneath their folders; as root,
/// pinned onto mount points in the task's folder in a mount namespace of
/// the supervisor's own, which the engine's client and runtime inherit
/// (the engine would otherwise open them by path, through any link a task
/// of the same user left on the way).
fn pin_container_binds(
    ct: &mut super::container::Container,
    dir: &TaskDir,
) -> Result<(), EngineError> {
    if !ct.binds.iter().any(|b| b.beneath.is_some()) {
        return Ok(());
    }
    let pin = super::sandbox::running_as_root();
    if pin {
        super::binds::private_mount_namespace()?;
    }
    super::binds::resolve(&mut ct.binds, &dir.path().join("binds"), pin)?;
    // Mount points inside the space are made here, one folder at a time
    // without following links, not by the runtime by path; the engine's
    // recursive bind of the space brings them along.
    if let (true, Some(inside)) = (pin, ct.binds.first().map(|b| b.target.clone())) {
        let owner = ct.user.map(|u| (u.uid, u.gid));
        super::binds::mount_inside(&mut ct.binds, &inside, owner)?;
    }
    Ok(())
}

/// Becomes the task's own uid and gid for good, with no supplementary
/// groups and no way back to privileges through set-uid programs. Runs
/// between fork and exec: system calls only.
fn drop_privileges(id: super::files::RunAs) -> std::io::Result<()> {
    if id.uid == 0 || id.gid == 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EPERM));
    }
    // SAFETY: plain system calls with valid arguments; each result checked.
    unsafe {
        let groups = [id.gid as libc::gid_t];
        if libc::setgroups(1, groups.as_ptr()) != 0
            || libc::setresgid(id.gid, id.gid, id.gid) != 0
            || libc::setresuid(id.uid, id.uid, id.uid) != 0
            || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // Never go on as root should the kernel have ignored a call.
        if libc::geteuid() == 0 || libc::getegid() == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    Ok(())
}

/// SIGTERM or SIGINT to the supervisor means "stop the task": SIGTERM to its
/// group now, SIGKILL after the grace period. SIGHUP is ignored, and so is
/// anything that arrives after the task ended by itself.
fn watch_signals(
    mut signals: Signals,
    group: Pid,
    spare_leader: bool,
    grace_secs: u64,
    stop: Arc<AtomicBool>,
    task_done: Arc<AtomicBool>,
) {
    thread::spawn(move || {
        for sig in signals.forever() {
            if sig == SIGHUP
                || task_done.load(Ordering::SeqCst)
                || stop.swap(true, Ordering::SeqCst)
            {
                continue;
            }
            if spare_leader {
                term_group_except_leader(group);
            } else {
                let _ = killpg(group, Signal::SIGTERM);
            }
            thread::spawn(move || {
                // A timer, not a synchronisation: the grace period itself.
                thread::sleep(Duration::from_secs(grace_secs));
                let _ = killpg(group, Signal::SIGKILL);
            });
        }
    });
}

/// SIGTERM to every process of the group but its leader.
fn term_group_except_leader(group: Pid) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        let _ = killpg(group, Signal::SIGTERM);
        return;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == group.as_raw() {
            continue;
        }
        // /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may hold
        // spaces and parentheses, so read after the last ')'.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|p| p.parse::<i32>().ok());
        if pgrp == Some(group.as_raw()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}

/// Copies one stream to its own log and to the merged log, chunk by chunk.
fn copy(mut pipe: Box<dyn Read + Send>, mut log: File, merged: &Mutex<File>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut warned = false;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        // A full disk must not stop the task; keep draining the pipe so it
        // never blocks, and say once (in supervisor.log) that output is lost.
        let mut wrote = log.write_all(chunk);
        if let Ok(mut m) = merged.lock() {
            wrote = wrote.and(m.write_all(chunk));
        }
        if let Err(e) = wrote {
            if !warned {
                eprintln!("kiln supervisor: cannot write task output, some is lost: {e}");
                warned = true;
            }
        }
    }
}
