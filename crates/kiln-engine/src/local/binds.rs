//! Mount sources resolved at the moment of launch, beneath the folder they
//! belong to, and pinned so nothing can be swapped in before bwrap binds
//! them.
//!
//! A task can replace any folder of its user's space with a link (to
//! another user's space, to kiln's data folder, to /etc) between one launch
//! and the next. So a source named relative to a space is never a path the
//! server checked at submit: the supervisor opens it here with `openat2`
//! (`RESOLVE_BENEATH`: no `..`, absolute link or magic link may lead out of
//! the base) and, when it runs as root, bind-mounts that very file
//! descriptor onto a mount point in the task's own folder, inside a mount
//! namespace of its own. bwrap then binds the mount point, which only root
//! can change. bwrap 0.8's `--bind-fd` is no help: it resolves the path the
//! descriptor had again.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::EngineError;
use crate::local::sandbox::Bind;

fn cstr(p: &Path) -> Result<CString, EngineError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| EngineError::Io {
        action: "resolve",
        path: p.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

fn last_error(action: &'static str, path: &Path) -> EngineError {
    EngineError::Io {
        action,
        path: path.to_owned(),
        source: std::io::Error::last_os_error(),
    }
}

/// Opens `rel` beneath `base` (an `O_PATH` descriptor), refusing any path
/// or link that leads out of it; `base` itself must not be a link.
pub fn open_beneath(base: &Path, rel: &Path) -> Result<OwnedFd, EngineError> {
    let base_c = cstr(base)?;
    // SAFETY: a valid NUL-terminated path; the result is checked.
    let base_fd = unsafe {
        libc::open(
            base_c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if base_fd < 0 {
        return Err(last_error("open", base));
    }
    // SAFETY: base_fd was just opened and is owned here alone.
    let base_fd = unsafe { OwnedFd::from_raw_fd(base_fd) };
    let rel_c = cstr(if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    })?;
    // SAFETY: open_how is plain data; zeroed is a valid value for it.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with valid pointers and the size of the struct passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            base_fd.as_raw_fd(),
            rel_c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let source = std::io::Error::last_os_error();
        let path = base.join(rel);
        return Err(match source.raw_os_error() {
            Some(libc::EXDEV) | Some(libc::ELOOP) => EngineError::Escapes(path),
            _ => EngineError::Io {
                action: "open",
                path,
                source,
            },
        });
    }
    // SAFETY: fd was just returned by openat2 and is owned here alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn open_path(p: &Path) -> Result<OwnedFd, EngineError> {
    let c = cstr(p)?;
    // SAFETY: a valid NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_error("open", p));
    }
    // SAFETY: just opened, owned here alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path a descriptor stands for, as the kernel names it.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Gives this process a mount namespace of its own whose mounts do not
/// propagate back to the host, so pinned sources are seen by the task's
/// bwrap alone and vanish with the supervisor.
pub fn private_mount_namespace() -> Result<(), EngineError> {
    // SAFETY: unshare and mount with constant, valid arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(last_error("unshare the mount namespace", Path::new("/")));
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(last_error("make private", Path::new("/")));
        }
    }
    Ok(())
}

/// Resolves every bind that names a base (see [`Bind::beneath`]) and points
/// it at what was resolved. `pin`: bind-mount each one onto a mount point
/// under `stage` (needs root and [`private_mount_namespace`]); otherwise the
/// resolved path is used, which a task of the same uid could still race.
pub fn resolve(binds: &mut [Bind], stage: &Path, pin: bool) -> Result<(), EngineError> {
    if pin && !binds.is_empty() {
        std::fs::create_dir_all(stage).map_err(EngineError::io("create", stage))?;
    }
    for (i, b) in binds.iter_mut().enumerate() {
        let (fd, base) = match b.beneath.take() {
            Some(base) => (open_beneath(&base, &b.source)?, base),
            // A path of kiln's own (a codeDir copy): pinned too when
            // pinning, so every bind is a mount point only root controls.
            None if pin => (open_path(&b.source)?, PathBuf::new()),
            None => continue,
        };
        if !pin {
            b.source = fd_path(&fd);
            continue;
        }
        let point = stage.join(i.to_string());
        let meta = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(EngineError::io("inspect", base.join(&b.source)))?;
        if meta.is_dir() {
            std::fs::create_dir(&point).map_err(EngineError::io("create", &point))?;
        } else {
            std::fs::File::create(&point).map_err(EngineError::io("create", &point))?;
        }
        // The magic link names the opened file itself, not its path.
        bind(&fd_link(&fd, &point)?, &cstr(&point)?, &point)?;
        b.source = point;
    }
    Ok(())
}

/// Mounts every bind whose target lies in the space (`inside`, /mnt) onto
/// its place in the pinned space itself, here in the supervisor's own mount
/// namespace, and drops it from the binds bwrap makes. bwrap would make
/// those mount points as root by path, through any link a task left in the
/// space (one leading to the host's /etc, say); here each folder on the way
/// is opened from the one above with `O_NOFOLLOW`, made as the user when
/// missing, and the mount goes onto the descriptor. bwrap's recursive bind
/// of the space brings them along. Needs [`resolve`] with pinning first.
pub fn mount_inside(
    binds: &mut Vec<Bind>,
    inside: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), EngineError> {
    let Some(space) = binds.iter().find(|b| b.target == inside) else {
        return Ok(());
    };
    let space = space.source.clone();
    let mut kept = Vec::with_capacity(binds.len());
    for b in binds.drain(..) {
        let rel = match b.target.strip_prefix(inside) {
            Ok(r) if !r.as_os_str().is_empty() => r.to_owned(),
            _ => {
                kept.push(b);
                continue;
            }
        };
        let is_dir = std::fs::metadata(&b.source)
            .map_err(EngineError::io("inspect", &b.source))?
            .is_dir();
        if b.read_only {
            // Read-only at the stage, a path only root controls; a bind of
            // it keeps the flag.
            remount_read_only(&b.source)?;
        }
        let target = mount_point(&space, &rel, is_dir, owner)?;
        // Onto the opened mount point itself.
        bind(&cstr(&b.source)?, &fd_link(&target, &b.target)?, &b.target)?;
    }
    *binds = kept;
    Ok(())
}

