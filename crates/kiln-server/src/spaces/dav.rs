//! A user's space as a WebDAV file system (for dav-server), so people can
//! mount it with rclone, davfs2, Finder or Explorer. Every call goes
//! through the same capability handle on the space as the API does, so no
//! WebDAV path can leave the space either, and writes count against the
//! quota. File system calls run on the blocking pool.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Buf, Bytes};
use cap_std::fs::Dir;
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, FsError, FsFuture, FsResult, FsStream, GuardedFileSystem,
    OpenOptions, ReadDirMeta,
};

use super::{SpacePath, Spaces};

/// Upload temporaries of the API; not shown to WebDAV clients.
const UPLOAD_PREFIX: &str = ".kiln-upload-";

/// Who a WebDAV request is for: the user and a handle on their space.
#[derive(Clone)]
pub struct DavUser {
    pub name: String,
    pub dir: Arc<Dir>,
    /// The user's uid: WebDAV makes and changes files as them.
    pub run_as: Option<kiln_engine::local::RunAs>,
}

/// The file system behind `/dav/`; the space comes with each request.
#[derive(Clone)]
pub struct SpaceDav {
    spaces: Arc<Spaces>,
}

impl SpaceDav {
    pub fn new(spaces: Arc<Spaces>) -> Self {
        SpaceDav { spaces }
    }

    async fn usage(&self, user: &str) -> FsResult<super::Usage> {
        let spaces = Arc::clone(&self.spaces);
        let user = user.to_owned();
        tokio::task::spawn_blocking(move || spaces.usage(&user))
            .await
            .map_err(|_| FsError::GeneralFailure)?
            .map_err(|_| FsError::GeneralFailure)
    }

    /// What the user may still write, or None without a quota.
    async fn room(&self, user: &str) -> FsResult<Option<u64>> {
        if self.spaces.quota().is_none() {
            return Ok(None);
        }
        let u = self.usage(user).await?;
        Ok(u.quota_bytes.map(|q| q.saturating_sub(u.used_bytes)))
    }

    fn changed(&self, user: &str) {
        self.spaces.forget_usage(user);
    }
}

/// The path inside the space, checked like every API path (no `..`, NUL,
/// absolute paths or over-long names), whatever dav-server let through.
fn rel(path: &DavPath) -> FsResult<PathBuf> {
    let text = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::Forbidden)?;
    SpacePath::parse(text)
        .map(|p| p.rel())
        .map_err(|_| FsError::Forbidden)
}

fn fs_error(e: std::io::Error) -> FsError {
    use std::io::ErrorKind as K;
    if e.raw_os_error() == Some(ELOOP) {
        return FsError::LoopDetected;
    }
    match e.kind() {
        K::NotFound => FsError::NotFound,
        // cap-std's answer to a path or symlink that leads out of the space.
        K::PermissionDenied => FsError::Forbidden,
        K::AlreadyExists => FsError::Exists,
        K::StorageFull | K::QuotaExceeded => FsError::InsufficientStorage,
        K::FileTooLarge => FsError::TooLarge,
        K::InvalidFilename => FsError::PathTooLong,
        K::CrossesDevices => FsError::IsRemote,
        K::NotADirectory | K::IsADirectory | K::DirectoryNotEmpty => FsError::Forbidden,
        _ => FsError::GeneralFailure,
    }
}

/// Linux's errno for a symlink loop (std has no stable ErrorKind for it).
const ELOOP: i32 = 40;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> FsResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| FsError::GeneralFailure)?
        .map_err(fs_error)
}

/// [`blocking`], with the thread's file operations done as the user.
async fn blocking_as<T: Send + 'static>(
    id: Option<kiln_engine::local::RunAs>,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> FsResult<T> {
    blocking(move || {
        let _as = crate::identity::ActingAs::new(id);
        f()
    })
    .await
}

/// The metadata of `path`, following a final symlink (within the space)
/// or not.
async fn meta(path: &DavPath, user: &DavUser, follow: bool) -> FsResult<Box<dyn DavMetaData>> {
    let rel = rel(path)?;
    let dir = Arc::clone(&user.dir);
    let m = blocking_as(user.run_as, move || {
        if follow {
            dir.metadata(&rel)
        } else {
            dir.symlink_metadata(&rel)
        }
    })
    .await?;
    Ok(Box::new(Meta::from(m)) as Box<dyn DavMetaData>)
}

