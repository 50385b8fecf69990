//! kiln's job protocol: one canonical job model, the formats people already
//! write (OpenPAI v1 JSON and v2 YAML, Kubeflow PyTorchJob, kiln's own), the
//! rules every job must meet, and the pure policies the engine applies to a
//! job: the environment of each task and the completion policy.
//!
//! No I/O happens here; everything is a function of its arguments.

pub mod completion;
pub mod dirs;
pub mod env;
pub mod error;
pub mod export;
pub mod formats;
pub mod ids;
pub mod model;
pub mod quantity;
pub mod validate;
pub mod words;

pub use error::{Issue, SpecError};
pub use formats::{parse, parse_stored, Format, Parsed};
pub use ids::{JobId, TaskId};
pub use model::JobSpec;
