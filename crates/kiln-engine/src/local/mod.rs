//! The embedded default engine: tasks are process trees on this machine.

pub mod binds;
pub mod cgroup;
pub mod container;
pub mod container_run;
pub mod delegation;
mod engine;
pub mod files;
pub mod gpu_usage;
pub mod handle;
pub mod image_pull;
mod launch;
pub mod loader_env;
pub mod perms;
mod ports;
pub(crate) mod reattach;
pub mod resources;
pub mod sandbox;
pub(crate) mod scratch;
pub mod standby;
pub mod supervisor;
pub mod usage;

pub use cgroup::Limits;
pub use engine::{LocalConfig, LocalEngine};
pub use files::{Exit, LaunchSpec, RunAs, Started, TaskDir};
pub use handle::Supervisor;
pub use sandbox::{Bind, Sandbox};
pub use standby::{spawn_standby, standby, Standby};
pub use supervisor::{pid_supervises, spawn_supervisor, supervise, supervisor_alive};