/// What WebDAV needs to know of a file or folder.
#[derive(Debug, Clone)]
struct Meta {
    len: u64,
    dir: bool,
    symlink: bool,
    modified: Option<SystemTime>,
    accessed: Option<SystemTime>,
    created: Option<SystemTime>,
}

impl From<cap_std::fs::Metadata> for Meta {
    fn from(m: cap_std::fs::Metadata) -> Self {
        Meta {
            len: m.len(),
            dir: m.is_dir(),
            symlink: m.is_symlink(),
            modified: m.modified().ok().map(|t| t.into_std()),
            accessed: m.accessed().ok().map(|t| t.into_std()),
            created: m.created().ok().map(|t| t.into_std()),
        }
    }
}

impl From<std::fs::Metadata> for Meta {
    fn from(m: std::fs::Metadata) -> Self {
        Meta {
            len: m.len(),
            dir: m.is_dir(),
            symlink: m.is_symlink(),
            modified: m.modified().ok(),
            accessed: m.accessed().ok(),
            created: m.created().ok(),
        }
    }
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.len
    }
    fn modified(&self) -> FsResult<SystemTime> {
        self.modified.ok_or(FsError::NotImplemented)
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
    fn is_symlink(&self) -> bool {
        self.symlink
    }
    fn accessed(&self) -> FsResult<SystemTime> {
        self.accessed.ok_or(FsError::NotImplemented)
    }
    fn created(&self) -> FsResult<SystemTime> {
        self.created.ok_or(FsError::NotImplemented)
    }
}

struct Entry {
    name: Vec<u8>,
    meta: FsResult<Meta>,
}

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.name.clone()
    }
    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let r = self
            .meta
            .clone()
            .map(|m| Box::new(m) as Box<dyn DavMetaData>);
        Box::pin(std::future::ready(r))
    }
}

/// An open file. `room` is what may still be written under the quota.
struct File {
    file: Arc<std::fs::File>,
    room: Option<u64>,
    wrote: bool,
    user: String,
    spaces: Arc<Spaces>,
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("user", &self.user)
            .field("room", &self.room)
            .finish()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if self.wrote {
            self.spaces.forget_usage(&self.user);
        }
    }
}

impl DavFile for File {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let f = Arc::clone(&self.file);
        Box::pin(async move {
            let m = blocking(move || f.metadata()).await?;
            Ok(Box::new(Meta::from(m)) as Box<dyn DavMetaData>)
        })
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        self.write_bytes(bytes)
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        Box::pin(async move {
            if let Some(room) = self.room {
                let n = buf.len() as u64;
                if n > room {
                    return Err(FsError::InsufficientStorage);
                }
                self.room = Some(room - n);
            }
            self.wrote = true;
            let f = Arc::clone(&self.file);
            blocking(move || (&*f).write_all(&buf)).await
        })
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        let f = Arc::clone(&self.file);
        Box::pin(async move {
            blocking(move || {
                let mut out = Vec::with_capacity(count.min(1 << 20));
                (&*f).take(count as u64).read_to_end(&mut out)?;
                Ok(Bytes::from(out))
            })
            .await
        })
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let f = Arc::clone(&self.file);
        Box::pin(async move { blocking(move || (&*f).seek(pos)).await })
    }

    /// Writes go straight to the kernel; there is nothing to flush, and an
    /// fsync per PUT would cost more than it protects.
    fn flush(&mut self) -> FsFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

