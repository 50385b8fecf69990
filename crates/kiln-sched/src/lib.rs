//! kiln's scheduler as a pure function: given the nodes, what runs on them and
//! what waits, decide which jobs start now, on which nodes and GPUs, and why
//! every other job waits. No I/O, no clocks: time comes in as an argument.
//!
//! Policy: strict queue order (priority, then submission); a job's tasks are
//! placed all together or not at all (gang); the first job that cannot start
//! holds a reservation, and later jobs may start ahead of it only when they
//! have a `maxDuration` and either end before it could start or leave it
//! everything it needs at that time (EASY backfilling). Jobs without a
//! `maxDuration` never start ahead of a blocked job.

mod fit;
mod model;
mod place;
mod plan;
mod reason;

pub use fit::{never_fits, task_requests, Capacity, TooBig};
pub use model::{Gpu, JobRequest, Node, Placed, RunningJob, TaskRequest};
pub use plan::{schedule, Plan, Start, Waiting};
pub use reason::{Missing, Place, Reason};
