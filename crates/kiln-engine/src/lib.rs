//! Running tasks. The `local` engine runs them on this machine, each under a
//! small supervisor process (kiln re-executed in a hidden mode, as conmon or
//! containerd-shim do) that outlives the server, so a server restart never
//! loses or restarts a running task.

pub mod engine;
pub mod error;
pub mod local;
pub mod slurm;

pub use engine::Engine;
pub use error::EngineError;
