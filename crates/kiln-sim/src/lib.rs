//! kiln-sim: replays a GPU cluster trace through kiln's real scheduler
//! (`kiln_sched::plan`) and through a FIFO baseline, with simulated time,
//! so that policy changes can be judged on a production workload without
//! running a single process.
//!
//! The pieces: [`trace`] reads the CSV files, [`recipe`] turns pods into
//! kiln jobs (adding the queues, users and gangs the trace lacks, by a fixed
//! seeded recipe), [`sim`] runs the event loop, [`fifo`] is the baseline,
//! [`ledger`] checks every placement independently of the scheduler, and
//! [`report`] turns the outcome into numbers and markdown.

pub mod fifo;
pub mod ledger;
pub mod recipe;
pub mod report;
pub mod sim;
pub mod spec;
pub mod trace;

use std::path::PathBuf;

/// Everything the library can fail at: only reading and parsing the trace;
/// the simulation itself counts anomalies instead of failing, so one bad
/// pass does not hide the rest of the numbers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Csv {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, Error>;
