//! Each user's container registry credentials, in SQLite. The secret is
//! kept for the pulls of the user's own tasks and never read back out
//! through the API: only the registry and user name are listed.

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

pub(crate) fn registries(conn: &mut Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT DISTINCT registry FROM registry_credentials ORDER BY registry")
        .map_err(StoreError::sql("reading registries"))?;
    let rows = stmt
        .query_map([], |r| r.get(0))
        .map_err(StoreError::sql("reading registries"))?;
    rows.collect::<Result<_, _>>()
        .map_err(StoreError::sql("reading registries"))
}
