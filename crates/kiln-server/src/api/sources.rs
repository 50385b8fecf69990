//! The folders a job names in its owner's space or among the datasets
//! (mounts, OpenPAI's codeDir and dataDir): checked when the job is
//! submitted, so a typo is an error naming the field rather than a task
//! failing later; and codeDir copied, so the job runs the code as it was.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_spec::model::MountSource;
use kiln_spec::{Issue, JobSpec};
use tracing::warn;

use super::{AppState, Problem};
use crate::spaces::snapshot::CODE_LIMIT;
use crate::spaces::SpacePath;

/// Adds an error for each named folder that is not there.
pub(super) async fn check(
    state: &AppState,
    user: &str,
    spec: &JobSpec,
    errors: &mut Vec<Issue>,
) -> Result<(), Problem> {
    let mut folders: Vec<(String, String)> = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        match &m.source {
            MountSource::Dataset(name) => {
                if state.datasets.path(name).is_none() {
                    errors.push(Issue::new(
                        format!("mounts[{i}].dataset"),
                        format!("there is no dataset {name} (kiln dataset ls)"),
                    ));
                }
            }
            MountSource::Space(rel) => folders.push((format!("mounts[{i}].space"), rel.clone())),
        }
    }
    for (field, dir) in [("dataDir", &spec.data_dir), ("codeDir", &spec.code_dir)] {
        if let Some(d) = dir {
            folders.push((field.to_owned(), d.clone()));
        }
    }
    for (field, rel) in folders {
        let Ok(p) = SpacePath::parse(&rel) else {
            continue; // admission already named it
        };
        let (spaces, u) = (Arc::clone(&state.spaces), user.to_owned());
        let found = tokio::task::spawn_blocking(move || spaces.is_dir(&u, &p))
            .await
            .map_err(|e| Problem::internal(e.to_string()))?;
        if !matches!(found, Ok(true)) {
            errors.push(Issue::new(
                field,
                format!("there is no folder {rel} in your space"),
            ));
        }
    }
    Ok(())
}

/// Copies the job's codeDir to the staging folder; None without one.
pub(super) async fn stage_code(
    state: &AppState,
    user: &str,
    spec: &JobSpec,
) -> Result<Option<PathBuf>, Problem> {
    let Some(code) = &spec.code_dir else {
        return Ok(None);
    };
    let p = SpacePath::parse(code).map_err(|e| Problem::field("codeDir", e))?;
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| Problem::internal(e.to_string()))?;
    let dest = state.layout.staging().join(hex::encode(rnd));
    let (spaces, u, d) = (Arc::clone(&state.spaces), user.to_owned(), dest.clone());
    tokio::task::spawn_blocking(move || spaces.snapshot(&u, &p, &d, CODE_LIMIT))
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(|e| Problem::field("codeDir", e.to_string()))?;
    Ok(Some(dest))
}

/// Gives a staged copy to the stored job `key` (or drops it when the job
/// was not stored). Should this fail, the job binds the live folder.
pub(super) async fn place_code(state: &AppState, staged: PathBuf, key: Option<i64>) {
    let target = key.map(|k| state.layout.code(k));
    let r = tokio::task::spawn_blocking(move || match target {
        Some(t) => {
            if let Some(parent) = t.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&staged, &t)
        }
        None => std::fs::remove_dir_all(&staged),
    })
    .await;
    if !matches!(r, Ok(Ok(()))) {
        warn!(job_key = ?key, result = ?r, "cannot place the codeDir copy");
    }
}
