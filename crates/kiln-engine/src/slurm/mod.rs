//! The Slurm engine's functional core (docs/engines.md section 3): pure functions
//! over Slurm's text and kiln's plain descriptions, with no processes and no files.
//! The shell that runs `sbatch`, `srun`, `squeue` and `sinfo` calls into these, so
//! everything that can be wrong about Slurm's formats is table-tested here against
//! output captured from a real cluster (`testdata/`).
//!
//! - [`hostlist`] expands and compresses `n[1-3,5]` and `2(x3),1`;
//! - [`gres`] reads `gpu:a100:2(IDX:0-1)`;
//! - [`parse`] reads `squeue --json` and `sinfo --json`, 22.05 and 23.02+ shapes;
//! - [`state`] puts Slurm job states in kiln's terms;
//! - [`script`] writes the `sbatch` and `srun` argument lists, and matches `gpuType`;
//! - [`alloc`] reads the allocation a launcher sees, and puts each task on a node;
//! - [`reasons`] says why a job pends, in plain words;
//! - [`cli`] is the shell: Slurm's commands run as processes, with deadlines;
//! - `engine` (with `poll`, [`files`], [`book`]) is the engine behind the
//!   `Engine` trait, and [`launcher`] the batch script of every attempt.

pub mod alloc;
pub mod binary;
pub mod book;
pub mod cli;
mod engine;
pub mod files;
pub mod gres;
pub mod hostlist;
pub mod launcher;
pub mod parse;
mod poll;
pub mod reasons;
mod reattach;
pub mod script;
pub mod state;

pub use alloc::{place_tasks, Allocation, Component, Placement};
pub use cli::{Cli, SlurmApi};
pub use engine::{SlurmConfig, SlurmEngine};
pub use gres::{parse_gres, Gres};
pub use hostlist::{
    compress_hostlist, compress_tasks_per_node, expand_hostlist, expand_tasks_per_node,
};
pub use parse::{parse_sinfo, parse_squeue, NodeGpus, SlurmJob, SlurmNode};
pub use reasons::{pending_words, Ask, PendingFacts, PendingWords};
pub use script::{
    group_by_shape, match_gpu_type, sbatch_args, srun_args, time_limit_minutes, Shape, ShapeGroup,
    StepRequest, SubmitRequest, TaskRequest,
};
pub use state::{job_view, unrecorded_end, EndKind, JobView, UnrecordedEnd};
