//! WebDAV at `/dav/`: each user sees their own space, with standard clients
//! (rclone, davfs2, Finder, Explorer). Clients sign in with HTTP Basic,
//! the password being the user's password or one of their API tokens; a
//! Bearer token works too. Clients send the password with every request and
//! argon2 is slow on purpose, so a good password is remembered (only as a
//! SHA-256 hash) for a few minutes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use dav_server::memls::MemLs;
use dav_server::DavHandler;
use sha2::{Digest, Sha256};

use super::{blocking, AppState, Problem};
use crate::auth::{check_password, hash_token};
use crate::spaces::dav::{DavUser, SpaceDav};
use crate::spaces::Spaces;

const PREFIX: &str = "/dav";
const LOGIN_TTL: Duration = Duration::from_secs(300);

/// The WebDAV handlers, one per user so that locks taken in one space
/// never collide with the same path in another.
pub struct Dav {
    spaces: Arc<Spaces>,
    handlers: Mutex<HashMap<String, DavHandler<DavUser>>>,
    /// user → (SHA-256 of a password that verified, when).
    logins: Mutex<HashMap<String, ([u8; 32], Instant)>>,
}

impl Dav {
    pub fn new(spaces: Arc<Spaces>) -> Self {
        Dav {
            spaces,
            handlers: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
        }
    }

    fn handler(&self, user: &str) -> Result<DavHandler<DavUser>, Problem> {
        let mut map = self
            .handlers
            .lock()
            .map_err(|_| Problem::internal("WebDAV handlers poisoned"))?;
        Ok(map
            .entry(user.to_owned())
            .or_insert_with(|| {
                DavHandler::builder()
                    .filesystem(Box::new(SpaceDav::new(Arc::clone(&self.spaces))))
                    .locksystem(MemLs::new())
                    .strip_prefix(PREFIX)
                    .hide_symlinks(true)
                    .build_handler()
            })
            .clone())
    }

    fn remembered(&self, user: &str, digest: &[u8; 32]) -> bool {
        self.logins.lock().is_ok_and(|m| {
            m.get(user)
                .is_some_and(|(d, at)| d == digest && at.elapsed() < LOGIN_TTL)
        })
    }

    /// Forgets a user's remembered password (it changed).
    pub fn forget_login(&self, user: &str) {
        if let Ok(mut m) = self.logins.lock() {
            m.remove(user);
        }
    }

    fn remember(&self, user: &str, digest: [u8; 32]) {
        if let Ok(mut m) = self.logins.lock() {
            m.retain(|_, (_, at)| at.elapsed() < LOGIN_TTL);
            m.insert(user.to_owned(), (digest, Instant::now()));
        }
    }
}

/// Every method on `/dav/...`: sign-in, then dav-server on the user's space.
pub async fn serve(State(state): State<AppState>, req: Request) -> Response {
    let user = match signed_in(&state, req.headers()).await {
        Ok(u) => u,
        Err(p) => return challenge(p),
    };
    // dav-server answers 502 to a path that `..` takes out of /dav; it is
    // the client's mistake, so say 403.
    let inside = dav_server::davpath::DavPath::new(req.uri().path())
        .is_ok_and(|p| p.as_bytes() == PREFIX.as_bytes() || p.as_bytes().starts_with(b"/dav/"));
    if !inside {
        return Problem::new(
            axum::http::StatusCode::FORBIDDEN,
            "that path leads outside /dav/",
        )
        .into_response();
    }
    if let Some(p) = touches_root(&req) {
        return p.into_response();
    }
    let handler = match state.dav.handler(&user) {
        Ok(h) => h,
        Err(p) => return p.into_response(),
    };
    let spaces = Arc::clone(&state.spaces);
    let name = user.clone();
    let dir = match tokio::task::spawn_blocking(move || {
        Ok::<_, crate::spaces::SpaceError>((spaces.dir(&name)?, spaces.run_as(&name)?))
    })
    .await
    {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Problem::internal(e.to_string()).into_response(),
        Err(e) => return Problem::internal(e.to_string()).into_response(),
    };
    let (dir, run_as) = dir;
    let creds = DavUser {
        name: user.clone(),
        dir: Arc::new(dir),
        run_as,
    };
    handler
        .handle_guarded(req, user, creds)
        .await
        .map(axum::body::Body::new)
}

