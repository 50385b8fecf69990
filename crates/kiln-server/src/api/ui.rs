//! The web UI: the files Vite built (see build.rs), embedded in the binary.
//! Paths the API does not claim are the UI's: a file when one matches,
//! otherwise `index.html`, whose router takes the path from there
//! (`/jobs/alice~mnist`, `/files/data`). Unknown `/api/` paths stay JSON
//! problems, so API clients never get a page.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

use super::Problem;

#[derive(RustEmbed)]
#[folder = "$OUT_DIR/web"]
struct Assets;

/// Everything no route claims.
pub async fn fallback(req: Request) -> Response {
    let path = req.uri().path();
    if path.starts_with("/api/") || path == "/api" {
        return Problem::not_found("no such API path; see /api/v1/openapi.json").into_response();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "this path does not take that method",
        )
        .into_response();
    }
    let name = path.trim_start_matches('/');
    if let Some(file) = (!name.is_empty()).then(|| Assets::get(name)).flatten() {
        // Vite names assets by content hash: they never change.
        let cache = if name.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return asset(file, cache);
    }
    // A missing asset, or a missing file at the top (`/favicon.ico`), is a
    // 404, not the app. Deeper paths are the app's routes, whose ids may
    // hold dots (`/jobs/john.doe~resnet-v1.5`, `/files/data.v2`).
    let top_file = !name.contains('/') && name.contains('.');
    if name.starts_with("assets/") || top_file {
        return Problem::not_found(format!("no file {path}")).into_response();
    }
    match Assets::get("index.html") {
        Some(index) => asset(index, "no-cache"),
        None => Problem::not_found("the web UI is not built into this kiln").into_response(),
    }
}

fn asset(file: rust_embed::EmbeddedFile, cache: &'static str) -> Response {
    let mime = file.metadata.mimetype().to_owned();
    let mut r = Response::new(Body::from(file.data.into_owned()));
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
