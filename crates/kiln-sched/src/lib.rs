//! kiln's scheduler as a pure function: given the nodes, what runs on them and
//! what waits, decide which jobs start now, on which nodes and GPUs, and why
//! every other job waits. No I/O, no clocks: time comes in as an argument.
//!
//! Policy (docs/scheduling.md): queues with guaranteed quotas lend what
//! they do not use; jobs go in order of quota room, fair share (decayed
//! usage), priority and age; a job's tasks are placed all together or not at
//! all (gang). The first job that cannot start holds a reservation: later
//! jobs start ahead of it with a promise not to delay it (a `maxDuration`
//! that ends in time, EASY backfilling), or without one when they may be
//! preempted. A blocked job of higher standing, or one whose queue takes
//! back its quota, preempts such jobs.

pub mod fair;
mod fit;
mod model;
mod place;
mod plan;
mod preempt;
pub mod quota;
mod reason;

pub use fit::{never_fits, task_requests, Capacity, TooBig};
pub use model::{
    model_matches, Gpu, GpuQuota, JobRequest, Node, Placed, Queue, Quota, RunningJob, TaskRequest,
};
pub use plan::{plan, schedule, Pass, Plan, Preempt, Start, Waiting};
pub use preempt::DRAIN_PATIENCE_MS;
pub use quota::{Held, QueueUse, DEFAULT_QUEUE};
pub use reason::{Missing, Place, Reason, Share};
