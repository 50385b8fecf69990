use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A task run's folder could not be made ready, in words.
    #[error("{0}")]
    Folder(String),

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

    #[error("the standby supervisor did not take {dir}: {source}")]
    Standby {
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

    /// A host list, task count list or gres string from Slurm that kiln cannot read.
    #[error("cannot read Slurm's {what} {value:?}: {why}")]
    SlurmSyntax {
        what: &'static str,
        value: String,
        why: String,
    },

    /// `squeue --json` or `sinfo --json` printed something kiln cannot read.
    #[error("cannot read the output of {command}: {source}")]
    SlurmJson {
        command: &'static str,
        source: serde_json::Error,
    },

    /// Slurm answered, but with errors instead of (or beside) the data.
    #[error("{command} reported: {errors}")]
    SlurmReported {
        command: &'static str,
        errors: String,
    },

    /// A job state this build does not know: guessing could lose or rerun a task.
    #[error("Slurm job {job} is in state {state}, which kiln does not know")]
    SlurmUnknownState { job: String, state: String },

    /// A Slurm command that could not run, failed, or did not answer in time.
    #[error("Slurm's {command}: {why}")]
    SlurmCommand { command: String, why: String },

    /// `gpuType` matches none, or several, of the GPU types Slurm has.
    #[error("{0}")]
    SlurmGpuType(String),

    /// The request cannot be written as one Slurm job.
    #[error("{0}")]
    SlurmRequest(String),

    /// What Slurm allocated does not match the tasks kiln asked for.
    #[error("the Slurm allocation does not match the tasks: {0}")]
    SlurmAllocation(String),
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
