//! Where things live in the data folder. One place, so the control loop,
//! the API and `kiln rm` agree.
//!
//! ```text
//! <data>/kiln.db                 the store
//! <data>/admin.token             the admin's API token (0600)
//! <data>/instance                this installation's id (cgroup names)
//! <data>/spaces/<user>/          each user's files
//! <data>/datasets/<name>/        shared read-only datasets
//! <data>/jobs/<key>/output/      KILN_OUTPUT_DIR, default working folder
//! <data>/jobs/<key>/metrics.json  resource and training series
//! <data>/jobs/<key>/code/        the job's codeDir as it was at submission
//! <data>/staging/                codeDir copies not yet given to a job
//! <data>/jobs/<key>/attempt-<n>/<task>[.<gen>]/   one task run (TaskDir)
//! ```
//!
//! With `--engine slurm --shared DIR`, what tasks on other nodes reach lives
//! under DIR instead (the same path on the server and every node): `spaces/`,
//! `datasets/`, `jobs/` and `staging/` (beside `jobs/`, so a codeDir copy is
//! renamed into its job on one file system). The store, the tokens, the
//! instance id and the boards' folders stay in the data folder, on local
//! disk: SQLite must not live on NFS.

use std::path::{Path, PathBuf};

use kiln_spec::TaskId;

/// The first folder on the way to `path` that other uids cannot pass
/// (no execute bit for others), if any.
pub fn closed_ancestor(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
        .map(Path::to_path_buf)
}

/// Where sandboxed tasks see their owner's space (Crater's convention).
pub const SPACE_INSIDE: &str = "/mnt";

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    /// Where spaces, datasets and jobs live: the data folder, or the
    /// shared path every node sees.
    files: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            files: root.clone(),
            root,
        }
    }

    /// Spaces, datasets and jobs under `shared` (absolute, the same on every
    /// node); the store and tokens stay in the data folder.
    pub fn with_shared(mut self, shared: impl Into<PathBuf>) -> Self {
        self.files = shared.into();
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The shared path, when spaces and jobs live on one.
    pub fn shared(&self) -> Option<&Path> {
        (self.files != self.root).then_some(self.files.as_path())
    }

    /// Every job's folder (`jobs/`).
    pub fn jobs(&self) -> PathBuf {
        self.files.join("jobs")
    }

    /// Closes the data folder to the uids tasks run as: they may pass
    /// through it (bwrap reaches each task's mount points and /tmp by path)
    /// but list nothing, and read neither the store nor the tokens. Their
    /// spaces are their own (see `identity`).
    pub fn restrict(&self) {
        let mode = crate::identity::set_mode;
        for dir in [self.spaces(), self.jobs()] {
            let _ = std::fs::create_dir_all(&dir);
            mode(&dir, 0o711);
        }
        mode(&self.root, 0o711);
        if let Some(shared) = self.shared() {
            mode(shared, 0o711);
        }
        for f in ["kiln.db", "kiln.db-wal", "kiln.db-shm", "admin.token"] {
            mode(&self.root.join(f), 0o600);
        }
        // Boards run as their owner and reach their own folder in here.
        for (dir, m) in [
            (self.root.join("tensorboard"), 0o711),
            (self.staging(), 0o700),
        ] {
            let _ = std::fs::create_dir_all(&dir);
            mode(&dir, m);
        }
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("kiln.db")
    }

    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin.token")
    }

    pub fn instance(&self) -> PathBuf {
        self.root.join("instance")
    }

    pub fn datasets(&self) -> PathBuf {
        self.files.join("datasets")
    }

    pub fn spaces(&self) -> PathBuf {
        self.files.join("spaces")
    }

    pub fn job(&self, key: i64) -> PathBuf {
        self.jobs().join(key.to_string())
    }

    pub fn code(&self, key: i64) -> PathBuf {
        self.job(key).join("code")
    }

    pub fn staging(&self) -> PathBuf {
        self.files.join("staging")
    }

    pub fn output(&self, key: i64) -> PathBuf {
        self.job(key).join("output")
    }

    /// The job's output folder on the host and as its tasks see it.
    /// Sandboxed, it is in the owner's space (OpenPAI's outputDir, by
    /// default Output/<name>); otherwise a folder of the job's own.
    pub fn outputs(
        &self,
        key: i64,
        job: &kiln_spec::JobId,
        output_dir: Option<&str>,
        sandboxed: bool,
    ) -> (PathBuf, PathBuf) {
        if sandboxed {
            let rel = output_dir
                .map(str::to_owned)
                .unwrap_or_else(|| format!("Output/{}", job.name()));
            (
                self.spaces().join(job.user()).join(&rel),
                Path::new(SPACE_INSIDE).join(&rel),
            )
        } else {
            let o = self.output(key);
            (o.clone(), o)
        }
    }

    /// A job's TensorBoard process's own folder: its socket and its /tmp.
    /// In the data folder, so sandboxed tasks never reach the socket.
    pub fn board(&self, key: i64) -> PathBuf {
        self.root.join("tensorboard").join(key.to_string())
    }

    /// `KILN_TENSORBOARD_DIR`: where in its output folder a job writes
    /// TensorBoard event files, and where kiln reads them.
    pub fn tensorboard(output: &Path) -> PathBuf {
        output.join("tensorboard")
    }

    pub fn metrics(&self, key: i64) -> PathBuf {
        self.job(key).join("metrics.json")
    }

    pub fn attempt(&self, key: i64, attempt: u32) -> PathBuf {
        self.job(key).join(format!("attempt-{attempt}"))
    }

    /// Generation 0 is the task's first run in the attempt; in-place
    /// restarts and relaunches after a restart of kiln get fresh folders.
    pub fn task(&self, key: i64, attempt: u32, task: &TaskId, gen: u32) -> PathBuf {
        let name = if gen == 0 {
            task.to_string()
        } else {
            format!("{task}.{gen}")
        };
        self.attempt(key, attempt).join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_a_shared_path_files_go_there_and_the_store_stays() {
        let l = Layout::new("/var/lib/kiln").with_shared("/nfs/kiln");
        assert_eq!(l.db(), Path::new("/var/lib/kiln/kiln.db"));
        assert_eq!(l.admin_token(), Path::new("/var/lib/kiln/admin.token"));
        assert_eq!(l.board(3), Path::new("/var/lib/kiln/tensorboard/3"));
        assert_eq!(l.spaces(), Path::new("/nfs/kiln/spaces"));
        assert_eq!(l.datasets(), Path::new("/nfs/kiln/datasets"));
        assert_eq!(l.staging(), Path::new("/nfs/kiln/staging"));
        assert_eq!(l.output(3), Path::new("/nfs/kiln/jobs/3/output"));
        assert_eq!(l.shared(), Some(Path::new("/nfs/kiln")));
        assert_eq!(Layout::new("/var/lib/kiln").shared(), None);
    }

    #[test]
    fn a_folder_others_cannot_pass_on_the_way_is_found() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().expect("tmp");
        let closed = t.path().join("home");
        std::fs::create_dir_all(closed.join("x/data")).expect("mkdir");
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(
            closed_ancestor(&closed.join("x/data")),
            Some(closed.clone())
        );
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        assert_eq!(closed_ancestor(&closed.join("x/data")), None);
    }
}
