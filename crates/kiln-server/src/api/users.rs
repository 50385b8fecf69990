//! Users and tokens: the admin adds users (each gets a token, shown once);
//! anyone logs in with a password for a fresh token; `/me` says who a token
//! belongs to.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kiln_store::{Revoke, TokenLife, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Body, P};
use super::{blocking, AppState, Caller, Problem};
use crate::auth::{check_password, hash_password, hash_token, new_token};
use crate::now_ms;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub name: String,
    pub is_admin: bool,
    pub created_at_ms: u64,
    /// The uid the user's tasks run as, once assigned (kiln as root).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub uid: Option<u32>,
    /// The Unix account the user is mapped to, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unix_user: Option<String>,
}

/// A token, shown once; kiln keeps only its hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub name: String,
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewUser {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )]
    name: String,
    /// For web logins; at least 8 characters.
    #[schema(min_length = 8)]
    password: Option<String>,
    #[serde(default)]
    admin: bool,
    /// Run the user's tasks as this Unix account (never root); default: a
    /// uid kiln allocates.
    unix_user: Option<String>,
    /// Queues the user may submit to besides `default`; each must exist.
    #[serde(default)]
    queues: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    name: String,
    password: String,
}

fn view(u: &User) -> UserView {
    UserView {
        name: u.name.clone(),
        is_admin: u.is_admin,
        created_at_ms: u.created_at_ms,
        uid: u.identity.as_ref().map(|i| i.uid),
        unix_user: u.identity.as_ref().and_then(|i| i.unix_user.clone()),
    }
}

/// A JSON body, or a 400 that shows the shape expected.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    body: &Bytes,
    shape: &str,
) -> Result<T, Problem> {
    serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("body: expected {shape}: {e}")))
}

fn admin_only(caller: &Caller) -> Result<(), Problem> {
    if caller.is_admin {
        Ok(())
    } else {
        // Like another user's job: not the caller's business that it exists.
        Err(Problem::not_found("no such resource"))
    }
}

#[utoipa::path(get, path = "/api/v1/me", tag = "users",
    responses((status = 200, body = UserView), (status = 401, body = Problem)))]
