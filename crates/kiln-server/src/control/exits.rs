//! What the engine reports about tasks, the completion policy over them,
//! and the end of an attempt (retry or final state).

use kiln_engine::engine::TaskExit;

use super::*;

impl Loop {
    pub(super) fn on_engine(&mut self, ev: EngineEvent) {
        match ev {
            EngineEvent::Pending { attempt, reason } => self.on_pending(attempt, reason),
            EngineEvent::Allocated(allocation) => self.on_allocated(allocation),
            EngineEvent::Started { task, at_ms } => self.on_started(task, at_ms),
            EngineEvent::Exited { task, exit, notes } => self.on_exited(task, Ok(exit), notes),
            EngineEvent::Lost { task, why, notes } => self.on_exited(task, Err(why), notes),
            EngineEvent::Unstarted { task } => self.on_unstarted(task),
            EngineEvent::Progress {
                task,
                kind,
                message,
            } => self.on_progress(task, &kind, message),
        }
    }

    /// A task run's progress before its command starts, as one event line
    /// that each newer word replaces.
    fn on_progress(&mut self, t: TaskRef, kind: &str, message: String) {
        let Some(i) = self.slot_of(&t) else {
            return;
        };
        let key = t.attempt.key;
        let running = self
            .active
            .get(&key)
            .is_some_and(|a| !a.slots[i].rec.state.is_finished());
        if !running {
            return;
        }
        let change = Change {
            events: vec![task_event(
                t.attempt.attempt,
                &t.task,
                kind,
                format!("{}: {message}", t.task),
            )],
            ..Change::default()
        };
        self.apply(key, &change);
    }

    /// A task run ended: how (`Err`: lost, and why), and what its start
    /// said of its limits.
    fn on_exited(&mut self, t: TaskRef, exit: Result<TaskExit, String>, notes: Vec<String>) {
        let Some(i) = self.slot_of(&t) else {
            return;
        };
        let key = t.attempt.key;
        let Some(slot) = self.active.get(&key).map(|a| &a.slots[i]) else {
            return;
        };
        // A task in its back-off has had its end counted already.
        if slot.rec.state.is_finished() || slot.rec.restart_at_ms.is_some() {
            return;
        }
        let mut change = Change::default();
        for note in notes {
            change.events.push(task_event(
                t.attempt.attempt,
                &t.task,
                "limits",
                format!("{}: {note}", t.task),
            ));
        }
        let (end, finished_at) = match &exit {
            Ok(x) => (task_end(x), Some(x.finished_at_ms)),
            Err(why) => (task_lost(why), None),
        };
        self.record_end(key, i, end, &mut change);
        if let (Some(at), Some(a)) = (finished_at, self.active.get_mut(&key)) {
            a.slots[i].rec.finished_at_ms = Some(at);
            if let Some(t) = change.tasks.last_mut() {
                t.finished_at_ms = Some(at);
            }
        }
        // Recorded with what the policy makes of it (a back-off), at once.
        self.evaluate_with(key, change);
    }

    pub(super) fn record_end(&mut self, key: i64, i: usize, mut end: TaskEnd, change: &mut Change) {
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        // Only kiln's own stop makes a stopped task: a SIGTERM from anyone
        // else (an operator, a service manager stopping everything) ended
        // the task early, which is a failure, not a finish.
        if end.state == TaskState::Stopped && a.ending.is_none() && !a.job.stop_requested {
            end.state = TaskState::Failed;
            end.reason = Some(
                "killed from outside kiln: its supervisor got SIGTERM without a stop request"
                    .into(),
            );
        }
        let debug = is_debug(&a.spec);
        let attempt = a.job.attempt;
        let run = a.task_ref(i);
        let slot = &mut a.slots[i];
        slot.rec.state = end.state;
        slot.rec.exit_code = end.exit_code;
        slot.rec.signal = end.signal;
        slot.rec.reason = end.reason.clone();
        slot.rec.finished_at_ms = Some(now_ms());
        if end.platform {
            slot.platform_failure = end.reason.clone().or(Some("platform failure".into()));
        }
        change.tasks.push(slot.rec.clone());
        change.events.push(task_event(
            attempt,
            &slot.rec.task,
            "exited",
            describe_end(&slot.rec.task, &end),
        ));
        // The task's scratch space is emptied, except a failed task's under isDebug.
        let mut keep = slot.rec.dir.is_none();
        if let Some(dir) = &slot.rec.dir {
            if debug && end.state == TaskState::Failed {
                keep = true;
                change.events.push(task_event(
                    attempt,
                    &slot.rec.task,
                    "debug",
                    format!(
                        "{} failed; its folder is kept for debugging at {} (isDebug)",
                        slot.rec.task, dir
                    ),
                ));
            }
        }
        if let Some(run) = run {
            self.engine.ended(&run, keep);
        }
    }

    /// A task that never started and now never will: its attempt ended.
    pub(super) fn skip_unstarted(&mut self, key: i64, i: usize, change: &mut Change) {
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        let slot = &mut a.slots[i];
        slot.rec.state = TaskState::Stopped;
        slot.rec.reason = Some("NotStarted: its attempt ended before it started".into());
        slot.rec.finished_at_ms = Some(now_ms());
        change.tasks.push(slot.rec.clone());
    }

    /// Applies the completion policy to the current attempt, and ends it once
    /// it is decided and its last task is gone.
    pub(super) fn evaluate(&mut self, key: i64) {
        self.evaluate_with(key, Change::default());
    }

