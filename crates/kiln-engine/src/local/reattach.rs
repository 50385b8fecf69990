//! Finding task runs again after a restart of kiln, and reading how a run
//! ended from its folder.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::engine::{group_of, LocalEngine};
use super::{Supervisor, TaskDir};
use crate::engine::{AttemptRef, EngineEvent, ExitCause, KnownTask, TaskExit, TaskRef};

/// How a run ended, from its folder: `exit.json` (and `started.json`'s
/// note on limits), or lost when its supervisor left no record.
pub(crate) fn end_of(task: TaskRef, dir: &TaskDir) -> EngineEvent {
    let notes: Vec<String> = match dir.read_started() {
        Ok(Some(started)) => started.limits_note.into_iter().collect(),
        _ => Vec::new(),
    };
    match dir.read_exit() {
        Ok(Some(exit)) => {
            let cause = if let Some(message) = exit.launch_error {
                Some(ExitCause::LaunchFailed {
                    message,
                    refused: exit.refused,
                })
            } else if exit.oom_killed {
                Some(ExitCause::OomKilled)
            } else if exit.pids_limited {
                Some(ExitCause::PidsLimitReached)
            } else {
                None
            };
            EngineEvent::Exited {
                task,
                exit: TaskExit {
                    exit_code: exit.exit_code,
                    signal: exit.signal,
                    stop_requested: exit.stop_requested,
                    cause,
                    finished_at_ms: exit.finished_at_ms,
                },
                notes,
            }
        }
        Ok(None) => {
            // A container outlives its killed supervisor: it goes too.
            super::container_run::remove_orphan(dir);
            EngineEvent::Lost {
                task,
                why: "its supervisor ended without recording how the task ended".into(),
                notes,
            }
        }
        Err(e) => EngineEvent::Lost {
            task,
            why: format!("its exit record is unreadable: {e}"),
            notes,
        },
    }
}

/// The ports an attempt's recorded tasks hold: their own, and the
/// rendezvous port, which lives only in the tasks' environment.
pub(crate) fn held_ports(tasks: &[KnownTask]) -> Vec<u16> {
    let mut held: Vec<u16> = tasks.iter().flat_map(|t| t.ports.clone()).collect();
    let master_port = tasks
        .iter()
        .filter_map(|t| TaskDir::new(&t.dir).read_launch().ok())
        .find_map(|l| {
            l.env
                .iter()
                .find(|(k, _)| k == "MASTER_PORT")
                .and_then(|(_, v)| v.parse::<u16>().ok())
        });
    held.extend(master_port);
    held
}

impl LocalEngine {
    pub(super) fn reattach_all(&mut self, known: &[(AttemptRef, Vec<KnownTask>)]) {
        for (attempt, tasks) in known {
            let held = held_ports(tasks);
            self.ports.hold(held.iter().copied());
            self.held.insert(*attempt, held);
            for t in tasks.iter().filter(|t| !t.settled) {
                self.reattach_one(t);
            }
        }
        self.sweep_groups();
    }

    /// Finds a run again: its end (as an event), its supervisor (watched
    /// again), or a folder no supervisor ever took.
    fn reattach_one(&mut self, t: &KnownTask) {
        let dir = TaskDir::new(&t.dir);
        if dir.exit().exists() {
            (self.events)(end_of(t.task.clone(), &dir));
            return;
        }
        // Claim the folder: if that works, no supervisor ever took it (kiln
        // stopped between recording the start and starting it), and none
        // ever will. A claim with pid 0 is kiln's own from an earlier
        // recovery that did not get as far as the fresh start.
        let never_started = match dir.try_claim(0) {
            Ok(true) => true,
            Ok(false) => dir.claimed_by() == Some(0),
            Err(e) => {
                warn!(error = %e, "cannot inspect a task folder");
                false
            }
        };
        if never_started {
            (self.events)(EngineEvent::Unstarted {
                task: t.task.clone(),
            });
            return;
        }
        // A supervisor claimed it; it writes its pid right after.
        let mut pid = dir.claimed_by();
        for _ in 0..100 {
            if pid.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            pid = dir.claimed_by();
        }
        match pid.and_then(|p| Supervisor::find(&dir, p)) {
            Some(sup) => {
                let sup = Arc::new(sup);
                self.running.insert(t.task.clone(), Arc::clone(&sup));
                self.watch(t.task.clone(), sup, dir);
            }
            // Gone: its exit record decides (or its absence: lost).
            None => (self.events)(end_of(t.task.clone(), &dir)),
        }
    }

    /// Removes the cgroups of this installation's tasks that ended while
    /// their supervisor could not clean up (killed with it): only the
    /// groups of tasks whose supervisor was found again are kept.
    fn sweep_groups(&self) {
        let cg = &self.cfg.discovered.cgroups;
        let roots: Vec<PathBuf> = [&cg.memory_root, &cg.cpu_root, &cg.pids_root, &cg.group_root]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let keep: HashSet<String> = self
            .running
            .keys()
            .map(|t| group_of(&self.cfg.instance, t))
            .collect();
        let removed = super::cgroup::sweep(&roots, &self.cfg.instance, &keep);
        if removed > 0 {
            info!(
                removed,
                "removed cgroups left by tasks whose supervisor was killed"
            );
        }
    }
}
