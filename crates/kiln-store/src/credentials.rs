//! Each user's container registry credentials, in SQLite. The secret is
//! kept for the pulls of the user's own tasks and never read back out
//! through the API: only the registry and user name are listed. Image
//! repositories pulled with credentials are remembered as private.

use rusqlite::{params, Connection};

use crate::error::StoreError;
use crate::records::RegistryCredential;
use crate::sqlite::{ms, to_i64};

pub(crate) fn put(conn: &mut Connection, c: &RegistryCredential) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO registry_credentials (user, registry, username, secret, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(user, registry) DO UPDATE SET username = excluded.username,
             secret = excluded.secret, updated_at_ms = excluded.updated_at_ms",
        params![
            c.user,
            c.registry,
            c.username,
            c.secret,
            to_i64(c.updated_at_ms)
        ],
    )
    .map_err(StoreError::sql("writing a registry credential"))?;
    Ok(())
}

pub(crate) fn remove(
    conn: &mut Connection,
    user: &str,
    registry: &str,
) -> Result<bool, StoreError> {
    let n = conn
        .execute(
            "DELETE FROM registry_credentials WHERE user = ?1 AND registry = ?2",
            params![user, registry],
        )
        .map_err(StoreError::sql("removing a registry credential"))?;
    Ok(n > 0)
}

pub(crate) fn of_user(
    conn: &mut Connection,
    user: &str,
) -> Result<Vec<RegistryCredential>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT user, registry, username, secret, updated_at_ms FROM registry_credentials
             WHERE user = ?1 ORDER BY registry",
        )
        .map_err(StoreError::sql("reading registry credentials"))?;
    let rows = stmt
        .query_map([user], |r| {
            Ok(RegistryCredential {
                user: r.get(0)?,
                registry: r.get(1)?,
                username: r.get(2)?,
                secret: r.get(3)?,
                updated_at_ms: ms(r.get(4)?),
            })
        })
        .map_err(StoreError::sql("reading registry credentials"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("reading registry credentials"))
}

pub(crate) fn mark_private(
    conn: &mut Connection,
    repository: &str,
    at_ms: u64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO private_images (repository, marked_at_ms) VALUES (?1, ?2)",
        params![repository, to_i64(at_ms)],
    )
    .map_err(StoreError::sql("marking a private image"))?;
    Ok(())
}

pub(crate) fn is_private(conn: &mut Connection, repository: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT 1 FROM private_images WHERE repository = ?1")
        .and_then(|mut s| s.exists([repository]))
        .map_err(StoreError::sql("reading private images"))
}
