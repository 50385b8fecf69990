//! `/api/v1/datasets`: everyone lists them; the admin makes and removes them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{Body, P};
use super::{AppState, Caller, Problem};
use crate::spaces::{DatasetView, SpacePath};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDataset {
    name: String,
    /// A folder of the admin's space; it is moved to become the dataset.
    from_space: String,
}

#[utoipa::path(get, path = "/api/v1/datasets", tag = "datasets",
    responses((status = 200, body = Vec<DatasetView>), (status = 401, body = Problem)))]
/// Every dataset, for jobs to mount by name.
pub async fn list(
    _caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<DatasetView>>, Problem> {
    let datasets = Arc::clone(&state.datasets);
    tokio::task::spawn_blocking(move || datasets.list())
        .await
        .map(Json)
        .map_err(|e| Problem::internal(e.to_string()))
}

#[utoipa::path(post, path = "/api/v1/datasets", tag = "datasets", request_body = NewDataset,
    responses((status = 201, body = DatasetView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
/// Makes a dataset of a folder of the admin's space (admin only).
pub async fn add(
    caller: Caller,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<(StatusCode, Json<DatasetView>), Problem> {
    if !caller.is_admin {
        return Err(Problem::not_found("no such resource"));
    }
    let req: NewDataset = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(format!(
            "body: expected {{\"name\": ..., \"fromSpace\": ...}}: {e}"
        ))
    })?;
    let from = SpacePath::parse(&req.from_space).map_err(|m| Problem::field("fromSpace", m))?;
    let (datasets, spaces, name) = (
        Arc::clone(&state.datasets),
        Arc::clone(&state.spaces),
        req.name.clone(),
    );
    tokio::task::spawn_blocking(move || datasets.adopt(&spaces, &caller.name, &from, &name))
        .await
        .map_err(|e| Problem::internal(e.to_string()))??;
    Ok((
        StatusCode::CREATED,
        Json(DatasetView {
            default_target: format!("/mnt/{}", req.name),
            name: req.name,
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/datasets/{name}", tag = "datasets",
    params(("name" = String, Path, description = "dataset name")),
    responses((status = 204, description = "removed"), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// Removes a dataset and its files (admin only).
pub async fn remove(
    caller: Caller,
    State(state): State<AppState>,
    P(name): P<String>,
) -> Result<StatusCode, Problem> {
    if !caller.is_admin {
        return Err(Problem::not_found("no such resource"));
    }
    let datasets = Arc::clone(&state.datasets);
    tokio::task::spawn_blocking(move || datasets.remove(&name))
        .await
        .map_err(|e| Problem::internal(e.to_string()))??;
    Ok(StatusCode::NO_CONTENT)
}