impl GuardedFileSystem<DavUser> for SpaceDav {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
        user: &'a DavUser,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        Box::pin(async move {
            let rel = rel(path)?;
            let writing = options.write || options.append;
            let mut room = if writing {
                self.room(&user.name).await?
            } else {
                None
            };
            if let (Some(r), Some(size)) = (room, options.size) {
                if size > r {
                    return Err(FsError::InsufficientStorage);
                }
            }
            let dir = Arc::clone(&user.dir);
            let file = blocking_as(user.run_as, move || {
                let mut o = cap_std::fs::OpenOptions::new();
                o.read(options.read)
                    .write(options.write)
                    .append(options.append)
                    .truncate(options.truncate)
                    .create(options.create)
                    .create_new(options.create_new);
                let f = dir.open_with(&rel, &o)?;
                if writing && f.metadata()?.is_dir() {
                    return Err(std::io::ErrorKind::IsADirectory.into());
                }
                Ok(f.into_std())
            })
            .await?;
            if !writing {
                room = None;
            }
            Ok(Box::new(File {
                file: Arc::new(file),
                room,
                wrote: false,
                user: user.name.clone(),
                spaces: Arc::clone(&self.spaces),
            }) as Box<dyn DavFile>)
        })
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        meta: ReadDirMeta,
        user: &'a DavUser,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        Box::pin(async move {
            let rel = rel(path)?;
            let dir = Arc::clone(&user.dir);
            let entries = blocking_as(user.run_as, move || {
                let mut out = Vec::new();
                for e in dir.read_dir(&rel)? {
                    let e = e?;
                    let name = e.file_name();
                    if name.to_string_lossy().starts_with(UPLOAD_PREFIX) {
                        continue;
                    }
                    let m = match meta {
                        // Follows a symlink only as far as the space reaches.
                        ReadDirMeta::Data => dir.metadata(rel.join(&name)),
                        ReadDirMeta::DataSymlink | ReadDirMeta::None => e.metadata(),
                    };
                    out.push(Entry {
                        name: name.into_encoded_bytes(),
                        meta: m.map(Meta::from).map_err(fs_error),
                    });
                }
                Ok(out)
            })
            .await?;
            let stream = tokio_stream::iter(
                entries
                    .into_iter()
                    .map(|e| Ok(Box::new(e) as Box<dyn DavDirEntry>)),
            );
            Ok(Box::pin(stream) as FsStream<Box<dyn DavDirEntry>>)
        })
    }

    fn metadata<'a>(
        &'a self,
        path: &'a DavPath,
        user: &'a DavUser,
    ) -> FsFuture<'a, Box<dyn DavMetaData>> {
        Box::pin(meta(path, user, true))
    }

    fn symlink_metadata<'a>(
        &'a self,
        path: &'a DavPath,
        user: &'a DavUser,
    ) -> FsFuture<'a, Box<dyn DavMetaData>> {
        Box::pin(meta(path, user, false))
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath, user: &'a DavUser) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let rel = rel(path)?;
            let dir = Arc::clone(&user.dir);
            blocking_as(user.run_as, move || dir.create_dir(&rel)).await
        })
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath, user: &'a DavUser) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let rel = rel(path)?;
            // The space itself (api/dav.rs refuses such requests up front).
            if rel.as_os_str() == "." {
                return Err(FsError::Forbidden);
            }
            let dir = Arc::clone(&user.dir);
            blocking_as(user.run_as, move || dir.remove_dir(&rel)).await?;
            self.changed(&user.name);
            Ok(())
        })
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath, user: &'a DavUser) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let rel = rel(path)?;
            let dir = Arc::clone(&user.dir);
            blocking_as(user.run_as, move || dir.remove_file(&rel)).await?;
            self.changed(&user.name);
            Ok(())
        })
    }

    fn rename<'a>(
        &'a self,
        from: &'a DavPath,
        to: &'a DavPath,
        user: &'a DavUser,
    ) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let (from, to) = (rel(from)?, rel(to)?);
            if from.as_os_str() == "." || to.as_os_str() == "." {
                return Err(FsError::Forbidden);
            }
            let dir = Arc::clone(&user.dir);
            blocking_as(user.run_as, move || dir.rename(&from, &dir, &to)).await
        })
    }

    fn copy<'a>(
        &'a self,
        from: &'a DavPath,
        to: &'a DavPath,
        user: &'a DavUser,
    ) -> FsFuture<'a, ()> {
        Box::pin(async move {
            let (from, to) = (rel(from)?, rel(to)?);
            let room = self.room(&user.name).await?;
            let dir = Arc::clone(&user.dir);
            let r = blocking_as(user.run_as, move || {
                let size = dir.metadata(&from)?.len();
                if room.is_some_and(|r| size > r) {
                    return Err(std::io::ErrorKind::QuotaExceeded.into());
                }
                dir.copy(&from, &dir, &to).map(|_| ())
            })
            .await;
            self.changed(&user.name);
            r
        })
    }

    fn get_quota<'a>(&'a self, user: &'a DavUser) -> FsFuture<'a, (u64, Option<u64>)> {
        Box::pin(async move {
            let u = self.usage(&user.name).await?;
            Ok((u.used_bytes, u.quota_bytes))
        })
    }
}
