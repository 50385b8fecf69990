use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} is not valid: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("cannot start the supervisor for {dir}: {source}")]
    Spawn {
        dir: PathBuf,
        source: std::io::Error,
    },

    #[error("the task in {0} was started before; a task folder is used once")]
    AlreadyRan(PathBuf),

    #[error("cannot watch or signal a supervisor process: {0}")]
    Pidfd(std::io::Error),

    #[error(
        "{0} does not exist inside the folder it must be in, or leads out of it through a link"
    )]
    Escapes(PathBuf),

    #[error("cannot run the task as uid {uid}: {source}")]
    RunAs { uid: u32, source: std::io::Error },

    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

impl EngineError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| EngineError::Io {
            action,
            path,
            source,
        }
    }
}
