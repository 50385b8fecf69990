//! The embedded backend: one SQLite file in WAL mode under the data folder.
//!
//! Durability: `synchronous=NORMAL` in WAL mode makes every committed
//! transaction survive the server process being killed (the WAL is written
//! before commit returns); only a power cut can lose the last commits. That
//! keeps fsync off the submit path.

use std::path::Path;
use std::sync::Mutex;

use kiln_spec::completion::{JobState, TaskState};
use kiln_spec::{JobId, TaskId};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::error::StoreError;
use crate::records::RegistryCredential;
use crate::records::{
    Change, Event, Identity, JobFilter, JobRecord, NewJob, QueueRecord, Revoke, TaskRecord,
    TokenLife, Usage, User,
};
use crate::{credentials, queues, Store};

/// Schema versions, applied in order; `PRAGMA user_version` says how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    is_admin      INTEGER NOT NULL,
    password_hash TEXT,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE tokens (
    token_hash    TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE
);
CREATE TABLE jobs (
    key             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name       TEXT NOT NULL,
    name            TEXT NOT NULL,
    state           TEXT NOT NULL,
    pending_reason  TEXT,
    reason          TEXT,
    attempt         INTEGER NOT NULL DEFAULT 0,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    queue           TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    format          TEXT NOT NULL,
    spec_json       TEXT NOT NULL,
    submitted_at_ms INTEGER NOT NULL,
    started_at_ms   INTEGER,
    finished_at_ms  INTEGER,
    deadline_at_ms  INTEGER,
    stop_requested  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (user_name, name)
);
CREATE INDEX jobs_state ON jobs(state, key);
CREATE TABLE tasks (
    job_key        INTEGER NOT NULL REFERENCES jobs(key) ON DELETE CASCADE,
    attempt        INTEGER NOT NULL,
    task           TEXT NOT NULL,
    state          TEXT NOT NULL,
    exit_code      INTEGER,
    signal         INTEGER,
    reason         TEXT,
    host           TEXT NOT NULL,
    gpus_json      TEXT NOT NULL,
    ports_json     TEXT NOT NULL,
    restarts       INTEGER NOT NULL,
    started_at_ms  INTEGER,
    finished_at_ms INTEGER,
    dir            TEXT,
    PRIMARY KEY (job_key, attempt, task)
);
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_key INTEGER NOT NULL REFERENCES jobs(key) ON DELETE CASCADE,
    at_ms   INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX events_job ON events(job_key, seq);
"#,
    r#"
ALTER TABLE tokens ADD COLUMN created_at_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN expires_at_ms INTEGER;
CREATE INDEX tokens_user ON tokens(user_name);
"#,
    // A user's own jobs, newest first, without reading everyone else's.
    r#"
CREATE INDEX jobs_user ON jobs(user_name, key);
"#,
    // Each user's own uid and gid for their tasks (issue: isolation).
    r#"
ALTER TABLE users ADD COLUMN uid INTEGER;
ALTER TABLE users ADD COLUMN gid INTEGER;
ALTER TABLE users ADD COLUMN unix_user TEXT;
CREATE UNIQUE INDEX users_uid ON users(uid) WHERE uid IS NOT NULL;
"#,
    // Restarts in place back off, and their events are one line (issue 16).
    r#"
ALTER TABLE tasks ADD COLUMN restart_at_ms INTEGER;
ALTER TABLE tasks ADD COLUMN restart_streak INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN line TEXT;
CREATE INDEX events_line ON events(job_key, line) WHERE line IS NOT NULL;
"#,
    // Queues with quotas, fair share and preemption (issue 18).
    r#"
