//! The supervisor: one small process per task. It starts the task's command
//! in a process group of its own, copies its output to the log files, turns a
//! stop request (SIGTERM to the supervisor) into SIGTERM then SIGKILL for the
//! whole group, and records how the task ended. It runs in a session of its
//! own, so neither a server crash nor a Ctrl-C in the server's terminal
//! reaches it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
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
    Command::new(exe)
        .arg("__supervise")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|source| EngineError::Spawn {
            dir: dir.path().to_owned(),
            source,
        })
}

/// Whether the supervisor of a task still runs. Checks the process's command
/// line too, so a recycled pid is not taken for it.
pub fn supervisor_alive(dir: &TaskDir, started: &Started) -> bool {
    if kill(Pid::from_raw(started.supervisor_pid), None).is_err() {
        return false;
    }
    let cmdline =
        std::fs::read(format!("/proc/{}/cmdline", started.supervisor_pid)).unwrap_or_default();
    let want = dir.path().as_os_str().as_encoded_bytes();
    cmdline.split(|b| *b == 0).any(|arg| arg == want)
}

/// The supervisor's whole life. Returns once `exit.json` is written.
pub fn supervise(dir: &TaskDir) -> Result<(), EngineError> {
    // A session of our own: no terminal signals, no dying with the server.
    // Fails only when already a group leader, which is fine.
    let _ = setsid();
    let spec = dir.read_launch()?;

    let open = |path: std::path::PathBuf| {
        OpenOptions::new()
            .create(true)
            .append(true)
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
    let join = match cgroup.as_ref().map(TaskGroup::join_files) {
        Some(Ok(files)) => files,
        _ => Vec::new(),
    };

    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&spec.command)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.working_dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !join.is_empty() {
        // SAFETY: between fork and exec only write(2) runs here, on files
        // opened before the fork; nothing allocates or takes a lock.
        unsafe {
            cmd.pre_exec(move || {
                for mut f in &join {
                    f.write_all(b"0")?;
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let exit = Exit {
                exit_code: None,
                signal: None,
                stop_requested: false,
                launch_error: Some(format!(
                    "cannot start bash in {}: {e}",
                    spec.working_dir.display()
                )),
                oom_killed: false,
                finished_at_ms: now_ms(),
            };
            if let Some(g) = cgroup {
                g.remove();
            }
            return write_atomic(&dir.exit(), &exit);
        }
    };
    let pid = child.id() as i32;
    let group = Pid::from_raw(pid);
    write_atomic(
        &dir.started(),
        &Started {
            supervisor_pid: std::process::id() as i32,
            pid,
            started_at_ms: now_ms(),
            limits_note,
        },
    )?;

    let stop_requested = Arc::new(AtomicBool::new(false));
    watch_signals(group, spec.stop_grace_secs, Arc::clone(&stop_requested))?;

    let copiers: Vec<_> = [
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
        thread::spawn(move || copy(pipe, log, &merged))
    })
    .collect();

    let status = child
        .wait()
        .map_err(EngineError::io("wait for", dir.path()))?;
    // The task is its main process: whatever it left behind ends with it, and
    // the pipes those leftovers hold close.
    let _ = killpg(group, Signal::SIGKILL);
    for c in copiers {
        let _ = c.join();
    }
    if let Ok(out) = output_log.lock() {
        let _ = out.sync_all();
    }

    let oom_killed = cgroup.as_ref().is_some_and(TaskGroup::oom_killed);
    if let Some(g) = cgroup {
        g.remove();
    }
    let exit = Exit {
        exit_code: status.code(),
        signal: status.signal(),
        stop_requested: stop_requested.load(Ordering::SeqCst),
        launch_error: None,
        oom_killed,
        finished_at_ms: now_ms(),
    };
    write_atomic(&dir.exit(), &exit)
}

/// SIGTERM or SIGINT to the supervisor means "stop the task": SIGTERM to its
/// group now, SIGKILL after the grace period. SIGHUP is ignored.
fn watch_signals(group: Pid, grace_secs: u64, stop: Arc<AtomicBool>) -> Result<(), EngineError> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(EngineError::Signals)?;
    thread::spawn(move || {
        for sig in signals.forever() {
            if sig == SIGHUP || stop.swap(true, Ordering::SeqCst) {
                continue;
            }
            let _ = killpg(group, Signal::SIGTERM);
            thread::spawn(move || {
                // A timer, not a synchronisation: the grace period itself.
                thread::sleep(Duration::from_secs(grace_secs));
                let _ = killpg(group, Signal::SIGKILL);
            });
        }
    });
    Ok(())
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
    let _ = log.sync_all();
}
