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
//! <data>/jobs/<key>/code/        the job's codeDir as it was at submission
//! <data>/staging/                codeDir copies not yet given to a job
//! <data>/jobs/<key>/attempt-<n>/<task>[.<gen>]/   one task run (TaskDir)
//! ```

use std::path::{Path, PathBuf};

use kiln_spec::TaskId;

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
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
        self.root.join("datasets")
    }

    pub fn spaces(&self) -> PathBuf {
        self.root.join("spaces")
    }

    pub fn job(&self, key: i64) -> PathBuf {
        self.root.join("jobs").join(key.to_string())
    }

    pub fn code(&self, key: i64) -> PathBuf {
        self.job(key).join("code")
    }

    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }

    pub fn output(&self, key: i64) -> PathBuf {
        self.job(key).join("output")
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
