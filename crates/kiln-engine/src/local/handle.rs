//! A handle on one running supervisor: a pidfd, so signals and waiting reach
//! exactly that process even once its pid could have been reused, whether
//! the server started it or found it again after a restart.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Child;
use std::sync::Mutex;

use super::files::TaskDir;
use super::supervisor::pid_supervises;
use crate::error::EngineError;

#[derive(Debug)]
pub struct Supervisor {
    pid: i32,
    pidfd: OwnedFd,
    /// Set when this server started it: the child must be reaped.
    child: Mutex<Option<Child>>,
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
    pub fn from_child(child: Child) -> Result<Self, EngineError> {
        let pid = child.id() as i32;
        let pidfd = pidfd_open(pid).map_err(EngineError::Pidfd)?;
        Ok(Self {
            pid,
            pidfd,
            child: Mutex::new(Some(child)),
        })
    }

    /// Finds the supervisor of `dir` again after a server restart; None when
    /// it no longer runs.
    pub fn find(dir: &TaskDir, pid: i32) -> Option<Self> {
        let pidfd = pidfd_open(pid).ok()?;
        // Checked after opening: the pidfd holds on to the process checked.
        pid_supervises(dir, pid).then_some(Self {
            pid,
            pidfd,
            child: Mutex::new(None),
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Asks the supervisor to stop its task (SIGTERM, then SIGKILL after the
    /// task's grace period, done by the supervisor). A supervisor that has
    /// already ended is not an error.
    pub fn request_stop(&self) -> Result<(), EngineError> {
        // SAFETY: a plain syscall on a pidfd we own.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGTERM,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(EngineError::Pidfd(e));
            }
        }
        Ok(())
    }

    /// Blocks until the supervisor has exited (and reaps it if it is ours).
    /// Run it on a thread of its own.
    pub fn wait(&self) {
        let mut pfd = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd, for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, -1) };
            if r > 0 {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
        if let Ok(mut child) = self.child.lock() {
            if let Some(c) = child.as_mut() {
                let _ = c.wait();
            }
        }
    }
}