ALTER TABLE jobs ADD COLUMN opportunistic INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN preempted_by TEXT;
ALTER TABLE jobs ADD COLUMN preemptions INTEGER NOT NULL DEFAULT 0;
CREATE TABLE queues (
    name          TEXT PRIMARY KEY,
    quota_json    TEXT NOT NULL,
    user_max_gpus INTEGER,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE queue_users (
    queue TEXT NOT NULL REFERENCES queues(name) ON DELETE CASCADE,
    user  TEXT NOT NULL,
    PRIMARY KEY (queue, user)
);
CREATE TABLE usage (
    user  TEXT PRIMARY KEY,
    value REAL NOT NULL,
    at_ms INTEGER NOT NULL
);
"#,
    // Registry credentials for containers (issue 20).
    r#"
CREATE TABLE registry_credentials (
    user          TEXT NOT NULL,
    registry      TEXT NOT NULL,
    username      TEXT NOT NULL,
    secret        TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (user, registry)
);
CREATE TABLE private_images (
    repository   TEXT PRIMARY KEY,
    marked_at_ms INTEGER NOT NULL
);
"#,
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up
    /// to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::setup(conn)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: ":memory:".into(),
            source,
        })?;
        Self::setup(conn)
    }

    fn setup(mut conn: Connection) -> Result<Self, StoreError> {
        // The job list alone has a statement per combination of filters (16).
        conn.set_prepared_statement_cache_capacity(64);
        // The pragma answers with the mode it got; a file system without
        // shared memory support silently stays in rollback mode, and then the
        // durability argument above would not hold.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(StoreError::sql("switching to WAL mode"))?;
        if !matches!(mode.as_str(), "wal" | "memory") {
            return Err(StoreError::Corrupt {
                what: "journal mode",
                detail: format!("SQLite refused WAL mode and stayed in '{mode}'"),
            });
        }
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(StoreError::sql("configuring the database"))?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut conn)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(StoreError::sql("reading the schema version"))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let next = i + 1;
        let tx = conn.transaction().map_err(|source| StoreError::Migrate {
            version: next,
            source,
        })?;
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", next as i64))
            .and_then(|()| tx.commit())
            .map_err(|source| StoreError::Migrate {
                version: next,
                source,
            })?;
    }
    Ok(())
}

const JOB_COLUMNS: &str = "key, user_name, name, state, pending_reason, reason, attempt, \
    failed_attempts, queue, priority, format, spec_json, submitted_at_ms, started_at_ms, \
    finished_at_ms, deadline_at_ms, stop_requested, opportunistic, preempted_by, preemptions";

fn corrupt(what: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.into(),
    }
}

/// A row as read, before its text fields are checked.
struct RawJob {
    key: i64,
    user: String,
    name: String,
    state: String,
    pending_reason: Option<String>,
    reason: Option<String>,
    attempt: u32,
    failed_attempts: u32,
    queue: String,
    priority: i32,
    format: String,
    spec_json: String,
    submitted_at_ms: i64,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    deadline_at_ms: Option<i64>,
    stop_requested: bool,
    opportunistic: bool,
    preempted_by: Option<String>,
    preemptions: u32,
}

fn raw_job(r: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        key: r.get(0)?,
        user: r.get(1)?,
        name: r.get(2)?,
        state: r.get(3)?,
        pending_reason: r.get(4)?,
        reason: r.get(5)?,
        attempt: r.get(6)?,
        failed_attempts: r.get(7)?,
        queue: r.get(8)?,
        priority: r.get(9)?,
        format: r.get(10)?,
        spec_json: r.get(11)?,
        submitted_at_ms: r.get(12)?,
        started_at_ms: r.get(13)?,
        finished_at_ms: r.get(14)?,
        deadline_at_ms: r.get(15)?,
        stop_requested: r.get(16)?,
        opportunistic: r.get(17)?,
        preempted_by: r.get(18)?,
        preemptions: r.get(19)?,
    })
}

