//! TensorBoard for a job: `POST /api/v1/jobs/{id}/tensorboard` starts it
//! and returns a sign-in link, `GET` says whether it runs, `DELETE` stops
//! it; the board itself is served under `/jobs/{user~name}/tensorboard/`
//! on the boards' own listener, behind a Bearer token or the cookie the
//! link's ticket is traded for.
//!
//! Boards get their own origin (another port) because a TensorBoard page
//! shows what a job wrote: served from the UI's origin, a script in it
//! could read the token of whoever looks at it and act as them.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_store::JobRecord;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::P;
use super::jobs::resolve;
use super::{AppState, Caller, Problem};
use crate::layout::Layout;
use crate::now_ms;
use crate::tensorboard::{BoardError, BoardSpec, Pass};

const COOKIE: &str = "kiln_tb";

/// Where the boards' listener is reached from outside.
#[derive(Debug, Clone)]
pub struct BoardsAt {
    /// The port it listens on, on the host the caller used to reach kiln.
    pub port: u16,
    /// Its public base URL when the administrator gave one
    /// (`--tensorboard-url`, e.g. behind a reverse proxy).
    pub public: Option<String>,
}

impl BoardsAt {
    /// The boards' origin as the caller can reach it: the public URL, or
    /// the host of the caller's own request with the boards' port.
    pub fn origin(&self, headers: &axum::http::HeaderMap) -> Option<String> {
        if let Some(p) = &self.public {
            return Some(p.trim_end_matches('/').to_owned());
        }
        let host = headers.get(header::HOST)?.to_str().ok()?;
        let authority: axum::http::uri::Authority = host.parse().ok()?;
        Some(format!("http://{}:{}", authority.host(), self.port))
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardView {
    pub running: bool,
    /// Where it is served: `/jobs/{user~name}/tensorboard/` on the boards'
    /// own origin.
    pub path: String,
    /// That origin, e.g. `http://gpu1:40123` (another port than the API's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The full address with a one-time ticket that signs a browser in (5
    /// minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

fn prefix(job: &JobRecord) -> String {
    format!("/jobs/{}/tensorboard", job.id)
}

/// What the job's board shows: its TensorBoard folder, and, sandboxed, the
/// owner's space as the one part of the data folder it may read.
fn board_spec(state: &AppState, job: &JobRecord) -> Result<BoardSpec, Problem> {
    let output_dir = kiln_spec::parse_stored(job.spec_json.as_bytes())
        .ok()
        .and_then(|p| p.job.output_dir);
    let sandboxed = state.engine.sandboxed;
    let (output, _) = state
        .layout
        .outputs(job.key, &job.id, output_dir.as_deref(), sandboxed);
    // A board reads its owner's files as its owner, never as root.
    let run_as = state
        .identities
        .run_as(job.id.user())
        .map_err(|e| Problem::internal(format!("cannot find the uid of {}: {e}", job.id.user())))?;
    Ok(BoardSpec {
        prefix: prefix(job),
        logdir: Layout::tensorboard(&output),
        space: sandboxed.then(|| state.layout.spaces().join(job.id.user())),
        dir: state.layout.board(job.key),
        run_as,
    })
}

impl From<BoardError> for Problem {
    fn from(e: BoardError) -> Self {
        match e {
            BoardError::NotInstalled => Problem::new(StatusCode::NOT_IMPLEMENTED, e.to_string()),
            // TensorBoard's output and socket paths name the server's disk.
            BoardError::Start(_) => {
                Problem::logged(StatusCode::BAD_GATEWAY, "TensorBoard did not start", e)
            }
            BoardError::Proxy(_) => {
                Problem::logged(StatusCode::BAD_GATEWAY, "TensorBoard did not answer", e)
            }
            BoardError::Busy(_) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/tensorboard", tag = "jobs",
    params(("id" = String, Path, description = "user~name, or name for your own job")),
    responses((status = 200, body = BoardView), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 501, description = "TensorBoard is not installed on the server", body = Problem),
        (status = 502, description = "TensorBoard did not start", body = Problem)))]
/// Starts TensorBoard on the job's TensorBoard folder (unless it runs) and
/// returns where it is served, with a one-time sign-in link for a browser.
pub async fn start(
    caller: Caller,
    State(state): State<AppState>,
    P(id): P<String>,
    headers: axum::http::HeaderMap,
) -> Result<Json<BoardView>, Problem> {
    let job = resolve(&state, &caller, &id).await?;
    state
        .boards
        .ensure(job.key, board_spec(&state, &job)?)
        .await?;
    let pass = Pass {
        user: caller.name,
        is_admin: caller.is_admin,
        key: job.key,
        expires_ms: 0,
    };
    let ticket = state
        .passes
        .ticket(pass, now_ms())
        .ok_or_else(|| Problem::internal("cannot make a sign-in ticket"))?;
    let path = format!("{}/", prefix(&job));
    let origin = board_origin(&state, &headers)?;
    Ok(Json(BoardView {
        running: true,
        url: Some(format!("{origin}{path}?ticket={ticket}")),
        origin: Some(origin),
        path,
    }))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}/tensorboard", tag = "jobs",
    params(("id" = String, Path, description = "user~name, or name for your own job")),
    responses((status = 200, body = BoardView), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// Whether the job's TensorBoard runs.
pub async fn status(
    caller: Caller,
    State(state): State<AppState>,
    P(id): P<String>,
    headers: axum::http::HeaderMap,
) -> Result<Json<BoardView>, Problem> {
    let job = resolve(&state, &caller, &id).await?;
    Ok(Json(BoardView {
        running: state.boards.running(job.key).await,
        path: format!("{}/", prefix(&job)),
        origin: state.boards_at.origin(&headers),
        url: None,
    }))
}

#[utoipa::path(delete, path = "/api/v1/jobs/{id}/tensorboard", tag = "jobs",
    params(("id" = String, Path, description = "user~name, or name for your own job")),
    responses((status = 200, body = BoardView), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// Stops the job's TensorBoard.
pub async fn stop(
    caller: Caller,
    State(state): State<AppState>,
    P(id): P<String>,
) -> Result<Json<BoardView>, Problem> {
    let job = resolve(&state, &caller, &id).await?;
    state.boards.stop(job.key).await;
    Ok(Json(BoardView {
        running: false,
        path: format!("{}/", prefix(&job)),
        origin: None,
        url: None,
    }))
}

fn board_origin(state: &AppState, headers: &axum::http::HeaderMap) -> Result<String, Problem> {
    state.boards_at.origin(headers).ok_or_else(|| {
        Problem::bad_request(
            "cannot tell which host this request reached (no valid Host header): \
             send one, or start the server with --tensorboard-url",
        )
    })
}

/// A board's path on the API's listener: sent on to the boards' own
/// origin, with its query (a ticket) kept.
pub async fn elsewhere(State(state): State<AppState>, req: Request) -> Result<Response, Problem> {
    let origin = board_origin(&state, req.headers())?;
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    Ok(redirect(
        StatusCode::TEMPORARY_REDIRECT,
        &format!("{origin}{path_and_query}"),
    ))
}

/// The value of cookie `name` in a Cookie header.
fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn redirect(status: StatusCode, to: &str) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Everything under `/jobs/{id}/tensorboard`: sign-in, then the board.
pub async fn proxy(State(state): State<AppState>, req: Request) -> Result<Response, Problem> {
    let path = req.uri().path().to_owned();
    let Some((id, rest)) = path
        .strip_prefix("/jobs/")
        .and_then(|p| p.split_once("/tensorboard"))
        .map(|(id, rest)| (id.to_owned(), rest.to_owned()))
    else {
        return Err(Problem::not_found("no such page"));
    };
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    // The folder form first, from the path alone: the cookie's path ends
    // in a slash, and TensorBoard's relative links need it.
    if rest.is_empty() {
        return Ok(redirect(
            StatusCode::PERMANENT_REDIRECT,
            &format!("/jobs/{id}/tensorboard/{query}"),
        ));
    }
    let (mut parts, body) = req.into_parts();
    let unauthorized = || {
        Problem::unauthorized(
            "sign in to see this TensorBoard: open the link `kiln tensorboard JOB` prints, \
             or send 'Authorization: Bearer <token>'",
        )
    };
    let now = now_ms();
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    let (caller, pass_key) = if bearer {
        (Caller::from_request_parts(&mut parts, &state).await?, None)
    } else {
        // A ticket or a cookie names its job by key; find the job the path
        // names, as its owner would, to compare. Every failure answers the
        // same, so nothing is learnt about which jobs exist.
        let owner = id.split_once('~').map(|(u, _)| u.to_owned());
        let job = match owner {
            Some(name) => {
                let probe = Caller {
                    name,
                    is_admin: false,
                    token_hash: String::new(),
                };
                resolve(&state, &probe, &id).await.ok()
            }
            None => None,
        };
        if let Some(t) = query_param(parts.uri.query(), "ticket") {
            let session = job
                .as_ref()
                .and_then(|job| state.passes.redeem(t, job.key, now).map(|s| (job, s)));
            let Some((job, session)) = session else {
                return Err(Problem::unauthorized(
                    "this sign-in link is not valid (used, expired or for another board): \
                     run `kiln tensorboard JOB` for a new one",
                ));
            };
            let mut r = redirect(StatusCode::SEE_OTHER, &format!("{}/", prefix(job)));
            let c = format!(
                "{COOKIE}={session}; Path={}/; HttpOnly; SameSite=Lax; Max-Age={}",
                prefix(job),
                crate::tensorboard::SESSION_MS / 1000
            );
            if let Ok(v) = HeaderValue::from_str(&c) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            return Ok(r);
        }
        let pass = job
            .as_ref()
            .and_then(|job| {
                cookie(&parts.headers, COOKIE).and_then(|s| state.passes.session(s, job.key, now))
            })
            .ok_or_else(unauthorized)?;
        (
            Caller {
                name: pass.user,
                is_admin: pass.is_admin,
                // A board session, not a token.
                token_hash: String::new(),
            },
            Some(pass.key),
        )
    };
    let job = resolve(&state, &caller, &id).await?;
    if pass_key.is_some_and(|k| k != job.key) {
        return Err(unauthorized());
    }
    // One spelling of the path, the one TensorBoard was started with.
    if id != job.id.to_string() {
        return Ok(redirect(
            StatusCode::PERMANENT_REDIRECT,
            &format!("{}{rest}{query}", prefix(&job)),
        ));
    }
    let spec = board_spec(&state, &job)?;
    let req = Request::from_parts(parts, body);
    Ok(state.boards.forward(job.key, spec, req).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> axum::http::HeaderMap {
        let mut m = axum::http::HeaderMap::new();
        m.insert(header::HOST, h.parse().expect("value"));
        m
    }

    #[test]
    fn boards_are_on_the_callers_host_at_their_own_port() {
        let at = BoardsAt {
            port: 40123,
            public: None,
        };
        assert_eq!(
            at.origin(&host("gpu1.lab:8420")).as_deref(),
            Some("http://gpu1.lab:40123")
        );
        assert_eq!(
            at.origin(&host("10.0.0.5")).as_deref(),
            Some("http://10.0.0.5:40123")
        );
        assert_eq!(
            at.origin(&host("[::1]:8420")).as_deref(),
            Some("http://[::1]:40123")
        );
        assert_eq!(at.origin(&host("not a host/")), None);
        assert_eq!(at.origin(&axum::http::HeaderMap::new()), None);
        let public = BoardsAt {
            port: 40123,
            public: Some("https://tb.lab.example/".into()),
        };
        assert_eq!(
            public.origin(&host("gpu1:8420")).as_deref(),
            Some("https://tb.lab.example")
        );
    }
}
