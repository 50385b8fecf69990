//! A supervisor started ahead of time. Starting one (fork of the server,
//! exec of the kiln binary, its start-up) took 2–3 ms of every hand-over
//! from one job to the next on the GPUs (docs/benchmarks.md, GPU queueing);
//! a standby has paid that before the task exists, and waits for its folder
//! on a pipe from the server. The local engine keeps a few ready (engine.rs)
//! and starts fresh supervisors, as before, when none is.
//!
//! The hand-over is a small protocol: the server writes the folder's path
//! and a NUL; the standby takes its signals before it reads (as every
//! supervisor does), works in the folder, and answers one byte. Only after
//! that answer does the server consider it the task's supervisor, so a stop
//! request (SIGTERM) can never reach a standby that has not yet taken the
//! task. A standby that is signalled while it waits, or whose server goes
//! away (end of file), ends without a task, and the server starts a fresh
//! supervisor instead. After a server restart a standby-made supervisor is
//! recognised by `__supervise` on its command line and the folder as its
//! working folder (`pid_supervises`).

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};

use super::files::TaskDir;
use super::supervisor::{claim, supervise_with, take_signals};
use crate::error::EngineError;

/// How long the server waits for a standby to take a folder. A live one
/// answers in well under a millisecond; one that does not is replaced.
const TAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A started supervisor that has no task yet (the server's side).
#[derive(Debug)]
pub struct Standby {
    child: Child,
    to: ChildStdin,
    from: ChildStdout,
}

/// Starts `exe __supervise --standby`. Unlike `spawn_supervisor` it does
/// not block the stop signals in the child: nobody may stop a standby
/// before it has answered, and a closure run before exec would make the
/// standard library fork the whole server (copying its page tables while
/// the server's other threads wait) where it can otherwise spawn the
/// vfork way.
pub fn spawn_standby(exe: &Path) -> Result<Standby, EngineError> {
    let mut cmd = Command::new(exe);
    cmd.args(["__supervise", "--standby"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let spawn_error = |source| EngineError::Spawn {
        dir: PathBuf::from("(standby)"),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_error)?;
    match (child.stdin.take(), child.stdout.take()) {
        (Some(to), Some(from)) => Ok(Standby { child, to, from }),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(spawn_error(std::io::Error::other(
                "no pipes to the standby",
            )))
        }
    }
}

impl Standby {
    /// Gives the standby the folder of a task whose `launch.json` is
    /// written; once it has answered it is that task's supervisor, returned
    /// as `spawn_supervisor` returns a fresh one. On any failure it is
    /// killed and reaped, and the caller starts a fresh supervisor.
    pub fn hand_over(mut self, dir: &TaskDir) -> Result<Child, EngineError> {
        let mut msg = dir.path().as_os_str().as_bytes().to_vec();
        msg.push(0);
        let taken = self
            .to
            .write_all(&msg)
            .and_then(|()| self.to.flush())
            .and_then(|()| await_answer(&mut self.from, TAKE_TIMEOUT));
        let pid = self.child.id() as i32;
        match taken {
            Ok(()) => Ok(self.child),
            // Slow to answer, but it took the folder: it is the supervisor.
            Err(_) if dir.claimed_by() == Some(pid) => Ok(self.child),
            Err(source) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                if dir.claimed_by() == Some(pid) {
                    // It took the folder just before it was killed: what it
                    // may have started ends too. A fresh supervisor then
                    // finds the folder claimed and the task is reported
                    // lost, never run twice.
                    if let Ok(Some(started)) = dir.read_started() {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(started.pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                Err(EngineError::Standby {
                    dir: dir.path().to_owned(),
                    source,
                })
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// One byte from the standby within `timeout`. A signal to the server
/// (its SIGCHLD handler, say) interrupts the wait; it goes on.
fn await_answer(from: &mut ChildStdout, timeout: Duration) -> std::io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: from.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let give_up = std::time::Instant::now() + timeout;
    loop {
        let left = give_up.saturating_duration_since(std::time::Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            break;
        }
        if r == 0 {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let mut byte = [0u8; 1];
    match from.read(&mut byte)? {
        1 => Ok(()),
        _ => Err(std::io::ErrorKind::UnexpectedEof.into()),
    }
}

/// The standby's whole life (`kiln __supervise --standby`): wait for a
/// folder, take it, supervise its task.
pub fn standby() -> Result<(), EngineError> {
    let mut signals = take_signals()?;
    let mut path = Vec::new();
    let read = std::io::stdin().lock().read_until(0, &mut path);
    if !matches!(read, Ok(n) if n > 0) || path.pop() != Some(0) {
        return Ok(()); // the server went away before giving a task
    }
    // Signalled while it had no task (the server never does that): end,
    // and let the server start a fresh supervisor for this one.
    if signals.pending().any(|s| s == SIGTERM || s == SIGINT) {
        return Ok(());
    }
    let dir = TaskDir::new(PathBuf::from(OsString::from_vec(path)));
    std::env::set_current_dir(dir.path()).map_err(EngineError::io("enter", dir.path()))?;
    // Claimed before the answer: an answer means the folder is taken, and
    // a server that got none can tell whether it was (`hand_over`).
    claim(&dir)?;
    let log = File::create(dir.supervisor_log())
        .map_err(EngineError::io("create", dir.supervisor_log()))?;
    let mut out = std::io::stdout().lock();
    out.write_all(b"1")
        .and_then(|()| out.flush())
        .map_err(EngineError::io("answer the server for", dir.path()))?;
    drop(out);
    // From here on its messages go where a fresh supervisor's go.
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 onto the standard descriptors, from a file we own.
        if unsafe { libc::dup2(log.as_raw_fd(), fd) } < 0 {
            return Err(EngineError::io("redirect to", dir.supervisor_log())(
                std::io::Error::last_os_error(),
            ));
        }
    }
    supervise_with(&dir, signals)
}
