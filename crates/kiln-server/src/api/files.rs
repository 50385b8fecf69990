//! `/api/v1/files/...`: the caller's space — list, download, upload
//! (streamed to disk, never held in memory), make folders, move, delete —
//! and `/api/v1/space` for its size against the quota. The admin may pass
//! `?user=` to work in someone else's space.

use std::sync::Arc;

use axum::body::Body as RawBody;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use utoipa::{IntoParams, ToSchema};

use super::extract::{P, Q};
use super::{AppState, Caller, Problem};
use crate::spaces::{Entry, SpaceError, SpacePath, Spaces, Usage};

impl From<SpaceError> for Problem {
    fn from(e: SpaceError) -> Self {
        match e {
            SpaceError::Invalid(m) => Problem::bad_request(m),
            SpaceError::NotFound(_) => Problem::not_found(e.to_string()),
            SpaceError::Conflict(m) => Problem::conflict(m),
            SpaceError::Quota { .. } => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
            SpaceError::Io { .. } => Problem::internal(e.to_string()),
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// Whose space (the admin only; default: your own).
    user: Option<String>,
    /// POST: `mkdir`, or `move` (with `to`).
    op: Option<String>,
    /// POST with op=move: the new path.
    to: Option<String>,
    /// DELETE: remove a folder with everything in it.
    #[serde(default)]
    recursive: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    pub path: String,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    pub path: String,
    pub size: u64,
}

/// The space being worked on: the caller's, or (admin) the one named.
fn owner(caller: &Caller, asked: Option<String>) -> Result<String, Problem> {
    match asked.filter(|u| !u.is_empty()) {
        Some(u) if u != caller.name && !caller.is_admin => {
            Err(Problem::not_found(format!("no space of {u}")))
        }
        Some(u) => Ok(u),
        None => Ok(caller.name.clone()),
    }
}

async fn on_disk<T: Send + 'static>(
    spaces: &Arc<Spaces>,
    f: impl FnOnce(&Spaces) -> Result<T, SpaceError> + Send + 'static,
) -> Result<T, Problem> {
    let spaces = Arc::clone(spaces);
    tokio::task::spawn_blocking(move || f(&spaces))
        .await
        .map_err(|e| Problem::internal(e.to_string()))?
        .map_err(Problem::from)
}

fn parse(path: &str) -> Result<SpacePath, Problem> {
    SpacePath::parse(path).map_err(Problem::bad_request)
}

#[utoipa::path(get, path = "/api/v1/space", tag = "files", params(FileQuery),
    responses((status = 200, body = Usage), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// How much the space holds, and its quota.
pub async fn usage(
    caller: Caller,
    State(state): State<AppState>,
    Q(q): Q<FileQuery>,
) -> Result<Json<Usage>, Problem> {
    let user = owner(&caller, q.user)?;
    Ok(Json(on_disk(&state.spaces, move |s| s.usage(&user)).await?))
}

pub async fn get_root(
    caller: Caller,
    state: State<AppState>,
    q: Q<FileQuery>,
) -> Result<Response, Problem> {
    get(caller, state, P(String::new()), q).await
}

#[utoipa::path(get, path = "/api/v1/files/{path}", tag = "files",
    params(("path" = String, Path, description = "a path in the space"), FileQuery),
    responses((status = 200, description = "a folder's listing (JSON), or a file's bytes", body = Listing),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// Lists a folder or downloads a file.
pub async fn get(
    caller: Caller,
    State(state): State<AppState>,
    P(path): P<String>,
    Q(q): Q<FileQuery>,
) -> Result<Response, Problem> {
    let user = owner(&caller, q.user)?;
    let p = parse(&path)?;
    let (u, pp) = (user.clone(), p.clone());
    if on_disk(&state.spaces, move |s| s.is_dir(&u, &pp)).await? {
        let (u, pp) = (user, p.clone());
        let entries = on_disk(&state.spaces, move |s| s.list(&u, &pp)).await?;
        return Ok(Json(Listing {
            path: p.display(),
            entries,
        })
        .into_response());
    }
    let pp = p.clone();
    let (file, len) = on_disk(&state.spaces, move |s| s.open(&user, &pp)).await?;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                super::download::attachment(p.name().unwrap_or("file")),
            ),
        ],
        RawBody::from_stream(stream),
    )
        .into_response())
}

