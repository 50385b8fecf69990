//! Queues and who may use them, in SQLite. Kept apart from `sqlite.rs` so
//! that file stays about jobs, tasks and users.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, TransactionBehavior};

use crate::error::StoreError;
use crate::records::QueueRecord;
use crate::sqlite::{ms, to_i64};

pub(crate) fn put(conn: &mut Connection, q: &QueueRecord) -> Result<(), StoreError> {
    let quota = serde_json::to_string(&q.quota).map_err(|e| StoreError::Corrupt {
        what: "queue quota",
        detail: e.to_string(),
    })?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::sql("starting a transaction"))?;
    tx.execute(
        "INSERT INTO queues (name, quota_json, user_max_gpus, created_at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET quota_json = excluded.quota_json,
             user_max_gpus = excluded.user_max_gpus",
        params![
            q.name,
            quota,
            q.user_max_gpus.map(to_i64),
            to_i64(q.created_at_ms)
        ],
    )
    .map_err(StoreError::sql("writing a queue"))?;
    for user in &q.users {
        tx.execute(
            "INSERT OR IGNORE INTO queue_users (queue, user) VALUES (?1, ?2)",
            params![q.name, user],
        )
        .map_err(StoreError::sql("granting a queue"))?;
    }
    tx.commit().map_err(StoreError::sql("committing a queue"))
}

pub(crate) fn remove(conn: &mut Connection, name: &str) -> Result<bool, StoreError> {
    // queue_users goes with it (ON DELETE CASCADE, foreign keys are on).
    let n = conn
        .execute("DELETE FROM queues WHERE name = ?1", [name])
        .map_err(StoreError::sql("removing a queue"))?;
    Ok(n > 0)
}

pub(crate) fn all(conn: &mut Connection) -> Result<Vec<QueueRecord>, StoreError> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare_cached("SELECT queue, user FROM queue_users ORDER BY queue, user")
            .map_err(StoreError::sql("reading queue users"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(StoreError::sql("reading queue users"))?;
        for row in rows {
            let (queue, user) = row.map_err(StoreError::sql("reading queue users"))?;
            users.entry(queue).or_default().push(user);
        }
    }
    let mut stmt = conn
        .prepare_cached(
            "SELECT name, quota_json, user_max_gpus, created_at_ms FROM queues ORDER BY name",
        )
        .map_err(StoreError::sql("reading queues"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(StoreError::sql("reading queues"))?;
    let mut out = Vec::new();
    for row in rows {
        let (name, quota_json, user_max_gpus, created) =
            row.map_err(StoreError::sql("reading queues"))?;
        let quota = serde_json::from_str(&quota_json).map_err(|e| StoreError::Corrupt {
            what: "queue quota",
            detail: format!("queue {name}: {e}"),
        })?;
        out.push(QueueRecord {
            users: users.remove(&name).unwrap_or_default(),
            name,
            quota,
            user_max_gpus: user_max_gpus.map(ms),
            created_at_ms: ms(created),
        });
    }
    Ok(out)
}

pub(crate) fn grant(conn: &mut Connection, queue: &str, user: &str) -> Result<(), StoreError> {
    let r = conn.execute(
        "INSERT OR IGNORE INTO queue_users (queue, user) VALUES (?1, ?2)",
        params![queue, user],
    );
    match r {
        Ok(_) => Ok(()),
        // The only constraint left after OR IGNORE is the foreign key.
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::NotFound(format!("queue {queue}")))
        }
        Err(e) => Err(StoreError::sql("granting a queue")(e)),
    }
}

pub(crate) fn revoke(conn: &mut Connection, queue: &str, user: &str) -> Result<bool, StoreError> {
    let n = conn
        .execute(
            "DELETE FROM queue_users WHERE queue = ?1 AND user = ?2",
            params![queue, user],
        )
        .map_err(StoreError::sql("revoking a queue"))?;
    Ok(n > 0)
}
