//! Stop requests and max durations.

use super::*;

impl Loop {
    pub(super) fn on_stop(&mut self, key: i64, by: &str) -> Result<JobRecord, ControlError> {
        if self.waiting.remove(&key).is_some() {
            self.dirty = true;
            let reason = format!("stopped by {by} before it started");
            let change = Change {
                job: JobPatch {
                    state: Some(JobState::Stopped),
                    stop_requested: Some(true),
                    reason: Some(Some(reason.clone())),
                    pending_reason: Some(None),
                    finished_at_ms: Some(Some(now_ms())),
                    ..Default::default()
                },
                events: vec![event("stopped", reason)],
                ..Default::default()
            };
            return self
                .apply(key, &change)
                .ok_or_else(|| ControlError::Internal("cannot record the stop".into()));
        }
        if let Some(a) = self.active.get_mut(&key) {
            if a.job.stop_requested {
                return Ok(a.job.clone());
            }
            a.job.stop_requested = true;
            let reason = format!("stopped by {by}");
            if !matches!(
                a.ending,
                Some(Outcome::Succeeded(_) | Outcome::Failed { .. })
            ) {
                a.ending = Some(Outcome::Stopped(reason.clone()));
            }
            self.stop_unfinished(key);
            let change = Change {
                job: JobPatch {
                    state: Some(JobState::Stopping),
                    stop_requested: Some(true),
                    ..Default::default()
                },
                events: vec![event("stop-requested", format!("stop requested by {by}"))],
                ..Default::default()
            };
            let job = self
                .apply(key, &change)
                .ok_or_else(|| ControlError::Internal("cannot record the stop".into()))?;
            if let Some(a) = self.active.get_mut(&key) {
                a.job = job.clone();
            }
            self.evaluate(key);
            return Ok(job);
        }
        match self.store.job_by_key(key) {
            Ok(Some(j)) => Err(ControlError::Conflict(format!(
                "job {} is already {}",
                j.id,
                j.state.as_str()
            ))),
            Ok(None) => Err(ControlError::NotFound(format!("job #{key}"))),
            Err(e) => Err(ControlError::Internal(e.to_string())),
        }
    }

    pub(super) fn on_deadline_change(
        &mut self,
        key: i64,
        by: &str,
        change: DeadlineChange,
    ) -> Result<JobRecord, ControlError> {
        let Some(a) = self.active.get_mut(&key) else {
            return match self.store.job_by_key(key) {
                Ok(Some(j)) => Err(ControlError::Conflict(format!(
                    "job {} is {}; only a running job's max duration can change (a waiting job's clock has not started)",
                    j.id,
                    j.state.as_str()
                ))),
                Ok(None) => Err(ControlError::NotFound(format!("job #{key}"))),
                Err(e) => Err(ControlError::Internal(e.to_string())),
            };
        };
        if a.ending.is_some() {
            return Err(ControlError::Conflict(format!(
                "job {} is already ending",
                a.job.id
            )));
        }
        let started = a.job.started_at_ms.unwrap_or_else(now_ms);
        let (deadline, message) = match change {
            DeadlineChange::ExtendBy(secs) => {
                let Some(d) = a.job.deadline_at_ms else {
                    return Err(ControlError::Invalid(format!(
                        "job {} has no max duration to extend; set one with maxDuration",
                        a.job.id
                    )));
                };
                let d = d.saturating_add(secs.saturating_mul(1000));
                (
                    d,
                    format!(
                        "max duration extended by {} by {by}, to {} in all",
                        format_duration_secs(secs),
                        format_duration_secs(d.saturating_sub(started) / 1000)
                    ),
                )
            }
            DeadlineChange::Total(secs) => (
                started.saturating_add(secs.saturating_mul(1000)),
                format!("max duration set to {} by {by}", format_duration_secs(secs)),
            ),
        };
        let ch = Change {
            job: JobPatch {
                deadline_at_ms: Some(Some(deadline)),
                ..Default::default()
            },
            events: vec![event("extended", message)],
            ..Default::default()
        };
        let job = self
            .apply(key, &ch)
            .ok_or_else(|| ControlError::Internal("cannot record the new deadline".into()))?;
        if let Some(a) = self.active.get_mut(&key) {
            a.job = job.clone();
        }
        // An engine's own time limit, if it has one, follows kiln's.
        let attempt = AttemptRef {
            key,
            attempt: job.attempt,
        };
        let total = deadline.saturating_sub(started).div_ceil(1000);
        self.engine.set_deadline(attempt, Some(total));
        self.dirty = true;
        Ok(job)
    }

    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.active
            .values()
            .filter(|a| a.ending.is_none())
            .filter_map(|a| a.job.deadline_at_ms)
            .chain(self.recheck_at)
            .chain(self.next_restart())
            .chain(self.passes.watch_at())
            .min()
    }

    pub(super) fn fire_deadlines(&mut self) {
        let now = now_ms();
        let due: Vec<i64> = self
            .active
            .values()
            .filter(|a| a.ending.is_none() && a.job.deadline_at_ms.is_some_and(|d| d <= now))
            .map(|a| a.job.key)
            .collect();
        for key in due {
            let Some(a) = self.active.get_mut(&key) else {
                continue;
            };
            let max_secs = a
                .job
                .deadline_at_ms
                .zip(a.job.started_at_ms)
                .map_or(0, |(d, s)| d.saturating_sub(s) / 1000);
            a.ending = Some(Outcome::DeadlineExceeded { max_secs });
            self.stop_unfinished(key);
            let change = Change {
                events: vec![event(
                    "deadline",
                    format!(
                        "ran past its max duration of {}; stopping its tasks",
                        format_duration_secs(max_secs)
                    ),
                )],
                ..Default::default()
            };
            self.apply(key, &change);
            self.evaluate(key);
        }
    }
}
