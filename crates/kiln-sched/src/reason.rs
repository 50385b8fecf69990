//! Why a job waits, as data: the server shows it in English (`Display`),
//! and the web UI renders the same facts in the reader's language.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "code",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Reason {
    /// One task needs more than any node has.
    TaskTooBig {
        /// The task's id (`main-0`), as people name it.
        task: String,
        gpus: u32,
        gpu_type: Option<String>,
        cpus: u32,
        memory_mb: u64,
    },
    /// The tasks together need more than the whole cluster.
    JobTooBig {
        gpus: u64,
        cpus: u64,
        memory_mb: u64,
    },
    /// Not enough is free now.
    Short {
        missing: Vec<Missing>,
        #[serde(flatten)]
        queue: Place,
    },
    /// Enough is free in total, but not on the nodes its tasks need together.
    Scattered {
        #[serde(flatten)]
        queue: Place,
    },
    /// Behind the first blocked job, and without a maxDuration to backfill.
    BehindHead {
        head: String,
        #[serde(flatten)]
        queue: Place,
    },
    /// Starting it would delay the first blocked job.
    WouldDelay {
        head: String,
        #[serde(flatten)]
        queue: Place,
    },
    /// Its user runs as many GPUs in the queue as the queue allows one user.
    UserLimit {
        user: String,
        limit: u64,
        running: u64,
        need: u64,
        #[serde(flatten)]
        queue: Place,
    },
    /// It asks not to be preempted, so it runs only within its queue's
    /// quota, and the quota is in use.
    OverQuota {
        /// GPUs it needs.
        need: u64,
        #[serde(flatten)]
        queue: Place,
    },
    /// Jobs are being stopped to make room for it (or it waits for jobs
    /// already stopping).
    Preempting {
        jobs: Vec<String>,
        #[serde(flatten)]
        queue: Place,
    },
    /// Jobs that started on idle resources after it, of the same standing
    /// otherwise, are let finish: preempting them would throw away more
    /// work than the wait is expected to cost. They are preempted if still
    /// running at `until_ms` (ms since the epoch).
    Draining {
        jobs: Vec<String>,
        until_ms: u64,
        #[serde(flatten)]
        queue: Place,
    },
}

/// Where a job stands in its queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Place {
    /// Waiting jobs ahead of it in the same queue.
    pub ahead: usize,
    pub queue: String,
    /// The queue's GPUs: its quota, its use, and what it lends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<Share>,
}

/// A queue's GPUs, for reasons: "queue vision uses 6 of its 8 GPUs, 2 lent
/// to nlp until it needs them".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Share {
    pub quota_gpus: u64,
    pub used_gpus: u64,
    pub borrowed_gpus: u64,
    pub lent_gpus: u64,
    pub lent_to: Vec<String>,
}

impl Share {
    /// None for a queue without GPUs in its quota or use: nothing to say.
    pub fn of(u: &crate::quota::QueueUse) -> Option<Share> {
        let s = Share {
            quota_gpus: u.quota.gpu_count(),
            used_gpus: u.used.gpu_count(),
            borrowed_gpus: u.borrowed.gpu_count(),
            lent_gpus: u.lent_gpus,
            lent_to: u.lent_to.clone(),
        };
        (s.quota_gpus > 0 || s.used_gpus > 0).then_some(s)
    }
}

/// One resource a job needs more of than is free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "resource",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Missing {
    Gpus {
        gpu_type: Option<String>,
        need: u64,
        free: u64,
    },
    Cpus {
        need: u64,
        free: u64,
    },
    Memory {
        need_mb: u64,
        free_mb: u64,
    },
}

impl Reason {
    /// Whether waiting can ever help.
    pub fn never_runs(&self) -> bool {
        matches!(self, Reason::TaskTooBig { .. } | Reason::JobTooBig { .. })
    }
}

