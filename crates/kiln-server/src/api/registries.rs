//! `/api/v1/registries`: each user's own container registry credentials.
//! A user stores one per registry; tasks of theirs that name an image there
//! pull with it. The secret goes in and never comes back out: listings show
//! the registry and the user name only, and it is never logged.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Body, P};
use super::{blocking, AppState, Caller, Problem};
use kiln_store::RegistryCredential;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewCredential {
    username: String,
    /// The password or access token; stored, never shown again.
    password: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialView {
    pub registry: String,
    pub username: String,
    pub updated_at_ms: u64,
}

/// Longest password or token taken (a registry's tokens are far shorter).
const MAX_SECRET: usize = 8192;

/// A registry as images name it: a host, with a port perhaps ("ghcr.io",
/// "registry.lab:5000", "localhost:5000"), or docker.io's own name.
pub fn check_registry(text: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_');
    if text.is_empty() || text.len() > 253 || !text.chars().all(ok_char) {
        return Err(format!(
            "a registry is a host name with an optional port (ghcr.io, registry.lab:5000), got {text:?}"
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/registries", tag = "registries",
    responses((status = 200, body = Vec<CredentialView>), (status = 401, body = Problem)))]
/// The caller's registry credentials, without their secrets.
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<CredentialView>>, Problem> {
    let store = Arc::clone(&state.store);
    let all = blocking(move || store.credentials(&caller.name)).await?;
    Ok(Json(
        all.into_iter()
            .map(|c| CredentialView {
                registry: c.registry,
                username: c.username,
                updated_at_ms: c.updated_at_ms,
            })
            .collect(),
    ))
}

#[utoipa::path(put, path = "/api/v1/registries/{registry}", tag = "registries", request_body = NewCredential,
    params(("registry" = String, Path, description = "registry host[:port]")),
    responses((status = 200, body = CredentialView), (status = 400, body = Problem), (status = 401, body = Problem)))]
/// Stores the caller's credential for a registry, replacing theirs for it.
pub async fn put(
    caller: Caller,
    State(state): State<AppState>,
    P(registry): P<String>,
    Body(body): Body,
) -> Result<Json<CredentialView>, Problem> {
    check_registry(&registry).map_err(|m| Problem::field("registry", m))?;
    let req: NewCredential = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(format!(
            "body: expected {{\"username\": ..., \"password\": ...}}: {e}"
        ))
    })?;
    if req.username.is_empty() || req.username.len() > 256 || req.username.contains(['\n', '\0']) {
        return Err(Problem::field(
            "username",
            "must be 1 to 256 characters on one line",
        ));
    }
    if req.password.is_empty() || req.password.len() > MAX_SECRET || req.password.contains('\0') {
        return Err(Problem::field(
            "password",
            format!("must be 1 to {MAX_SECRET} bytes"),
        ));
    }
    let credential = RegistryCredential {
        user: caller.name.clone(),
        registry: registry.clone(),
        username: req.username.clone(),
        secret: req.password,
        updated_at_ms: crate::now_ms(),
    };
    let view = CredentialView {
        registry,
        username: req.username,
        updated_at_ms: credential.updated_at_ms,
    };
    let store = Arc::clone(&state.store);
    blocking(move || store.put_credential(&credential)).await?;
    tracing::info!(user = %caller.name, registry = %view.registry, "registry credential stored");
    Ok(Json(view))
}

#[utoipa::path(delete, path = "/api/v1/registries/{registry}", tag = "registries",
    params(("registry" = String, Path, description = "registry host[:port]")),
    responses((status = 204, description = "forgotten"), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// Forgets the caller's credential for a registry.
pub async fn remove(
    caller: Caller,
    State(state): State<AppState>,
    P(registry): P<String>,
) -> Result<StatusCode, Problem> {
    let store = Arc::clone(&state.store);
    let user = caller.name.clone();
    let reg = registry.clone();
    if blocking(move || store.remove_credential(&user, &reg)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!(
            "you have no credential for {registry}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_hosts_with_ports() {
        for ok in [
            "ghcr.io",
            "registry.lab:5000",
            "localhost:5000",
            "docker.io",
            "127.0.0.1:5077",
        ] {
            assert!(check_registry(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ghcr.io/alice", "a b", "../x", "x\ny"] {
            assert!(check_registry(bad).is_err(), "{bad:?}");
        }
    }
}
