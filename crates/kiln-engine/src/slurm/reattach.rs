//! After a restart of kiln: the Slurm engine finds the attempts of running
//! jobs again from their folders on the shared path (docs/engines.md 3.7).

use std::collections::HashMap;
use std::time::Instant;

use tracing::warn;

use super::engine::{lock, SlurmEngine, TaskWatch, Watch};
use super::files;
use crate::engine::{AttemptRef, EngineEvent, KnownTask};
use crate::local::TaskDir;

/// After a restart of kiln: the attempts of running jobs, from their folders.
pub(super) fn reattach(engine: &mut SlurmEngine, known: &[(AttemptRef, Vec<KnownTask>)]) {
    let mut events = Vec::new();
    for (attempt, tasks) in known {
        let dir = engine.local.attempt_dir(*attempt);
        let job = files::read_job_id(&dir);
        let held = crate::local::reattach::held_ports(tasks);
        let mut watched = HashMap::new();
        for t in tasks.iter().filter(|t| !t.settled) {
            let td = TaskDir::new(&t.dir);
            if !td.path().join(files::GO).exists() && !td.exit().exists() {
                // Recorded, never marked to go: no launcher will start it.
                events.push(EngineEvent::Unstarted {
                    task: t.task.clone(),
                });
                continue;
            }
            watched.insert(
                t.task.clone(),
                TaskWatch {
                    dir: td,
                    started: false,
                },
            );
        }
        let mut st = lock(&engine.shared);
        st.book.hold(held.iter().copied());
        st.attempts.insert(
            *attempt,
            Watch {
                dir,
                name: String::new(),
                shapes: Vec::new(),
                groups: Vec::new(),
                args: Vec::new(),
                job,
                submit_at: None,
                submitted_at: Instant::now(),
                steps: Some(HashMap::new()),
                reason: None,
                released_at: None,
                ports: held,
                tasks: watched,
                ended: None,
            },
        );
        if job.is_none() {
            warn!(
                job_key = attempt.key,
                "a running attempt has no recorded Slurm job id"
            );
        }
    }
    for ev in events {
        (engine.events)(ev);
    }
}