/// Who the token belongs to.
pub async fn me(caller: Caller) -> Json<UserView> {
    Json(UserView {
        name: caller.name,
        is_admin: caller.is_admin,
        created_at_ms: 0,
        uid: None,
        unix_user: None,
    })
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, body = Vec<UserView>), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// Every user (admin only).
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<Vec<UserView>>, Problem> {
    admin_only(&caller)?;
    let store = Arc::clone(&state.store);
    let users = blocking(move || store.users()).await?;
    Ok(Json(users.iter().map(view).collect()))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = TokenView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
/// Adds a user (admin only); the answer holds their first token, shown once.
pub async fn add(
    caller: Caller,
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<(StatusCode, Json<TokenView>), Problem> {
    admin_only(&caller)?;
    let req: NewUser = json_body(&body, r#"{"name": "alice", "password": "..."}"#)?;
    kiln_spec::ids::check_user_name(&req.name).map_err(|m| Problem::field("name", m))?;
    if let Some(p) = req.password.as_deref() {
        check_password_length(p)?;
    }
    super::queues::check_exist(&state, &req.queues, "queues").await?;
    if let Some(account) = &req.unix_user {
        let (uid, _) =
            crate::identity::unix_account(account).map_err(|m| Problem::field("unixUser", m))?;
        if state.identities.view().uid_range.is_none() {
            return Err(Problem::field(
                "unixUser",
                "kiln is not running as root, so tasks cannot run as another Unix account",
            ));
        }
        let store = Arc::clone(&state.store);
        let users = blocking(move || store.users()).await?;
        if let Some(other) = users
            .iter()
            .find(|u| u.identity.as_ref().is_some_and(|i| i.uid == uid))
        {
            return Err(Problem::field(
                "unixUser",
                format!(
                    "uid {uid} of {account} is already the uid of user {}",
                    other.name
                ),
            ));
        }
    }
    let token = new_token().map_err(|e| Problem::internal(e.to_string()))?;
    let store = Arc::clone(&state.store);
    let name = req.name.clone();
    let account = req.unix_user.clone();
    let queues = req.queues.clone();
    let token_hash = hash_token(&token);
    blocking(move || {
        let password_hash = match &req.password {
            Some(p) => Some(
                hash_password(p).map_err(|e| kiln_store::StoreError::Corrupt {
                    what: "password",
                    detail: e.to_string(),
                })?,
            ),
            None => None,
        };
        let now = crate::now_ms();
        store.add_user(&User {
            name: req.name.clone(),
            is_admin: req.admin,
            password_hash,
            created_at_ms: now,
            identity: None,
        })?;
        store.add_token(&req.name, &token_hash, TokenLife::until_revoked(now_ms()))
    })
    .await
    .map_err(|p| {
        if p.status == 409 {
            Problem::conflict(format!("user {name} already exists"))
        } else {
            p
        }
    })?;
    // The user's identity now, so their space is theirs from the start.
    let ids = Arc::clone(&state.identities);
    let who = name.clone();
    blocking(move || {
        if let Some(account) = account {
            ids.map_unix(&who, &account)
                .map_err(kiln_store::StoreError::Conflict)?;
        }
        ids.run_as(&who)
            .map(|_| ())
            .map_err(kiln_store::StoreError::Conflict)
    })
    .await?;
    super::queues::grant_all(&state, &name, queues).await?;
    Ok((StatusCode::CREATED, Json(TokenView { name, token })))
}

#[utoipa::path(post, path = "/api/v1/users/{name}/tokens", tag = "users",
    params(("name" = String, Path, description = "user name")),
    responses((status = 201, body = TokenView), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// A new token for a user: yourself, or anyone for the admin.
pub async fn token(
    caller: Caller,
    State(state): State<AppState>,
    P(name): P<String>,
) -> Result<(StatusCode, Json<TokenView>), Problem> {
    if !caller.is_admin && caller.name != name {
        return Err(Problem::not_found(format!("user {name} not found")));
    }
    let token = new_token().map_err(|e| Problem::internal(e.to_string()))?;
    let store = Arc::clone(&state.store);
    let (n, h) = (name.clone(), hash_token(&token));
    blocking(move || store.add_token(&n, &h, TokenLife::until_revoked(now_ms()))).await?;
    Ok((StatusCode::CREATED, Json(TokenView { name, token })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// At least 8 characters.
    pub password: String,
}

#[utoipa::path(put, path = "/api/v1/users/{name}/password", tag = "users", request_body = NewPassword,
    params(("name" = String, Path, description = "user name")),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
/// Sets a password for signing in to the web UI and WebDAV: your own, or
/// anyone's for the admin (the admin has none until one is set).
pub async fn set_password(
    caller: Caller,
    State(state): State<AppState>,
    P(name): P<String>,
    Body(body): Body,
) -> Result<StatusCode, Problem> {
    if !caller.is_admin && caller.name != name {
        return Err(Problem::not_found(format!("user {name} not found")));
    }
    let req: NewPassword = json_body(&body, r#"{"password": "..."}"#)?;
    check_password_length(&req.password)?;
    let store = Arc::clone(&state.store);
    let n = name.clone();
    blocking(move || {
        let hash = hash_password(&req.password).map_err(|e| kiln_store::StoreError::Corrupt {
            what: "password",
            detail: e.to_string(),
        })?;
        store.set_password(&n, Some(&hash))
    })
    .await?;
    state.dav.forget_login(&name);
    // A new password signs the user out of every browser; API tokens stay.
    let store = Arc::clone(&state.store);
    let n = name.clone();
    blocking(move || store.revoke_tokens(&n, Revoke::Expiring)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/login", tag = "users", request_body = Login, security(()),
    responses((status = 200, body = TokenView), (status = 400, body = Problem), (status = 401, body = Problem)))]
/// Exchanges a user name and password for a fresh token that works for
/// seven days (until `POST /api/v1/logout`, or a new password).
pub async fn login(
    State(state): State<AppState>,
    Body(body): Body,
) -> Result<Json<TokenView>, Problem> {
    let req: Login = json_body(&body, r#"{"name": "alice", "password": "..."}"#)?;
    let store = Arc::clone(&state.store);
    let name = req.name.clone();
    let token = new_token().map_err(|e| Problem::internal(e.to_string()))?;
    let token_hash = hash_token(&token);
    let now = now_ms();
    let life = TokenLife {
        created_at_ms: now,
        expires_at_ms: Some(now + SIGN_IN_MS),
    };
    let ok = blocking(move || {
        let Some(user) = check_password(store.as_ref(), &req.name, &req.password)? else {
            return Ok(false);
        };
        store.purge_expired_tokens(now)?;
        store.add_token(&user.name, &token_hash, life)?;
        Ok(true)
    })
    .await?;
    if !ok {
        return Err(Problem::unauthorized("wrong user name or password"));
    }
    Ok(Json(TokenView { name, token }))
}

/// How long a password sign-in (the web UI's) works.
pub const SIGN_IN_MS: u64 = 7 * 24 * 3600 * 1000;

#[utoipa::path(post, path = "/api/v1/logout", tag = "users",
    responses((status = 204), (status = 401, body = Problem)))]
/// Revokes the token this request was sent with.
pub async fn logout(caller: Caller, State(state): State<AppState>) -> Result<StatusCode, Problem> {
    let store = Arc::clone(&state.store);
    let hash = caller.token_hash;
    blocking(move || store.revoke_token(&hash)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    pub name: String,
    /// How many tokens and sign-ins stopped working.
    pub revoked: usize,
}

#[utoipa::path(delete, path = "/api/v1/users/{name}/tokens", tag = "users",
    params(("name" = String, Path, description = "user name")),
    responses((status = 200, body = Revoked), (status = 401, body = Problem), (status = 404, body = Problem)))]
/// Revokes every token and sign-in of a user: your own, or anyone's for the
/// admin. Make a new token afterwards with `POST /api/v1/users/{name}/tokens`.
pub async fn revoke(
    caller: Caller,
    State(state): State<AppState>,
    P(name): P<String>,
) -> Result<Json<Revoked>, Problem> {
    if !caller.is_admin && caller.name != name {
        return Err(Problem::not_found(format!("user {name} not found")));
    }
    let store = Arc::clone(&state.store);
    let n = name.clone();
    let revoked = blocking(move || {
        if store.user(&n)?.is_none() {
            return Err(kiln_store::StoreError::NotFound(format!("user {n}")));
        }
        store.revoke_tokens(&n, Revoke::All)
    })
    .await?;
    Ok(Json(Revoked { name, revoked }))
}

/// Fewest characters a password may have.
const MIN_PASSWORD_CHARS: usize = 8;

/// Counted in characters, as people count them: "пароль12" is eight, not
/// the sixteen bytes UTF-8 takes for it.
fn check_password_length(password: &str) -> Result<(), Problem> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Problem::field(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_counted_in_characters_not_bytes() {
        assert!(check_password_length("пароль12").is_ok());
        // Seven characters in fourteen bytes.
        assert!(check_password_length("пароль1").is_err());
        assert!(check_password_length("1234567").is_err());
        assert!(check_password_length("12345678").is_ok());
    }
}
