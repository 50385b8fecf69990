//! Users' spaces: one folder per user under `<data>/spaces/`, browsed,
//! filled and emptied through the API and the CLI. Every file system call
//! goes through a capability handle on the user's folder (cap-std), so no
//! path — `..`, absolute, or a symlink planted inside pointing out — can
//! reach outside it.

pub mod datasets;
pub mod dav;
pub mod paths;
pub mod snapshot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use datasets::{DatasetView, Datasets};
pub use paths::SpacePath;

#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "quota exceeded: the space of {user} would hold {would} bytes, its quota is {quota} bytes"
    )]
    Quota {
        user: String,
        would: u64,
        quota: u64,
    },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl SpaceError {
    pub(crate) fn io<'a>(
        action: &'static str,
        path: &'a SpacePath,
    ) -> impl FnOnce(std::io::Error) -> SpaceError + 'a {
        move |source| match source.kind() {
            std::io::ErrorKind::NotFound => SpaceError::NotFound(path.display()),
            // A link or file where a folder is needed on the way.
            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory => {
                SpaceError::Conflict(format!(
                    "{} cannot be made there: something on its way is not a folder of your space",
                    path.display()
                ))
            }
            std::io::ErrorKind::DirectoryNotEmpty => SpaceError::Conflict(format!(
                "{} is not empty (remove it recursively)",
                path.display()
            )),
            std::io::ErrorKind::IsADirectory => {
                SpaceError::Conflict(format!("{} is a folder", path.display()))
            }
            // cap-std's answer to a path (or symlink) that leads outside.
            std::io::ErrorKind::PermissionDenied => {
                SpaceError::Invalid(format!("{} leads outside your space", path.display()))
            }
            _ => SpaceError::Io {
                action,
                path: path.display(),
                source,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub name: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub size: u64,
    pub modified_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub user: String,
    pub used_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
}

/// How long a measured usage is trusted before the space is walked again
/// (tasks write into spaces too).
const USAGE_TTL: Duration = Duration::from_secs(30);

pub struct Spaces {
    root: PathBuf,
    quota: Option<u64>,
    usage: Mutex<HashMap<String, (Instant, u64)>>,
    /// Each user's uid: their files are made and changed as them.
    identities: Option<std::sync::Arc<crate::identity::Identities>>,
}

impl Spaces {
    pub fn new(root: PathBuf, quota: Option<u64>) -> Self {
        Spaces {
            root,
            quota,
            usage: Mutex::new(HashMap::new()),
            identities: None,
        }
    }

    pub fn with_identities(mut self, ids: std::sync::Arc<crate::identity::Identities>) -> Self {
        self.identities = Some(ids);
        self
    }

    /// Who `user` is on the machine, for WebDAV's own file operations.
    pub fn run_as(&self, user: &str) -> Result<Option<kiln_engine::local::RunAs>, SpaceError> {
        match &self.identities {
            None => Ok(None),
            Some(ids) => ids.run_as(user).map_err(|e| SpaceError::Io {
                action: "find the uid of",
                path: user.to_owned(),
                source: std::io::Error::other(e),
            }),
        }
    }

    /// The calling thread's file operations run as `user` until the guard
    /// is dropped: what it makes is theirs, and only what they may touch
    /// can be touched (see identity::ActingAs).
    pub fn acting_as(&self, user: &str) -> Result<crate::identity::ActingAs, SpaceError> {
        Ok(crate::identity::ActingAs::new(self.run_as(user)?))
    }

    pub fn quota(&self) -> Option<u64> {
        self.quota
    }

    /// The user's folder on disk (created on first use).
    pub fn folder(&self, user: &str) -> Result<PathBuf, SpaceError> {
        kiln_spec::ids::check_user_name(user).map_err(SpaceError::Invalid)?;
        let path = self.root.join(user);
        if !path.is_dir() {
            std::fs::create_dir_all(&path).map_err(|source| SpaceError::Io {
                action: "create",
                path: path.display().to_string(),
                source,
            })?;
            if let Some(id) = self.run_as(user)? {
                crate::identity::give(&path, id, 0o700).map_err(|e| SpaceError::Io {
                    action: "give",
                    path: path.display().to_string(),
                    source: std::io::Error::other(e),
                })?;
            }
        }
        Ok(path)
    }

    /// A capability handle on the user's folder: every path goes through it.
    pub fn dir(&self, user: &str) -> Result<Dir, SpaceError> {
        let path = self.folder(user)?;
        Dir::open_ambient_dir(&path, ambient_authority()).map_err(|source| SpaceError::Io {
            action: "open",
            path: path.display().to_string(),
            source,
        })
    }

    pub fn list(&self, user: &str, p: &SpacePath) -> Result<Vec<Entry>, SpaceError> {
        let dir = self.dir(user)?;
        let _as = self.acting_as(user)?;
        let meta = dir.metadata(p.rel()).map_err(SpaceError::io("read", p))?;
        if !meta.is_dir() {
            return Err(SpaceError::Conflict(format!(
                "{} is a file, not a folder",
                p.display()
            )));
        }
        let mut out = Vec::new();
        for e in dir.read_dir(p.rel()).map_err(SpaceError::io("list", p))? {
            let e = e.map_err(SpaceError::io("list", p))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(m) = e.metadata() else { continue };
            let kind = if m.is_symlink() {
                "symlink"
            } else if m.is_dir() {
                "dir"
            } else {
                "file"
            };
            let modified_at_ms = m
                .modified()
                .ok()
                .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64);
            out.push(Entry {
                name,
                kind: kind.into(),
                size: if m.is_dir() { 0 } else { m.len() },
                modified_at_ms,
            });
        }
        out.sort_by(|a, b| (a.kind != "dir", &a.name).cmp(&(b.kind != "dir", &b.name)));
        Ok(out)
    }

    /// Whether `p` is a folder (false for a file); NotFound when absent.
    pub fn is_dir(&self, user: &str, p: &SpacePath) -> Result<bool, SpaceError> {
        let dir = self.dir(user)?;
        let _as = self.acting_as(user)?;
        Ok(dir
            .metadata(p.rel())
            .map_err(SpaceError::io("read", p))?
            .is_dir())
    }

    /// Opens a file for reading.
    pub fn open(&self, user: &str, p: &SpacePath) -> Result<(std::fs::File, u64), SpaceError> {
        let dir = self.dir(user)?;
        let _as = self.acting_as(user)?;
        let f = dir.open(p.rel()).map_err(SpaceError::io("open", p))?;
        let meta = f.metadata().map_err(SpaceError::io("read", p))?;
        if meta.is_dir() {
            return Err(SpaceError::Conflict(format!(
                "{} is a folder; list it instead",
                p.display()
            )));
        }
        Ok((f.into_std(), meta.len()))
    }

    pub fn mkdir(&self, user: &str, p: &SpacePath) -> Result<(), SpaceError> {
        if p.is_root() {
            return Ok(());
        }
        let dir = self.dir(user)?;
        let _as = self.acting_as(user)?;
        dir.create_dir_all(p.rel())
            .map_err(SpaceError::io("create", p))
    }

    pub fn remove(&self, user: &str, p: &SpacePath, recursive: bool) -> Result<(), SpaceError> {
        if p.is_root() {
            return Err(SpaceError::Invalid(
                "the space itself cannot be removed".into(),
            ));
        }
        let dir = self.dir(user)?;
        let _as = self.acting_as(user)?;
        let meta = dir
            .symlink_metadata(p.rel())
            .map_err(SpaceError::io("read", p))?;
        let r = if meta.is_dir() {
            if recursive {
                dir.remove_dir_all(p.rel())
            } else {
                dir.remove_dir(p.rel())
            }
        } else {
            dir.remove_file(p.rel())
        };
        self.forget_usage(user);
        r.map_err(SpaceError::io("remove", p))
    }

    pub fn rename(&self, user: &str, from: &SpacePath, to: &SpacePath) -> Result<(), SpaceError> {
        if from.is_root() || to.is_root() {
            return Err(SpaceError::Invalid(
                "the space itself cannot be moved".into(),
            ));
        }
        let dir = self.dir(user)?;
        let _as = self.acting_as(user)?;
        dir.symlink_metadata(from.rel())
            .map_err(SpaceError::io("read", from))?;
        if dir.symlink_metadata(to.rel()).is_ok() {
            return Err(SpaceError::Conflict(format!(
                "{} already exists",
                to.display()
            )));
        }
        dir.create_dir_all(to.parent().rel())
            .map_err(SpaceError::io("create", &to.parent()))?;
        dir.rename(from.rel(), &dir, to.rel())
            .map_err(SpaceError::io("move", from))
    }

    /// Creates a hidden temporary file beside `p` for an upload, making the
    /// folders on the way. Returns its path in the space and the file.
    pub fn upload_target(
        &self,
        user: &str,
        p: &SpacePath,
    ) -> Result<(SpacePath, std::fs::File), SpaceError> {
        if p.is_root() {
            return Err(SpaceError::Invalid(
                "give the file's path in your space".into(),
            ));
        }
        let dir = self.dir(user)?;
        let _as = self.acting_as(user)?;
        if dir.metadata(p.rel()).is_ok_and(|m| m.is_dir()) {
            return Err(SpaceError::Conflict(format!("{} is a folder", p.display())));
        }
        let parent = p.parent();
        dir.create_dir_all(parent.rel())
            .map_err(SpaceError::io("create", &parent))?;
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| SpaceError::Invalid(e.to_string()))?;
        let tmp = SpacePath::parse(&format!(
            "{}/.kiln-upload-{}",
            parent.display(),
            hex::encode(rnd)
        ))
        .map_err(SpaceError::Invalid)?;
        let f = dir
            .create(tmp.rel())
            .map_err(SpaceError::io("create", &tmp))?;
        Ok((tmp, f.into_std()))
    }

    /// Moves a finished upload into place.
    pub fn commit_upload(
        &self,
        user: &str,
        tmp: &SpacePath,
        p: &SpacePath,
        bytes: u64,
    ) -> Result<(), SpaceError> {
        let dir = self.dir(user)?;
        let _as = self.acting_as(user)?;
        dir.rename(tmp.rel(), &dir, p.rel())
            .map_err(SpaceError::io("write", p))?;
        if let Ok(mut u) = self.usage.lock() {
            if let Some((_, used)) = u.get_mut(user) {
                *used += bytes;
            }
        }
        Ok(())
    }

    pub fn discard_upload(&self, user: &str, tmp: &SpacePath) {
        if let Ok(dir) = self.dir(user) {
            let _as = self.acting_as(user);
            let _ = dir.remove_file(tmp.rel());
        }
    }

    /// Bytes in the user's space (files, not following symlinks).
    pub fn usage(&self, user: &str) -> Result<Usage, SpaceError> {
        if let Ok(u) = self.usage.lock() {
            if let Some((at, used)) = u.get(user) {
                if at.elapsed() < USAGE_TTL {
                    return Ok(Usage {
                        user: user.to_owned(),
                        used_bytes: *used,
                        quota_bytes: self.quota,
                    });
                }
            }
        }
        let used = walk_size(&self.folder(user)?);
        if let Ok(mut u) = self.usage.lock() {
            u.insert(user.to_owned(), (Instant::now(), used));
        }
        Ok(Usage {
            user: user.to_owned(),
            used_bytes: used,
            quota_bytes: self.quota,
        })
    }

    fn forget_usage(&self, user: &str) {
        if let Ok(mut u) = self.usage.lock() {
            u.remove(user);
        }
    }

    /// Refuses a write that would take the space past its quota.
    pub fn check_quota(&self, user: &str, used: u64, adding: u64) -> Result<(), SpaceError> {
        match self.quota {
            Some(q) if used.saturating_add(adding) > q => Err(SpaceError::Quota {
                user: user.to_owned(),
                would: used.saturating_add(adding),
                quota: q,
            }),
            _ => Ok(()),
        }
    }
}