pub(crate) fn ms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl TryFrom<RawJob> for JobRecord {
    type Error = StoreError;
    fn try_from(r: RawJob) -> Result<Self, StoreError> {
        Ok(JobRecord {
            key: r.key,
            id: JobId::new(&r.user, &r.name).map_err(|e| corrupt("job id", e))?,
            state: JobState::parse(&r.state)
                .ok_or_else(|| corrupt("job state", r.state.clone()))?,
            pending_reason: r.pending_reason,
            reason: r.reason,
            attempt: r.attempt,
            failed_attempts: r.failed_attempts,
            queue: r.queue,
            priority: r.priority,
            format: r.format,
            spec_json: r.spec_json,
            submitted_at_ms: ms(r.submitted_at_ms),
            started_at_ms: r.started_at_ms.map(ms),
            finished_at_ms: r.finished_at_ms.map(ms),
            deadline_at_ms: r.deadline_at_ms.map(ms),
            stop_requested: r.stop_requested,
            opportunistic: r.opportunistic,
            preempted_by: r.preempted_by,
            preemptions: r.preemptions,
        })
    }
}

fn query_jobs(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<JobRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(StoreError::sql("reading jobs"))?;
    let rows = stmt
        .query_map(params, raw_job)
        .map_err(StoreError::sql("reading jobs"))?;
    rows.map(|r| {
        r.map_err(StoreError::sql("reading jobs"))
            .and_then(JobRecord::try_from)
    })
    .collect()
}

fn job_in(tx: &Transaction<'_>, key: i64) -> Result<JobRecord, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE key = ?1");
    query_jobs(tx, &sql, &[&key])?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::NotFound(format!("job #{key}")))
}

fn put_task(tx: &Transaction<'_>, key: i64, t: &TaskRecord) -> Result<(), StoreError> {
    let gpus = serde_json::to_string(&t.gpus).map_err(|e| corrupt("task gpus", e.to_string()))?;
    let ports =
        serde_json::to_string(&t.ports).map_err(|e| corrupt("task ports", e.to_string()))?;
    tx.prepare_cached(
        "INSERT INTO tasks (job_key, attempt, task, state, exit_code, signal, reason,
             host, gpus_json, ports_json, restarts, started_at_ms, finished_at_ms, dir,
             restart_at_ms, restart_streak)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (job_key, attempt, task) DO UPDATE SET
             state = excluded.state, exit_code = excluded.exit_code, signal = excluded.signal,
             reason = excluded.reason, host = excluded.host, gpus_json = excluded.gpus_json,
             ports_json = excluded.ports_json, restarts = excluded.restarts,
             started_at_ms = excluded.started_at_ms, finished_at_ms = excluded.finished_at_ms,
             dir = excluded.dir, restart_at_ms = excluded.restart_at_ms,
             restart_streak = excluded.restart_streak",
    )
    .and_then(|mut s| {
        s.execute(params![
            key,
            t.attempt,
            t.task.to_string(),
            t.state.as_str(),
            t.exit_code,
            t.signal,
            t.reason,
            t.host,
            gpus,
            ports,
            t.restarts,
            t.started_at_ms.map(to_i64),
            t.finished_at_ms.map(to_i64),
            t.dir,
            t.restart_at_ms.map(to_i64),
            t.restart_streak,
        ])
    })
    .map_err(StoreError::sql("writing a task"))?;
    Ok(())
}

fn add_event(
    tx: &Transaction<'_>,
    key: i64,
    at_ms: u64,
    kind: &str,
    message: &str,
    line: Option<&str>,
) -> Result<(), StoreError> {
    // The line's last event gives way: it is the one line, at the end.
    if let Some(line) = line {
        tx.prepare_cached("DELETE FROM events WHERE job_key = ?1 AND line = ?2")
            .and_then(|mut s| s.execute(params![key, line]))
            .map_err(StoreError::sql("replacing an event"))?;
    }
    tx.prepare_cached(
        "INSERT INTO events (job_key, at_ms, kind, message, line) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![key, to_i64(at_ms), kind, message, line]))
    .map_err(StoreError::sql("appending an event"))?;
    Ok(())
}

fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        name: r.get(0)?,
        is_admin: r.get(1)?,
        password_hash: r.get(2)?,
        created_at_ms: ms(r.get(3)?),
        identity: match (r.get::<_, Option<i64>>(4)?, r.get::<_, Option<i64>>(5)?) {
            (Some(uid), Some(gid)) => Some(Identity {
                uid: u32::try_from(uid).unwrap_or(u32::MAX),
                gid: u32::try_from(gid).unwrap_or(u32::MAX),
                unix_user: r.get(6)?,
            }),
            _ => None,
        },
    })
}