#[utoipa::path(put, path = "/api/v1/files/{path}", tag = "files",
    params(("path" = String, Path, description = "the file's path in the space; missing folders are made"), FileQuery),
    request_body(content = String, content_type = "application/octet-stream"),
    responses((status = 201, body = Written), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 409, body = Problem), (status = 413, description = "over the space's quota", body = Problem)))]
/// Uploads a file, streamed to disk; it appears whole or not at all.
pub async fn put(
    caller: Caller,
    State(state): State<AppState>,
    P(path): P<String>,
    Q(q): Q<FileQuery>,
    headers: HeaderMap,
    body: RawBody,
) -> Result<(StatusCode, Json<Written>), Problem> {
    let user = owner(&caller, q.user)?;
    let p = parse(&path)?;
    let u = user.clone();
    let used = on_disk(&state.spaces, move |s| s.usage(&u))
        .await?
        .used_bytes;
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    state.spaces.check_quota(&user, used, announced)?;
    let (u, pp) = (user.clone(), p.clone());
    let (tmp, file) = on_disk(&state.spaces, move |s| s.upload_target(&u, &pp)).await?;
    let mut file = tokio::fs::File::from_std(file);
    let mut stream = body.into_data_stream();
    let mut written: u64 = 0;
    let result: Result<(), Problem> = async {
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| Problem::bad_request(format!("the upload broke off: {e}")))?;
            written += chunk.len() as u64;
            state.spaces.check_quota(&user, used, written)?;
            file.write_all(&chunk)
                .await
                .map_err(|e| Problem::internal(format!("cannot write {}: {e}", p.display())))?;
        }
        file.flush()
            .await
            .map_err(|e| Problem::internal(format!("cannot write {}: {e}", p.display())))
    }
    .await;
    drop(file);
    if let Err(e) = result {
        let (u, t) = (user, tmp);
        let _ = on_disk(&state.spaces, move |s| {
            s.discard_upload(&u, &t);
            Ok(())
        })
        .await;
        return Err(e);
    }
    let (u, pp) = (user, p.clone());
    on_disk(&state.spaces, move |s| {
        s.commit_upload(&u, &tmp, &pp, written)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(Written {
            path: p.display(),
            size: written,
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/files/{path}", tag = "files",
    params(("path" = String, Path, description = "a path in the space"), FileQuery),
    responses((status = 200, description = "done"), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
/// `?op=mkdir` makes a folder (and its parents); `?op=move&to=P` moves.
pub async fn post(
    caller: Caller,
    State(state): State<AppState>,
    P(path): P<String>,
    Q(q): Q<FileQuery>,
) -> Result<StatusCode, Problem> {
    let user = owner(&caller, q.user)?;
    let p = parse(&path)?;
    match q.op.as_deref() {
        Some("mkdir") => on_disk(&state.spaces, move |s| s.mkdir(&user, &p)).await?,
        Some("move") => {
            let to = parse(
                q.to.as_deref()
                    .ok_or_else(|| Problem::bad_request("op=move needs to=PATH"))?,
            )?;
            on_disk(&state.spaces, move |s| s.rename(&user, &p, &to)).await?
        }
        other => {
            return Err(Problem::bad_request(format!(
                "op: use mkdir or move, got {}",
                other.unwrap_or("nothing")
            )))
        }
    }
    Ok(StatusCode::OK)
}

#[utoipa::path(delete, path = "/api/v1/files/{path}", tag = "files",
    params(("path" = String, Path, description = "a path in the space"), FileQuery),
    responses((status = 204, description = "removed"), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
/// Removes a file, an empty folder, or (`recursive=true`) a whole folder.
pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    P(path): P<String>,
    Q(q): Q<FileQuery>,
) -> Result<StatusCode, Problem> {
    let user = owner(&caller, q.user)?;
    let p = parse(&path)?;
    let recursive = q.recursive;
    on_disk(&state.spaces, move |s| s.remove(&user, &p, recursive)).await?;
    Ok(StatusCode::NO_CONTENT)
}
