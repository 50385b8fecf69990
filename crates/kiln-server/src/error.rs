use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),

    #[error(transparent)]
    Control(#[from] crate::control::ControlError),

    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },

    #[error("{0}")]
    Config(String),

    #[error("no randomness for tokens: {0}")]
    Random(String),
}

impl ServerError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        ServerError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}