    /// [`Self::evaluate`] with what `change` holds recorded in the same
    /// transaction.
    pub(super) fn evaluate_with(&mut self, key: i64, mut change: Change) {
        let Some(a) = self.active.get_mut(&key) else {
            if !change.tasks.is_empty() || !change.events.is_empty() {
                self.apply(key, &change);
            }
            return;
        };
        if a.ending.is_none() {
            if let Some(why) = a.slots.iter().find_map(|s| s.platform_failure.clone()) {
                a.ending = Some(Outcome::Failed {
                    reason: why,
                    platform: true,
                });
            } else {
                let statuses: Vec<TaskStatus> = a
                    .slots
                    .iter()
                    .map(|s| TaskStatus {
                        task: s.rec.task.clone(),
                        state: s.rec.state,
                        exit_code: s.rec.exit_code,
                        signal: s.rec.signal,
                        // A restart decided and waiting out its back-off
                        // is spent from the budget already.
                        restarts: s.rec.restarts + u32::from(s.rec.restart_at_ms.is_some()),
                    })
                    .collect();
                let d = decide(&a.spec, &statuses, a.job.stop_requested);
                let reason = d.reason.clone().unwrap_or_default();
                a.ending = match d.state {
                    AttemptState::Running => None,
                    AttemptState::Succeeded => Some(Outcome::Succeeded(reason)),
                    AttemptState::Failed => Some(Outcome::Failed {
                        reason,
                        platform: false,
                    }),
                    AttemptState::Stopped => Some(Outcome::Stopped(reason)),
                };
                if a.ending.is_none() && !d.restart.is_empty() {
                    let restart: Vec<usize> = a
                        .slots
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| d.restart.contains(&s.rec.task))
                        .map(|(i, _)| i)
                        .collect();
                    for i in restart {
                        self.back_off(key, i, &mut change);
                    }
                    self.apply(key, &change);
                    return;
                }
            }
            if self.active.get(&key).is_some_and(|a| a.ending.is_some()) {
                self.stop_unfinished(key);
            }
        }
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        if a.ending.is_some() {
            restarts::cancel_backoffs(a, &mut change);
        }
        let all_done = a.slots.iter().all(|s| s.rec.state.is_finished());
        if a.ending.is_some() && all_done {
            self.finish_attempt(key, change);
        } else if !change.tasks.is_empty() || !change.events.is_empty() {
            self.apply(key, &change);
        }
    }

    fn finish_attempt(&mut self, key: i64, mut change: Change) {
        let Some(a) = self.active.get(&key) else {
            return;
        };
        let Some(mut outcome) = a.ending.clone() else {
            return;
        };
        // A stop request outranks a failure or a preemption that would be
        // retried.
        if a.job.stop_requested {
            match &outcome {
                Outcome::Failed { reason, .. } => {
                    outcome = Outcome::Stopped(format!(
                        "stopped on request while the attempt was ending ({reason})"
                    ));
                }
                Outcome::Preempted { by } => {
                    outcome = Outcome::Stopped(format!(
                        "stopped on request while it was being preempted for {by}"
                    ));
                }
                _ => {}
            }
        }
        let preempted = matches!(outcome, Outcome::Preempted { .. });
        change.usage = self.charge_attempt(&a.job, &a.slots);
        let next = after_attempt(&a.spec, a.job.attempt, a.job.failed_attempts, &outcome);
        let now = now_ms();
        let retry = match next {
            Next::Finish { state, reason } => {
                change.job = JobPatch {
                    state: Some(state),
                    reason: Some(Some(reason.clone())),
                    finished_at_ms: Some(Some(now)),
                    preempted_by: Some(None),
                    opportunistic: Some(false),
                    ..Default::default()
                };
                change
                    .events
                    .push(event("finished", format!("{}: {reason}", state.as_str())));
                false
            }
            Next::Retry {
                attempt,
                failed_attempts,
                reason,
            } => {
                change.job = JobPatch {
                    state: Some(JobState::Waiting),
                    reason: Some(Some(reason.clone())),
                    attempt: Some(attempt),
                    failed_attempts: Some(failed_attempts),
                    deadline_at_ms: Some(None),
                    stop_requested: Some(false),
                    pending_reason: Some(Some(format!("queued for attempt {attempt}"))),
                    opportunistic: Some(false),
                    // The next attempt learns it follows a preemption
                    // (KILN_PREEMPTED=1); after any other end it does not.
                    preempted_by: (!preempted).then_some(None),
                    preemptions: preempted.then_some(a.job.preemptions + 1),
                    ..Default::default()
                };
                change.events.push(event("retried", reason));
                true
            }
        };
        let Some(job) = self.apply(key, &change) else {
            // The job stays as it is, in memory and in the store, and the
            // loop tries again shortly.
            self.later(key);
            return;
        };
        if let Some(u) = change.usage {
            self.usage.insert(u.user, (u.value, u.at_ms));
        }
        let Some(a) = self.active.remove(&key) else {
            return;
        };
        self.dirty = true;
        self.engine.release(a.attempt());
        if retry {
            let request = request_of(&job, &a.spec);
            self.waiting.insert(
                key,
                Waiting {
                    job,
                    spec: a.spec,
                    request,
                    opportunistic: false,
                    submitted: false,
                },
            );
        }
    }

    /// Comes back to a job after a store failure.
    pub(super) fn later(&mut self, key: i64) {
        self.retry_later.insert(key);
        self.recheck_at = Some(now_ms() + RECHECK_MS);
    }

    pub(super) fn retry_pending(&mut self) {
        for key in std::mem::take(&mut self.retry_later) {
            if self.active.contains_key(&key) {
                self.evaluate(key);
            } else if !self.waiting.contains_key(&key) {
                self.on_submitted(key);
            }
        }
    }
}
