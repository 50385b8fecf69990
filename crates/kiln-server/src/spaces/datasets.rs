//! Datasets: named, shared, read-only folders under `<data>/datasets/`. The
//! admin makes one by handing over a folder of their space (moved, not
//! copied, so a large dataset costs nothing); jobs mount them by name.

use std::path::PathBuf;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{SpaceError, SpacePath, Spaces};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetView {
    pub name: String,
    /// Where jobs see it unless they say otherwise.
    pub default_target: String,
}

pub struct Datasets {
    root: PathBuf,
}

impl Datasets {
    pub fn new(root: PathBuf) -> Self {
        Datasets { root }
    }

    fn check(name: &str) -> Result<(), SpaceError> {
        kiln_spec::ids::check_job_name(name)
            .map_err(|m| SpaceError::Invalid(format!("dataset name: {m}")))
    }

    /// The host folder of a dataset, if it exists.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        Self::check(name).ok()?;
        let p = self.root.join(name);
        p.is_dir().then_some(p)
    }

    pub fn list(&self) -> Vec<DatasetView> {
        let mut out: Vec<DatasetView> = std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        DatasetView {
                            default_target: format!("/mnt/{name}"),
                            name,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Moves `from` out of `user`'s space to become dataset `name`.
    pub fn adopt(
        &self,
        spaces: &Spaces,
        user: &str,
        from: &SpacePath,
        name: &str,
    ) -> Result<(), SpaceError> {
        Self::check(name)?;
        if from.is_root() {
            return Err(SpaceError::Invalid(
                "give a folder of your space, not the space itself".into(),
            ));
        }
        std::fs::create_dir_all(&self.root).map_err(|source| SpaceError::Io {
            action: "create",
            path: self.root.display().to_string(),
            source,
        })?;
        let datasets =
            Dir::open_ambient_dir(&self.root, ambient_authority()).map_err(|source| {
                SpaceError::Io {
                    action: "open",
                    path: self.root.display().to_string(),
                    source,
                }
            })?;
        if datasets.symlink_metadata(name).is_ok() {
            return Err(SpaceError::Conflict(format!(
                "dataset {name} already exists"
            )));
        }
        if !spaces.is_dir(user, from)? {
            return Err(SpaceError::Conflict(format!(
                "{} is a file, not a folder",
                from.display()
            )));
        }
        let space = spaces.dir(user)?;
        space
            .rename(from.rel(), &datasets, name)
            .map_err(SpaceError::io("move", from))
    }

    pub fn remove(&self, name: &str) -> Result<(), SpaceError> {
        let p = self
            .path(name)
            .ok_or_else(|| SpaceError::NotFound(format!("dataset {name}")))?;
        std::fs::remove_dir_all(&p).map_err(|source| SpaceError::Io {
            action: "remove",
            path: p.display().to_string(),
            source,
        })
    }
}
