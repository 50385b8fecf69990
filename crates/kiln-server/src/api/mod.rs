//! The HTTP API under `/api/v1` (DESIGN.md, "Contracts"). Handlers are thin:
//! they check who is asking, read the store or ask the control loop, and
//! shape the answer. Store calls run on the blocking pool.

pub mod datasets;
pub mod dav;
mod download;
mod extract;
pub mod files;
mod jobs;
mod logs;
mod metrics;
mod openapi;
mod problem;
mod queue_live;
pub mod queues;
pub mod registries;
mod sources;
mod tensorboard;
mod ui;
pub mod users;
pub mod views;

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::{any, get, post};
use axum::{Json, Router};
use kiln_store::{Store, StoreError};

use crate::auth::hash_token;
use crate::control::Control;
use crate::layout::Layout;
pub use problem::Problem;
pub use tensorboard::BoardsAt;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Who each user's tasks and file operations run as.
    pub identities: Arc<crate::identity::Identities>,
    pub control: Control,
    pub layout: Layout,
    pub spaces: Arc<crate::spaces::Spaces>,
    pub datasets: Arc<crate::spaces::Datasets>,
    /// What the local engine can honour (mounts, images).
    pub engine: crate::admission::Engine,
    pub dav: Arc<dav::Dav>,
    pub hub: Arc<crate::metrics::Hub>,
    pub prom: Arc<crate::metrics::prom::Prom>,
    pub boards: Arc<crate::tensorboard::Boards>,
    pub passes: Arc<crate::tensorboard::Passes>,
    /// Where boards are served: their own origin, never the UI's.
    pub boards_at: tensorboard::BoardsAt,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(|| async { "ok" }))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/jobs", post(jobs::submit).get(jobs::list))
        .route(
            "/api/v1/jobs/{id}",
            get(jobs::show).patch(jobs::patch).delete(jobs::delete),
        )
        .route("/api/v1/jobs/{id}/spec", get(jobs::spec))
        .route("/api/v1/jobs/{id}/events", get(jobs::events))
        .route("/api/v1/jobs/{id}/metrics", get(metrics::series))
        .route("/metrics", get(metrics::prometheus))
        .route(
            "/api/v1/jobs/{id}/tensorboard",
            post(tensorboard::start)
                .get(tensorboard::status)
                .delete(tensorboard::stop),
        )
        .route("/jobs/{id}/tensorboard", any(tensorboard::elsewhere))
        .route("/jobs/{id}/tensorboard/", any(tensorboard::elsewhere))
        .route(
            "/jobs/{id}/tensorboard/{*rest}",
            any(tensorboard::elsewhere),
        )
        .route("/api/v1/jobs/{id}/stop", post(jobs::stop))
        .route("/api/v1/jobs/{id}/clone", post(jobs::clone))
        .route("/api/v1/jobs/{id}/tasks/{task}/logs", get(logs::logs))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/space", get(files::usage))
        .route("/api/v1/datasets", get(datasets::list).post(datasets::add))
        .route(
            "/api/v1/datasets/{name}",
            axum::routing::delete(datasets::remove),
        )
        .route("/api/v1/files", get(files::get_root))
        .route("/api/v1/files/", get(files::get_root))
        .route(
            "/api/v1/files/{*path}",
            get(files::get)
                .put(files::put)
                .post(files::post)
                .delete(files::delete)
                // Uploads are streamed to disk; the quota bounds them.
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/dav", any(dav::serve))
        .route("/dav/", any(dav::serve))
        .route(
            "/dav/{*path}",
            any(dav::serve).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/api/v1/me", get(users::me))
        .route("/api/v1/login", post(users::login))
        .route("/api/v1/users", get(users::list).post(users::add))
        .route("/api/v1/queues", get(queues::list).post(queues::add))
        .route(
            "/api/v1/queues/{name}",
            get(queues::show)
                .patch(queues::patch)
                .delete(queues::remove),
        )
        .route("/api/v1/registries", get(registries::list))
        .route(
            "/api/v1/registries/{registry}",
            axum::routing::put(registries::put).delete(registries::remove),
        )
        .route("/api/v1/logout", post(users::logout))
        .route(
            "/api/v1/users/{name}/tokens",
            post(users::token).delete(users::revoke),
        )
        .route(
            "/api/v1/users/{name}/password",
            axum::routing::put(users::set_password),
        )
        .fallback(ui::fallback)
        .method_not_allowed_fallback(extract::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::time_request,
        ))
        .with_state(state)
}

/// The boards' own listener: TensorBoard pages and nothing else. A page
/// there runs in another origin than the UI, so a script in it cannot read
/// the UI's token or call the API as the person looking at it.
pub fn board_router(state: AppState) -> Router {
    Router::new()
        .route("/jobs/{id}/tensorboard", any(tensorboard::proxy))
        .route("/jobs/{id}/tensorboard/", any(tensorboard::proxy))
        .route("/jobs/{id}/tensorboard/{*rest}", any(tensorboard::proxy))
        .fallback(|| async {
            Problem::not_found(
                "this address serves TensorBoards only: /jobs/{user~name}/tensorboard/",
            )
        })
        .with_state(state)
}

/// Runs a store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Problem::internal(format!("store call panicked: {e}")))?
        .map_err(Problem::from)
}

/// Who is calling, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub is_admin: bool,
    /// The hash of the token it came with (`POST /logout` revokes it).
    pub token_hash: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(token) = header.strip_prefix("Bearer ").map(str::trim) else {
            return Err(Problem::unauthorized(
                "missing API token: send 'Authorization: Bearer <token>'",
            ));
        };
        let hash = hash_token(token);
        let store = Arc::clone(&state.store);
        let (h, now) = (hash.clone(), crate::now_ms());
        match blocking(move || store.user_by_token(&h, now)).await? {
            Some(u) => Ok(Caller {
                name: u.name,
                is_admin: u.is_admin,
                token_hash: hash,
            }),
            None => Err(Problem::unauthorized(
                "the API token is not valid (unknown, revoked, or a sign-in that expired)",
            )),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/nodes", tag = "cluster",
    responses((status = 200, description = "the machine(s): capacity, GPUs and who holds them, whether limits are enforced", body = Object),
        (status = 401, body = Problem)))]
/// The cluster as kiln sees it.
pub(crate) async fn nodes(
    _caller: Caller,
    State(state): State<AppState>,
) -> Json<serde_json::Value> {
    Json(serde_json::to_value(state.control.cluster()).unwrap_or_default())
}