/// Refuses a request that would delete, move or replace the space's root,
/// which WebDAV lets a client do to any collection: dav-server deletes
/// everything in the collection first, so `DELETE /dav/` (`rclone purge`)
/// emptied the whole space before failing on the root itself, and a MOVE or
/// COPY with Overwrite onto the root would too. Paths and Destination are
/// read as dav-server reads them (percent-decoded, `.`, `..` and `//`
/// resolved, a full URL reduced to its path), so no spelling gets past.
fn touches_root(req: &Request) -> Option<Problem> {
    let refuse = |what: &str| {
        Some(Problem::new(
            axum::http::StatusCode::FORBIDDEN,
            format!(
                "{what}: the root of your space cannot be deleted, moved or replaced; \
                 delete or move what is in it instead"
            ),
        ))
    };
    let method = req.method().as_str();
    if matches!(method, "DELETE" | "MOVE") && names_root(req.uri().path()) {
        return refuse(&format!("{method} {}", req.uri().path()));
    }
    if matches!(method, "MOVE" | "COPY") {
        for dest in req.headers().get_all("destination") {
            let path = dest.to_str().ok().and_then(destination_path);
            if path.as_deref().is_some_and(names_root) {
                return refuse(&format!("{method} onto {}", dest.to_str().unwrap_or("?")));
            }
        }
    }
    None
}

/// Whether a URL path names the root of `/dav/` once normalised.
fn names_root(path: &str) -> bool {
    dav_server::davpath::DavPath::new(path)
        .is_ok_and(|p| p.as_bytes() == PREFIX.as_bytes() || p.as_bytes() == b"/dav/")
}

/// The path a Destination header names, as dav-server reads it: the value
/// itself when it starts with `/`, else the path of the URL it is.
fn destination_path(value: &str) -> Option<String> {
    if value.starts_with('/') {
        return Some(value.to_owned());
    }
    url::Url::parse(value).ok().map(|u| u.path().to_owned())
}

/// 401 with the header that makes clients ask for a user and password.
fn challenge(p: Problem) -> Response {
    let mut r = p.into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"kiln\", charset=\"UTF-8\""),
    );
    r
}

async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<String, Problem> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Some(token) = value.strip_prefix("Bearer ") {
        return by_token(state, token.trim(), None).await;
    }
    let Some(b64) = value.strip_prefix("Basic ") else {
        return Err(Problem::unauthorized(
            "sign in with your kiln user name and password (or an API token as the password)",
        ));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Problem::unauthorized("the Basic credentials are not valid base64 UTF-8"))?;
    let (name, secret) = decoded
        .split_once(':')
        .ok_or_else(|| Problem::unauthorized("the Basic credentials have no ':'"))?;
    if secret.starts_with("kiln_") {
        return by_token(state, secret, Some(name)).await;
    }
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    if state.dav.remembered(name, &digest) {
        return Ok(name.to_owned());
    }
    let store = Arc::clone(&state.store);
    let (n, s) = (name.to_owned(), secret.to_owned());
    match blocking(move || check_password(store.as_ref(), &n, &s)).await? {
        Some(u) => {
            state.dav.remember(&u.name, digest);
            Ok(u.name)
        }
        None => Err(Problem::unauthorized("wrong user name or password")),
    }
}

/// The token's owner; with a Basic user name, it must be theirs.
async fn by_token(state: &AppState, token: &str, name: Option<&str>) -> Result<String, Problem> {
    let hash = hash_token(token);
    let store = Arc::clone(&state.store);
    let now = crate::now_ms();
    match blocking(move || store.user_by_token(&hash, now)).await? {
        Some(u) if name.is_none_or(|n| n == u.name) => Ok(u.name),
        Some(_) => Err(Problem::unauthorized(
            "that API token belongs to another user",
        )),
        None => Err(Problem::unauthorized("the API token is not valid")),
    }
}