impl Store for SqliteStore {
    fn submit(&self, job: &NewJob) -> Result<JobRecord, StoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(StoreError::sql("starting a transaction"))?;
            let inserted = tx.execute(
                "INSERT INTO jobs (user_name, name, state, pending_reason, queue, priority, format,
                     spec_json, submitted_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    job.id.user(),
                    job.id.name(),
                    JobState::Waiting.as_str(),
                    job.pending_reason,
                    job.queue,
                    job.priority,
                    job.format,
                    job.spec_json,
                    to_i64(job.submitted_at_ms),
                ],
            );
            match inserted {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(StoreError::Conflict(format!("job {}", job.id)));
                }
                other => other.map_err(StoreError::sql("storing a job"))?,
            };
            let key = tx.last_insert_rowid();
            add_event(
                &tx,
                key,
                job.submitted_at_ms,
                "submitted",
                &format!("submitted as {} format", job.format),
                None,
            )?;
            let record = job_in(&tx, key)?;
            tx.commit().map_err(StoreError::sql("committing a job"))?;
            Ok(record)
        })
    }

    fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE user_name = ?1 AND name = ?2");
            Ok(query_jobs(conn, &sql, &[&id.user(), &id.name()])?
                .into_iter()
                .next())
        })
    }

    fn job_by_key(&self, key: i64) -> Result<Option<JobRecord>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE key = ?1");
            Ok(query_jobs(conn, &sql, &[&key])?.into_iter().next())
        })
    }

    fn jobs(&self, f: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        self.with(|conn| {
            // Only the filters given go into the statement, so the planner
            // can walk an index for them (`state = ?1 OR ?1 IS NULL` makes it
            // scan every job, which a long history makes slow).
            let state = f.state.map(JobState::as_str);
            let mut conds: Vec<&str> = Vec::new();
            let mut params: Vec<&dyn rusqlite::ToSql> = Vec::new();
            if let Some(user) = &f.user {
                conds.push("user_name = ?");
                params.push(user);
            }
            if let Some(state) = &state {
                conds.push("state = ?");
                params.push(state);
            }
            if let Some(name) = &f.name {
                conds.push("instr(lower(name), lower(?)) > 0");
                params.push(name);
            }
            if let Some(before) = &f.before_key {
                conds.push("key < ?");
                params.push(before);
            }
            params.push(&f.limit);
            let filter = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs {filter} ORDER BY key DESC LIMIT ?");
            query_jobs(conn, &sql, &params)
        })
    }

    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('WAITING', 'RUNNING', 'STOPPING') ORDER BY key"
            );
            query_jobs(conn, &sql, &[])
        })
    }

    fn count_by_state(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                .map_err(StoreError::sql("counting jobs"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(StoreError::sql("counting jobs"))?;
            rows.map(|r| {
                r.map(|(s, n)| (s, n.max(0) as u64))
                    .map_err(StoreError::sql("counting jobs"))
            })
            .collect()
        })
    }

    fn apply(&self, key: i64, c: &Change) -> Result<JobRecord, StoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(StoreError::sql("starting a transaction"))?;
            let mut job = job_in(&tx, key)?;
            let p = &c.job;
            if let Some(v) = p.state {
                job.state = v;
            }
            if let Some(v) = &p.pending_reason {
                job.pending_reason = v.clone();
            }
            if let Some(v) = &p.reason {
                job.reason = v.clone();
            }
            if let Some(v) = p.attempt {
                job.attempt = v;
            }
            if let Some(v) = p.failed_attempts {
                job.failed_attempts = v;
            }
            if let Some(v) = p.started_at_ms {
                job.started_at_ms = v;
            }
            if let Some(v) = p.finished_at_ms {
                job.finished_at_ms = v;
            }
            if let Some(v) = p.deadline_at_ms {
                job.deadline_at_ms = v;
            }
            if let Some(v) = p.stop_requested {
                job.stop_requested = v;
            }
            if let Some(v) = p.opportunistic {
                job.opportunistic = v;
            }
            if let Some(v) = &p.preempted_by {
                job.preempted_by = v.clone();
            }
            if let Some(v) = p.preemptions {
                job.preemptions = v;
            }
            tx.prepare_cached(
                "UPDATE jobs SET state = ?2, pending_reason = ?3, reason = ?4, attempt = ?5,
                     failed_attempts = ?6, started_at_ms = ?7, finished_at_ms = ?8,
                     deadline_at_ms = ?9, stop_requested = ?10, opportunistic = ?11,
                     preempted_by = ?12, preemptions = ?13
                 WHERE key = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    key,
                    job.state.as_str(),
                    job.pending_reason,
                    job.reason,
                    job.attempt,
                    job.failed_attempts,
                    job.started_at_ms.map(to_i64),
                    job.finished_at_ms.map(to_i64),
                    job.deadline_at_ms.map(to_i64),
                    job.stop_requested,
                    job.opportunistic,
                    job.preempted_by,
                    job.preemptions,
                ])
            })
            .map_err(StoreError::sql("updating a job"))?;
            if let Some(u) = &c.usage {
                tx.prepare_cached(
                    "INSERT INTO usage (user, value, at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT(user) DO UPDATE SET value = excluded.value, at_ms = excluded.at_ms",
                )
                .and_then(|mut s| s.execute(params![u.user, u.value, to_i64(u.at_ms)]))
                .map_err(StoreError::sql("recording usage"))?;
            }
            for t in &c.tasks {
                put_task(&tx, key, t)?;
            }
            for e in &c.events {
                add_event(&tx, key, e.at_ms, &e.kind, &e.message, e.line.as_deref())?;
            }
            tx.commit()
                .map_err(StoreError::sql("committing a change"))?;
            Ok(job)
        })
    }

    fn tasks(&self, key: i64, attempt: u32) -> Result<Vec<TaskRecord>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT attempt, task, state, exit_code, signal, reason, host, gpus_json,
                         ports_json, restarts, started_at_ms, finished_at_ms, dir,
                         restart_at_ms, restart_streak
                     FROM tasks WHERE job_key = ?1 AND attempt = ?2 ORDER BY rowid",
                )
                .map_err(StoreError::sql("reading tasks"))?;
            let rows = stmt
                .query_map(params![key, attempt], |r| {
                    Ok((
                        r.get::<_, u32>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<i32>>(3)?,
                        r.get::<_, Option<i32>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, String>(7)?,
                        r.get::<_, String>(8)?,
                        r.get::<_, u32>(9)?,
                        r.get::<_, Option<i64>>(10)?,
                        r.get::<_, Option<i64>>(11)?,
                        r.get::<_, Option<String>>(12)?,
                        r.get::<_, Option<i64>>(13)?,
                        r.get::<_, u32>(14)?,
                    ))
                })
                .map_err(StoreError::sql("reading tasks"))?;
            rows.map(|row| {
                let (
                    attempt,
                    task,
                    state,
                    exit_code,
                    signal,
                    reason,
                    host,
                    gpus,
                    ports,
                    restarts,
                    started,
                    finished,
                    dir,
                    restart_at,
                    restart_streak,
                ) = row.map_err(StoreError::sql("reading tasks"))?;
                Ok(TaskRecord {
                    attempt,
                    task: task.parse::<TaskId>().map_err(|e| corrupt("task id", e))?,
                    state: TaskState::parse(&state)
                        .ok_or_else(|| corrupt("task state", state.clone()))?,
                    exit_code,
                    signal,
                    reason,
                    host,
                    gpus: serde_json::from_str(&gpus)
                        .map_err(|e| corrupt("task gpus", e.to_string()))?,
                    ports: serde_json::from_str(&ports)
                        .map_err(|e| corrupt("task ports", e.to_string()))?,
                    restarts,
                    started_at_ms: started.map(ms),
                    finished_at_ms: finished.map(ms),
                    dir,
                    restart_at_ms: restart_at.map(ms),
                    restart_streak,
                })
            })
            .collect()
        })
    }

    fn events(&self, key: i64) -> Result<Vec<Event>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, at_ms, kind, message FROM events WHERE job_key = ?1 ORDER BY seq",
                )
                .map_err(StoreError::sql("reading events"))?;
            let rows = stmt
                .query_map([key], |r| {
                    Ok(Event {
                        seq: r.get(0)?,
                        at_ms: ms(r.get(1)?),
                        kind: r.get(2)?,
                        message: r.get(3)?,
                    })
                })
                .map_err(StoreError::sql("reading events"))?;
            rows.map(|r| r.map_err(StoreError::sql("reading events")))
                .collect()
        })
    }

    fn delete_job(&self, key: i64) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(StoreError::sql("starting a transaction"))?;
            let job = job_in(&tx, key)?;
            if !job.state.is_finished() {
                return Err(StoreError::NotFinished {
                    id: job.id.to_string(),
                    state: job.state.as_str(),
                });
            }
            tx.execute("DELETE FROM jobs WHERE key = ?1", [key])
                .map_err(StoreError::sql("deleting a job"))?;
            tx.commit().map_err(StoreError::sql("committing a delete"))
        })
    }

    fn set_password(&self, name: &str, password_hash: Option<&str>) -> Result<(), StoreError> {
        self.with(|conn| {
            let n = conn
                .execute(
                    "UPDATE users SET password_hash = ?2 WHERE name = ?1",
                    params![name, password_hash],
                )
                .map_err(StoreError::sql("setting a password"))?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {name}")));
            }
            Ok(())
        })
    }

    fn add_user(&self, u: &User) -> Result<(), StoreError> {
        self.with(|conn| {
            let r = conn.execute(
                "INSERT INTO users (name, is_admin, password_hash, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![u.name, u.is_admin, u.password_hash, to_i64(u.created_at_ms)],
            );
            match r {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::Conflict(format!("user {}", u.name)))
                }
                other => other.map(|_| ()).map_err(StoreError::sql("adding a user")),
            }
        })
    }

    fn set_identity(&self, name: &str, id: &Identity) -> Result<(), StoreError> {
        self.with(|conn| {
            let r = conn.execute(
                "UPDATE users SET uid = ?2, gid = ?3, unix_user = ?4 WHERE name = ?1",
                params![name, i64::from(id.uid), i64::from(id.gid), id.unix_user],
            );
            match r {
                Ok(0) => Err(StoreError::NotFound(format!("user {name}"))),
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::Conflict(format!(
                        "uid {} (it is another user's)",
                        id.uid
                    )))
                }
                Err(e) => Err(StoreError::sql("setting a user's uid")(e)),
            }
        })
    }

    fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT name, is_admin, password_hash, created_at_ms, uid, gid, unix_user FROM users WHERE name = ?1",
                [name],
                user_row,
            )
            .optional()
            .map_err(StoreError::sql("reading a user"))
        })
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, is_admin, password_hash, created_at_ms, uid, gid, unix_user FROM users ORDER BY name",
                )
                .map_err(StoreError::sql("reading users"))?;
            let rows = stmt
                .query_map([], user_row)
                .map_err(StoreError::sql("reading users"))?;
            rows.map(|r| r.map_err(StoreError::sql("reading users")))
                .collect()
        })
    }

    fn add_token(&self, user: &str, token_hash: &str, life: TokenLife) -> Result<(), StoreError> {
        self.with(|conn| {
            let r = conn.execute(
                "INSERT INTO tokens (token_hash, user_name, created_at_ms, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    token_hash,
                    user,
                    life.created_at_ms as i64,
                    life.expires_at_ms.map(|t| t as i64)
                ],
            );
            match r {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    // The token hash is the primary key and the user a
                    // foreign key: tell the two apart for the caller.
                    let known: bool = conn
                        .query_row("SELECT 1 FROM users WHERE name = ?1", [user], |_| Ok(()))
                        .optional()
                        .map_err(StoreError::sql("looking up a user"))?
                        .is_some();
                    if known {
                        Err(StoreError::Conflict("that token".into()))
                    } else {
                        Err(StoreError::NotFound(format!("user {user}")))
                    }
                }
                other => other.map(|_| ()).map_err(StoreError::sql("adding a token")),
            }
        })
    }

    fn user_by_token(&self, token_hash: &str, now_ms: u64) -> Result<Option<User>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT u.name, u.is_admin, u.password_hash, u.created_at_ms, u.uid, u.gid, u.unix_user
                 FROM tokens t JOIN users u ON u.name = t.user_name
                 WHERE t.token_hash = ?1 AND (t.expires_at_ms IS NULL OR t.expires_at_ms > ?2)",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![token_hash, now_ms as i64], user_row)
                    .optional()
            })
            .map_err(StoreError::sql("looking up a token"))
        })
    }

    fn revoke_token(&self, token_hash: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            conn.execute("DELETE FROM tokens WHERE token_hash = ?1", [token_hash])
                .map(|n| n > 0)
                .map_err(StoreError::sql("revoking a token"))
        })
    }

    fn revoke_tokens(&self, user: &str, which: Revoke) -> Result<usize, StoreError> {
        self.with(|conn| {
            let sql = match which {
                Revoke::All => "DELETE FROM tokens WHERE user_name = ?1",
                Revoke::Expiring => {
                    "DELETE FROM tokens WHERE user_name = ?1 AND expires_at_ms IS NOT NULL"
                }
            };
            conn.execute(sql, [user])
                .map_err(StoreError::sql("revoking tokens"))
        })
    }

    fn purge_expired_tokens(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.with(|conn| {
            conn.execute(
                "DELETE FROM tokens WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1",
                [now_ms as i64],
            )
            .map_err(StoreError::sql("removing expired tokens"))
        })
    }

    fn usage(&self) -> Result<Vec<Usage>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT user, value, at_ms FROM usage ORDER BY user")
                .map_err(StoreError::sql("reading usage"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Usage {
                        user: r.get(0)?,
                        value: r.get(1)?,
                        at_ms: ms(r.get(2)?),
                    })
                })
                .map_err(StoreError::sql("reading usage"))?;
            rows.map(|r| r.map_err(StoreError::sql("reading usage")))
                .collect()
        })
    }

    fn put_queue(&self, queue: &QueueRecord) -> Result<(), StoreError> {
        self.with(|conn| queues::put(conn, queue))
    }

    fn remove_queue(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|conn| queues::remove(conn, name))
    }

    fn queues(&self) -> Result<Vec<QueueRecord>, StoreError> {
        self.with(queues::all)
    }

    fn grant_queue(&self, queue: &str, user: &str) -> Result<(), StoreError> {
        self.with(|conn| queues::grant(conn, queue, user))
    }

    fn put_credential(&self, c: &RegistryCredential) -> Result<(), StoreError> {
        self.with(|conn| credentials::put(conn, c))
    }

    fn remove_credential(&self, user: &str, registry: &str) -> Result<bool, StoreError> {
        self.with(|conn| credentials::remove(conn, user, registry))
    }

    fn credentials(&self, user: &str) -> Result<Vec<RegistryCredential>, StoreError> {
        self.with(|conn| credentials::of_user(conn, user))
    }

    fn mark_private_image(&self, repository: &str, at_ms: u64) -> Result<(), StoreError> {
        self.with(|conn| credentials::mark_private(conn, repository, at_ms))
    }

    fn is_private_image(&self, repository: &str) -> Result<bool, StoreError> {
        self.with(|conn| credentials::is_private(conn, repository))
    }

    fn revoke_queue(&self, queue: &str, user: &str) -> Result<bool, StoreError> {
        self.with(|conn| queues::revoke(conn, queue, user))
    }
}