use crate::fit::gpus;
use kiln_spec::words::count;

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Gpus {
                gpu_type,
                need,
                free,
            } => write!(f, "needs {}, {free} free", gpus(*need, gpu_type.as_deref())),
            Missing::Cpus { need, free } => write!(f, "needs {}, {free} free", count(*need, "CPU")),
            Missing::Memory { need_mb, free_mb } => {
                write!(f, "needs {need_mb} MiB memory, {free_mb} MiB free")
            }
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let jobs = if self.ahead == 1 { "job" } else { "jobs" };
        write!(f, "{} {jobs} ahead in queue {}", self.ahead, self.queue)?;
        if let Some(s) = &self.share {
            write!(f, "; {s}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the queue uses {} of its {}",
            self.used_gpus,
            count(self.quota_gpus, "GPU")
        )?;
        if self.borrowed_gpus > 0 {
            write!(f, " ({} borrowed)", self.borrowed_gpus)?;
        }
        if self.lent_gpus > 0 {
            write!(
                f,
                ", {} lent to {} until it needs them",
                self.lent_gpus,
                self.lent_to.join(", ")
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::TaskTooBig {
                task,
                gpus: g,
                gpu_type,
                cpus,
                memory_mb,
            } => write!(
                f,
                "can never run here: task {task} needs {}, {} and {memory_mb} MiB on one node, and no node has that much",
                gpus(u64::from(*g), gpu_type.as_deref()),
                count(*cpus, "CPU")
            ),
            Reason::JobTooBig {
                gpus,
                cpus,
                memory_mb,
            } => write!(
                f,
                "can never run here: the job needs {}, {} and {memory_mb} MiB in all, more than the cluster has",
                count(*gpus, "GPU"),
                count(*cpus, "CPU")
            ),
            Reason::Short { missing, queue } => {
                for (i, m) in missing.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{m}")?;
                }
                write!(f, "; {queue}")
            }
            Reason::Scattered { queue } => write!(
                f,
                "enough is free in total, but not on the nodes its tasks need together; {queue}"
            ),
            Reason::BehindHead { head, queue } => write!(
                f,
                "waiting behind {head}, first in line; it asks not to be preempted, so it may start ahead only with a maxDuration that ends in time; {queue}"
            ),
            Reason::WouldDelay { head, queue } => write!(
                f,
                "would delay {head}, which is first in line for the same resources; {queue}"
            ),
            Reason::UserLimit {
                user,
                limit,
                running,
                need,
                queue,
            } => write!(
                f,
                "{user} may run at most {} in queue {} and runs {running}; this job needs {need} more; {queue}",
                count(*limit, "GPU"),
                queue.queue
            ),
            Reason::OverQuota { need, queue } => write!(
                f,
                "asks not to be preempted, so it runs only within queue {}'s quota, which has no room for {} now; {queue}",
                queue.queue,
                count(*need, "GPU")
            ),
            Reason::Preempting { jobs, queue } => write!(
                f,
                "making room: waiting for {} to stop; {queue}",
                jobs.join(", ")
            ),
            Reason::Draining {
                jobs,
                until_ms,
                queue,
            } => write!(
                f,
                "letting {} finish (started on idle resources after it; preempted if still running at {} UTC); {queue}",
                jobs.join(", "),
                utc_time(*until_ms)
            ),
        }
    }
}

/// `HH:MM:SS` of a time in ms since the epoch, UTC: enough to say when
/// within the next minutes (the UI shows it in the reader's own zone).
fn utc_time(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_words_and_the_data_say_the_same() {
        let r = Reason::Short {
            missing: vec![
                Missing::Gpus {
                    gpu_type: Some("A100".into()),
                    need: 4,
                    free: 2,
                },
                Missing::Memory {
                    need_mb: 2048,
                    free_mb: 1024,
                },
            ],
            queue: Place {
                ahead: 1,
                queue: "default".into(),
                share: None,
            },
        };
        assert_eq!(
            r.to_string(),
            "needs 4 A100 GPUs, 2 free, needs 2048 MiB memory, 1024 MiB free; 1 job ahead in queue default"
        );
        assert_eq!(
            serde_json::to_value(&r).expect("json"),
            serde_json::json!({
                "code": "short",
                "missing": [
                    {"resource": "gpus", "gpuType": "A100", "need": 4, "free": 2},
                    {"resource": "memory", "needMb": 2048, "freeMb": 1024}
                ],
                "ahead": 1,
                "queue": "default"
            })
        );
        let back: Reason =
            serde_json::from_value(serde_json::to_value(&r).expect("json")).expect("parsed");
        assert_eq!(back, r);
        assert!(!r.never_runs());
    }

    #[test]
    fn tasks_are_named_by_id_and_counts_agree() {
        let r = Reason::TaskTooBig {
            task: "main-0".into(),
            gpus: 1,
            gpu_type: None,
            cpus: 1,
            memory_mb: 512,
        };
        assert_eq!(
            r.to_string(),
            "can never run here: task main-0 needs 1 GPU, 1 CPU and 512 MiB on one node, and no node has that much"
        );
        assert_eq!(serde_json::to_value(&r).expect("json")["task"], "main-0");
        let j = Reason::JobTooBig {
            gpus: 1,
            cpus: 2,
            memory_mb: 1,
        };
        assert!(
            j.to_string().contains("needs 1 GPU, 2 CPUs and 1 MiB"),
            "{j}"
        );
        let m = Missing::Cpus { need: 1, free: 0 };
        assert_eq!(m.to_string(), "needs 1 CPU, 0 free");
        let g = Missing::Gpus {
            gpu_type: Some("A100".into()),
            need: 1,
            free: 0,
        };
        assert_eq!(g.to_string(), "needs 1 A100 GPU, 0 free");
    }
}
