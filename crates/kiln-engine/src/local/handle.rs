//! A handle on one running supervisor: a pidfd, so signals and waiting reach
//! exactly that process even once its pid could have been reused, whether
//! the server started it or found it again after a restart.
//!
//! Kernels without pidfds (before 5.3), or a process out of file
//! descriptors, still get a working handle: for a child of ours the pid
//! stays ours until we reap it; for one found again after a restart, its
//! life is checked every half second. A supervisor is never dropped
//! unwatched.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::files::TaskDir;
use super::supervisor::pid_supervises;
use crate::error::EngineError;

/// How often a supervisor without a pidfd, and not our child, is looked at.
const FALLBACK_POLL: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Supervisor {
    pid: i32,
    pidfd: Option<OwnedFd>,
    /// Set when this server started it: the child must be reaped.
    child: Mutex<Option<Child>>,
    /// For the pidfd-less fallback: the task folder, to recognise the pid.
    dir: TaskDir,
    /// Once reaped, the pid may belong to someone else: never signal it.
    reaped: AtomicBool,
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments; on success it returns
    // a new file descriptor that we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by pidfd_open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Supervisor {
    /// Takes a supervisor this process just spawned (not yet reaped, so its
    /// pid is still its own).
    pub fn from_child(child: Child, dir: &TaskDir) -> Self {
        let pid = child.id() as i32;
        Self {
            pid,
            pidfd: pidfd_open(pid).ok(),
            child: Mutex::new(Some(child)),
            dir: dir.clone(),
            reaped: AtomicBool::new(false),
        }
    }

    /// Finds the supervisor of `dir` again after a server restart; None only
    /// when it is gone (or `pid` is some other process).
    pub fn find(dir: &TaskDir, pid: i32) -> Option<Self> {
        if pid <= 0 {
            return None;
        }
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return None,
            Err(_) => None,
        };
        // Checked after opening: the pidfd holds on to the process checked.
        pid_supervises(dir, pid).then(|| Self {
            pid,
            pidfd,
            child: Mutex::new(None),
            dir: dir.clone(),
            reaped: AtomicBool::new(false),
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Asks the supervisor to stop its task (SIGTERM, then SIGKILL after the
    /// task's grace period, done by the supervisor). A supervisor that has
    /// already ended is not an error.
    pub fn request_stop(&self) -> Result<(), EngineError> {
        let r = match &self.pidfd {
            // SAFETY: a plain syscall on a pidfd we own.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGTERM,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            None => {
                if self.reaped.load(Ordering::SeqCst) || !self.still_ours() {
                    return Ok(());
                }
                match kill(Pid::from_raw(self.pid), Signal::SIGTERM) {
                    Ok(()) => 0,
                    Err(e) => {
                        return match e {
                            nix::errno::Errno::ESRCH => Ok(()),
                            other => Err(EngineError::Pidfd(other.into())),
                        }
                    }
                }
            }
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(EngineError::Pidfd(e));
            }
        }
        Ok(())
    }

    /// Without a pidfd: our unreaped child is ours by construction; anyone
    /// else's pid must still be a supervisor of this folder.
    fn still_ours(&self) -> bool {
        let is_child = self.child.try_lock().map_or(true, |c| c.is_some());
        is_child || pid_supervises(&self.dir, self.pid)
    }

    /// Blocks until the supervisor has exited (and reaps it if it is ours).
    /// Run it on a thread of its own.
    pub fn wait(&self) {
        match &self.pidfd {
            Some(fd) => {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                loop {
                    // SAFETY: one valid pollfd, for the duration of the call.
                    let r = unsafe { libc::poll(&mut pfd, 1, -1) };
                    if r > 0 {
                        break;
                    }
                    if r < 0
                        && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                    {
                        break;
                    }
                }
            }
            None => {
                let own = self.child.lock().map(|c| c.is_some()).unwrap_or(false);
                if !own {
                    // Not our child: nothing to block on but its existence.
                    while pid_supervises(&self.dir, self.pid) {
                        std::thread::sleep(FALLBACK_POLL);
                    }
                }
            }
        }
        // Reaping happens only after the exit is known (pidfd readable, or
        // by waiting on the child itself), so the pid stays reserved for
        // request_stop until then.
        if let Ok(mut child) = self.child.lock() {
            if let Some(c) = child.as_mut() {
                let _ = c.wait();
            }
            self.reaped.store(true, Ordering::SeqCst);
        }
    }
}