/// `/proc/self/fd/N` of a descriptor: as a mount source or target it is
/// the opened file itself, never its path looked up again.
fn fd_link(fd: &OwnedFd, what: &Path) -> Result<CString, EngineError> {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|_| last_error("bind", what))
}

/// A recursive bind mount; `at` names it in errors.
fn bind(from: &CString, to: &CString, at: &Path) -> Result<(), EngineError> {
    // SAFETY: valid NUL-terminated paths; the result is checked.
    let r = unsafe {
        libc::mount(
            from.as_ptr(),
            to.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(last_error("bind", at));
    }
    Ok(())
}

fn remount_read_only(point: &Path) -> Result<(), EngineError> {
    let p = cstr(point)?;
    // SAFETY: a valid path to a mount point made by `resolve`.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            p.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(last_error("make read-only", point));
    }
    Ok(())
}

/// Opens (making what is missing, as `owner`) `rel` beneath `base`, one
/// component at a time, never through a link.
fn mount_point(
    base: &Path,
    rel: &Path,
    is_dir: bool,
    owner: Option<(u32, u32)>,
) -> Result<OwnedFd, EngineError> {
    let base_c = cstr(base)?;
    let dir_flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a valid path; the result is checked.
    let fd = unsafe { libc::open(base_c.as_ptr(), dir_flags) };
    if fd < 0 {
        return Err(last_error("open", base));
    }
    // SAFETY: just opened, owned here alone.
    let mut cur = unsafe { OwnedFd::from_raw_fd(fd) };
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let std::path::Component::Normal(name) = part else {
            return Err(EngineError::Escapes(base.join(rel)));
        };
        let name_c = CString::new(name.as_bytes()).map_err(|_| last_error("open", rel))?;
        let last = i + 1 == parts.len();
        let want_dir = !last || is_dir;
        let open = |flags| {
            // SAFETY: a directory descriptor we own and a valid name.
            unsafe { libc::openat(cur.as_raw_fd(), name_c.as_ptr(), flags, 0o644) }
        };
        let flags = if want_dir {
            dir_flags
        } else {
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC
        };
        let mut fd = open(flags);
        if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT) {
            // SAFETY: as above; mkdirat and O_CREAT|O_EXCL never follow a
            // link in the last component.
            let made = unsafe {
                if want_dir {
                    libc::mkdirat(cur.as_raw_fd(), name_c.as_ptr(), 0o755)
                } else {
                    let f = libc::openat(
                        cur.as_raw_fd(),
                        name_c.as_ptr(),
                        libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_WRONLY
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o644,
                    );
                    if f >= 0 {
                        libc::close(f);
                        0
                    } else {
                        -1
                    }
                }
            };
            if made == 0 {
                if let Some((uid, gid)) = owner {
                    // SAFETY: as above; the entry itself, never a link's target.
                    unsafe {
                        libc::fchownat(
                            cur.as_raw_fd(),
                            name_c.as_ptr(),
                            uid,
                            gid,
                            libc::AT_SYMLINK_NOFOLLOW,
                        );
                    }
                }
            }
            fd = open(flags);
        }
        if fd < 0 {
            let source = std::io::Error::last_os_error();
            let path = base.join(rel);
            return Err(match source.raw_os_error() {
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => EngineError::Escapes(path),
                _ => EngineError::Io {
                    action: "make the mount point",
                    path,
                    source,
                },
            });
        }
        // SAFETY: just opened, owned here alone.
        cur = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_opened_beneath_its_base_and_links_out_are_refused() {
        let t = std::env::temp_dir().join(format!("kiln-binds-{}", std::process::id()));
        let space = t.join("alice");
        let other = t.join("bob");
        std::fs::create_dir_all(space.join("data/inner")).expect("mkdir");
        std::fs::create_dir_all(&other).expect("mkdir");
        std::os::unix::fs::symlink("../bob", space.join("up")).expect("link");
        std::os::unix::fs::symlink(&other, space.join("abs")).expect("link");
        std::os::unix::fs::symlink("data/inner", space.join("inside")).expect("link");

        assert!(open_beneath(&space, Path::new("data/inner")).is_ok());
        // A link that stays inside is fine; the whole space is fine.
        assert!(open_beneath(&space, Path::new("inside")).is_ok());
        assert!(open_beneath(&space, Path::new("")).is_ok());
        for bad in ["up", "abs", "../bob", "/etc", "data/../../bob"] {
            match open_beneath(&space, Path::new(bad)) {
                Err(EngineError::Escapes(_)) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        // The base itself may not be a link.
        std::os::unix::fs::symlink(&other, t.join("alias")).expect("link");
        assert!(open_beneath(&t.join("alias"), Path::new("")).is_err());

        // Without pinning the checked path is used.
        let mut binds = vec![Bind {
            source: "inside".into(),
            target: "/data".into(),
            read_only: true,
            beneath: Some(space.clone()),
        }];
        resolve(&mut binds, &t.join("stage"), false).expect("resolve");
        assert_eq!(binds[0].source, space.join("data/inner"));
        assert!(binds[0].beneath.is_none());
        let _ = std::fs::remove_dir_all(&t);
    }
}