fn walk_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> SpacePath {
        SpacePath::parse(s).expect("path")
    }

    #[test]
    fn files_live_and_die_inside_the_space() {
        let tmp = tempfile::tempdir().expect("tmp");
        let spaces = Spaces::new(tmp.path().to_owned(), Some(1000));
        spaces.mkdir("alice", &p("code/mnist")).expect("mkdir");
        let (t, mut f) = spaces
            .upload_target("alice", &p("code/mnist/train.py"))
            .expect("target");
        std::io::Write::write_all(&mut f, b"print(1)\n").expect("write");
        spaces
            .commit_upload("alice", &t, &p("code/mnist/train.py"), 9)
            .expect("commit");
        let ls = spaces.list("alice", &p("code/mnist")).expect("list");
        assert_eq!(ls.len(), 1);
        assert_eq!((ls[0].name.as_str(), ls[0].size), ("train.py", 9));
        assert_eq!(spaces.usage("alice").expect("usage").used_bytes, 9);
        spaces
            .rename("alice", &p("code/mnist"), &p("mnist"))
            .expect("mv");
        assert!(spaces.open("alice", &p("mnist/train.py")).is_ok());
        assert!(matches!(
            spaces.remove("alice", &p("mnist"), false),
            Err(SpaceError::Conflict(m)) if m.contains("not empty")
        ));
        spaces.remove("alice", &p("mnist"), true).expect("rm -r");
        assert!(matches!(
            spaces.open("alice", &p("mnist/train.py")),
            Err(SpaceError::NotFound(_))
        ));
        // Another user's space is another folder.
        assert!(spaces.list("bob", &p("")).expect("empty").is_empty());
        assert!(spaces.check_quota("alice", 900, 101).is_err());
        assert!(spaces.check_quota("alice", 900, 100).is_ok());
    }

    #[test]
    fn symlinks_planted_in_a_space_do_not_lead_out() {
        let tmp = tempfile::tempdir().expect("tmp");
        let secret = tmp.path().join("secret.txt");
        std::fs::write(&secret, "secret").expect("write");
        let spaces = Spaces::new(tmp.path().join("spaces"), None);
        let home = spaces.folder("alice").expect("folder");
        std::os::unix::fs::symlink(&secret, home.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../secret.txt", home.join("rel")).expect("symlink");
        std::os::unix::fs::symlink("/", home.join("root")).expect("symlink");
        for link in ["abs", "rel", "root/etc/passwd"] {
            assert!(
                spaces.open("alice", &p(link)).is_err(),
                "{link} must not open"
            );
        }
        assert!(spaces.list("alice", &p("root")).is_err());
        assert!(spaces.upload_target("alice", &p("root/tmp/x")).is_err());
        assert!(spaces.mkdir("alice", &p("root/tmp/newdir")).is_err());
        assert!(!std::path::Path::new("/tmp/newdir").exists());
        // Removing the link removes the link, not what it points at.
        spaces.remove("alice", &p("abs"), false).expect("rm link");
        assert!(secret.exists());
    }

    #[test]
    fn user_names_are_checked_before_they_become_folders() {
        let tmp = tempfile::tempdir().expect("tmp");
        let spaces = Spaces::new(tmp.path().to_owned(), None);
        for bad in ["..", "a/b", "", ".hidden"] {
            assert!(spaces.folder(bad).is_err(), "{bad:?}");
        }
    }
}
