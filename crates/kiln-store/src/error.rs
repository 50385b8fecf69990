#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        source: rusqlite::Error,
    },

    #[error("database migration to version {version} failed: {source}")]
    Migrate {
        version: usize,
        source: rusqlite::Error,
    },

    #[error("the database is version {found}, newer than this kiln ({known}); upgrade kiln")]
    TooNew { found: usize, known: usize },

    #[error("{0} already exists")]
    Conflict(String),

    #[error("{0} does not exist")]
    NotFound(String),

    #[error("job {id} is {state}; only finished jobs can be deleted")]
    NotFinished { id: String, state: &'static str },

    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },

    #[error("database error while {action}: {source}")]
    Sql {
        action: &'static str,
        source: rusqlite::Error,
    },

    #[error("the database lock was poisoned by a panic in another thread")]
    Poisoned,
}

impl StoreError {
    pub(crate) fn sql(action: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| StoreError::Sql { action, source }
    }
}
