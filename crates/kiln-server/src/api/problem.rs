//! Errors as `application/problem+json` (RFC 9457) with an `errors` array
//! naming every invalid field, so clients can point at each one.
//!
//! An internal error (500) is written to the server's log in full, with the
//! paths and settings of the server's machine it names, and reaches the
//! client only as a reference to that log line: whoever reads the answer
//! learns nothing of the server's disk.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_spec::Issue;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::control::ControlError;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }

    /// A failure whose details may name the server's disk (a program's
    /// output, a socket's path): they go to the log, and the client gets
    /// `what` with a reference to that log line.
    pub fn logged(status: StatusCode, what: &str, detail: impl std::fmt::Display) -> Self {
        let reference = next_reference();
        tracing::error!(reference = %reference, detail = %detail, "{what}");
        Self::new(
            status,
            format!("{what}; the server's log has the details (reference {reference})"),
        )
    }

    /// One invalid field of a request body or query, named by its path.
    pub fn field(path: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut p = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{path}: {message}"),
        );
        p.errors.push(FieldError {
            path: path.into(),
            message,
            line: None,
            column: None,
        });
        p
    }

    /// A spec that does not parse or validate: every issue, with its path.
    pub fn invalid_spec(e: &kiln_spec::SpecError) -> Self {
        let mut p = Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
        p.title = "Invalid job spec".into();
        p.errors = e.issues().into_iter().map(field_error).collect();
        p
    }
}

fn field_error(i: Issue) -> FieldError {
    FieldError {
        path: i.path,
        message: i.message,
        line: i.line,
        column: i.column,
    }
}

/// The words a client sees for an internal error, with the reference that
/// finds its details in the server's log.
fn hidden(reference: &str) -> String {
    format!("internal error; the server's log has the details (reference {reference})")
}

/// A reference unique within this server's run, short enough to quote.
fn next_reference() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let started = crate::now_ms() / 1000;
    format!("{started:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Problem {
    /// This problem as a client may see it: an internal error's details go
    /// to the log and leave a reference behind.
    fn for_client(mut self) -> Self {
        if self.status == StatusCode::INTERNAL_SERVER_ERROR.as_u16() {
            let reference = next_reference();
            tracing::error!(reference = %reference, detail = %self.detail, "internal error answered 500");
            self.detail = hidden(&reference);
            self.errors.clear();
        }
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let this = self.for_client();
        let status = StatusCode::from_u16(this.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&this).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

impl From<kiln_store::StoreError> for Problem {
    fn from(e: kiln_store::StoreError) -> Self {
        use kiln_store::StoreError as E;
        match e {
            E::Conflict(_) | E::NotFinished { .. } => Problem::conflict(e.to_string()),
            E::NotFound(_) => Problem::not_found(e.to_string()),
            other => Problem::internal(other.to_string()),
        }
    }
}

impl From<ControlError> for Problem {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Conflict(m) => Problem::conflict(m),
            ControlError::NotFound(m) => Problem::not_found(m),
            ControlError::Invalid(m) => Problem::bad_request(m),
            ControlError::Internal(m) => Problem::internal(m),
            ControlError::Gone => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_keep_the_servers_paths_to_the_log() {
        let p = Problem::internal("cannot read /var/lib/kiln/jobs/1/output.log: Invalid argument")
            .for_client();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("/var/lib/kiln"), "{}", p.detail);
        assert!(p
            .detail
            .starts_with("internal error; the server's log has the details (reference "));
        let other = Problem::bad_request("offset: past the end").for_client();
        assert_eq!(other.detail, "offset: past the end");
    }
}
