//! Errors as `application/problem+json` (RFC 9457) with an `errors` array
//! naming every invalid field, so clients can point at each one.

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

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
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
