//! Rebuilding the loop's memory after a restart of kiln: waiting jobs from
//! the store, running ones from the store and from what the engine finds
//! again (reported as events, handled once the loop runs).

use kiln_engine::engine::gen_of_dir;

use super::*;

impl Loop {
    pub(super) fn recover(&mut self) -> Result<(), ControlError> {
        self.usage = self
            .store
            .usage()
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .into_iter()
            .map(|u| (u.user, (u.value, u.at_ms)))
            .collect();
        let jobs = self
            .store
            .unfinished_jobs()
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        let mut known = Vec::new();
        let mut abandoned = Vec::new();
        for job in jobs {
            let spec = match parse_spec(&job) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    error!(job = %job.id, error = %e, "failing a job kiln cannot read back");
                    if job.state != JobState::Waiting {
                        // Its tasks are stopped: nothing may keep running
                        // unaccounted for.
                        abandoned.push(self.known_tasks(&job)?);
                    }
                    self.abandon(&job, e);
                    continue;
                }
            };
            match job.state {
                JobState::Waiting => {
                    let request = request_of(&job, &spec);
                    self.waiting.insert(
                        job.key,
                        Waiting {
                            job,
                            spec,
                            request,
                            opportunistic: false,
                            submitted: false,
                        },
                    );
                }
                JobState::Running | JobState::Stopping => {
                    known.push(self.recover_active(job, spec)?);
                }
                _ => {}
            }
        }
        info!(
            waiting = self.waiting.len(),
            running = self.active.len(),
            "state recovered"
        );
        known.extend(abandoned.iter().cloned());
        self.engine.reattach(&known);
        for (attempt, tasks) in &abandoned {
            let runs: Vec<TaskRef> = tasks
                .iter()
                .filter(|t| !t.settled)
                .map(|t| t.task.clone())
                .collect();
            self.engine.stop(&runs);
            self.engine.release(*attempt);
        }
        let keys: Vec<i64> = self.active.keys().copied().collect();
        for key in keys {
            if self.active.get(&key).is_some_and(|a| a.ending.is_some()) {
                self.stop_unfinished(key);
            }
            self.evaluate(key);
        }
        Ok(())
    }

    /// The recorded task runs of a job's current attempt.
    fn known_tasks(&self, job: &JobRecord) -> Result<(AttemptRef, Vec<KnownTask>), ControlError> {
        let attempt = AttemptRef {
            key: job.key,
            attempt: job.attempt,
        };
        let recs = self.read_tasks(job)?;
        Ok((
            attempt,
            recs.iter().map(|r| known_task(attempt, r)).collect(),
        ))
    }

    fn read_tasks(&self, job: &JobRecord) -> Result<Vec<TaskRecord>, ControlError> {
        self.store
            .tasks(job.key, job.attempt)
            .map_err(|e| ControlError::Internal(format!("reading the tasks of {}: {e}", job.id)))
    }

    /// A job kiln can no longer read fails with the reason.
    pub(super) fn abandon(&mut self, job: &JobRecord, why: String) {
        self.apply(
            job.key,
            &Change {
                job: JobPatch {
                    state: Some(JobState::Failed),
                    reason: Some(Some(why.clone())),
                    finished_at_ms: Some(Some(now_ms())),
                    pending_reason: Some(None),
                    ..Default::default()
                },
                events: vec![event("finished", why)],
                ..Default::default()
            },
        );
    }

    /// A running job as the store has it; its runs are for the engine to
    /// find again.
    fn recover_active(
        &mut self,
        job: JobRecord,
        spec: Arc<JobSpec>,
    ) -> Result<(AttemptRef, Vec<KnownTask>), ControlError> {
        let key = job.key;
        // Without its tasks a running job cannot be carried on: better not to
        // start at all than to hand its GPUs to someone else.
        let recs = self.read_tasks(&job)?;
        let attempt = AttemptRef {
            key,
            attempt: job.attempt,
        };
        let known = (
            attempt,
            recs.iter().map(|r| known_task(attempt, r)).collect(),
        );
        let slots = recs
            .into_iter()
            .map(|rec| Slot {
                placed: Placed {
                    node: 0,
                    cpus: spec.role(rec.task.role()).map_or(0, |r| r.cpus),
                    memory_mb: spec.role(rec.task.role()).map_or(0, |r| r.memory_mb),
                    gpus: rec.gpus.clone(),
                },
                gen: rec.dir.as_deref().map_or(0, gen_of_dir),
                rec,
                platform_failure: None,
                last_exit: None,
            })
            .collect();
        // What was decided before the restart is in the store: a stop
        // request, or a deadline that has passed.
        let ending = if let (Some(by), false) = (&job.preempted_by, job.stop_requested) {
            // Preempted before the restart: still requeued, not stopped.
            (job.state == JobState::Stopping).then(|| Outcome::Preempted { by: by.clone() })
        } else if job.stop_requested || job.state == JobState::Stopping {
            Some(Outcome::Stopped("stopped on request".into()))
        } else {
            match (job.deadline_at_ms, job.started_at_ms) {
                (Some(d), Some(s)) if d <= now_ms() => Some(Outcome::DeadlineExceeded {
                    max_secs: d.saturating_sub(s) / 1000,
                }),
                _ => None,
            }
        };
        self.active.insert(
            key,
            Active {
                job,
                spec,
                slots,
                ending,
            },
        );
        Ok(known)
    }

    /// A task found recorded but never started: started now, or, once its
    /// attempt is ending, never.
    pub(super) fn on_unstarted(&mut self, t: TaskRef) {
        let Some(i) = self.slot_of(&t) else {
            return;
        };
        let key = t.attempt.key;
        let Some(a) = self.active.get(&key) else {
            return;
        };
        let slot = &a.slots[i];
        if slot.rec.state.is_finished() || slot.rec.restart_at_ms.is_some() {
            return;
        }
        let mut change = Change::default();
        if a.ending.is_some() {
            self.skip_unstarted(key, i, &mut change);
        } else {
            info!(job_key = key, task = %slot.rec.task, "starting a task kiln recorded but never started");
            // Not a restart by the task's policy: it gets an event kind of
            // its own, so the task's one `restarted` line keeps its count.
            let ev = event(
                "recovered",
                format!("{} started after kiln restarted", slot.rec.task),
            );
            self.relaunch(key, i, &mut change, ev);
        }
        self.evaluate_with(key, change);
    }
}

/// A recorded task as the engine needs it to find its run again.
fn known_task(attempt: AttemptRef, rec: &TaskRecord) -> KnownTask {
    let dir = rec.dir.clone().unwrap_or_default();
    KnownTask {
        task: TaskRef {
            attempt,
            task: rec.task.clone(),
            gen: gen_of_dir(&dir),
        },
        settled: rec.dir.is_none() || rec.state.is_finished() || rec.restart_at_ms.is_some(),
        ports: rec.ports.values().flatten().copied().collect(),
        dir,
    }
}
