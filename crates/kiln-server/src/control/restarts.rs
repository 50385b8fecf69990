//! Restarts in place (DESIGN.md, "Restarts in place"; issue 16). A task its
//! restart policy restarts first waits out a back-off (see backoff.rs) as
//! WAITING with the wait as its reason, keeping its place on the machine;
//! the wait is in the store, so a restart of kiln neither forgets nor
//! hurries it. Its restarts are one event line with a count; the engine
//! keeps only the first and the last few runs' folders.

use super::super::backoff::{restarted_line, waiting_reason};
use super::super::policy::exit_brief;
use super::*;

impl Loop {
    /// Puts a failed task its policy restarts into its back-off; the
    /// record goes into `change`.
    pub(super) fn back_off(&mut self, key: i64, i: usize, change: &mut Change) {
        let backoff = self.cfg.restart_backoff;
        let now = now_ms();
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        let Some(slot) = a.slots.get_mut(i) else {
            return;
        };
        let last = exit_brief(&end_of(&slot.rec));
        let next = backoff.next(
            slot.rec.restart_streak,
            slot.rec.started_at_ms,
            slot.rec.finished_at_ms,
            now,
        );
        let wait = next.at_ms.saturating_sub(now);
        info!(
            job_key = key,
            task = %slot.rec.task,
            restarts = slot.rec.restarts,
            wait_ms = wait,
            last_exit = %last,
            "task restarts after its back-off"
        );
        slot.rec.state = TaskState::Waiting;
        slot.rec.reason = Some(waiting_reason(wait, slot.rec.restarts, &last));
        slot.rec.restart_at_ms = Some(next.at_ms);
        slot.rec.restart_streak = next.streak;
        slot.last_exit = Some(last);
        change.tasks.push(slot.rec.clone());
    }

    /// When the next task's back-off ends.
    pub(super) fn next_restart(&self) -> Option<u64> {
        self.active
            .values()
            .filter(|a| a.ending.is_none())
            .flat_map(|a| a.slots.iter().filter_map(|s| s.rec.restart_at_ms))
            .min()
    }

    /// Starts again every task whose back-off has ended.
    pub(super) fn fire_restarts(&mut self) {
        let now = now_ms();
        let due: Vec<(i64, usize)> = self
            .active
            .values()
            .filter(|a| a.ending.is_none())
            .flat_map(|a| {
                a.slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.rec.restart_at_ms.is_some_and(|at| at <= now))
                    .map(|(i, _)| (a.job.key, i))
            })
            .collect();
        for (key, i) in due {
            self.restart(key, i);
        }
    }

    fn restart(&mut self, key: i64, i: usize) {
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        let attempt = a.job.attempt;
        let Some(slot) = a.slots.get_mut(i) else {
            return;
        };
        slot.rec.restart_at_ms = None;
        slot.rec.restarts += 1;
        // After a restart of kiln the words are made again from the record.
        let last = slot
            .last_exit
            .take()
            .unwrap_or_else(|| exit_brief(&end_of(&slot.rec)));
        let task = slot.rec.task.clone();
        let ev = task_event(
            attempt,
            &task,
            "restarted",
            restarted_line(&task.to_string(), slot.rec.restarts, &last),
        );
        let mut change = Change::default();
        self.relaunch(key, i, &mut change, ev);
        if !change.tasks.is_empty() || !change.events.is_empty() {
            // A restart that could not be started ends the task for good:
            // the policy decides again.
            self.evaluate_with(key, change);
        }
    }
}

/// The tasks of an attempt that has ended while they waited out their
/// back-off: they are not started again.
pub(super) fn cancel_backoffs(a: &mut Active, change: &mut Change) {
    for s in &mut a.slots {
        if s.rec.restart_at_ms.take().is_none() {
            continue;
        }
        s.rec.state = TaskState::Stopped;
        s.rec.reason = Some(format!(
            "NotRestarted: its attempt ended during its back-off (last exit {})",
            s.last_exit
                .take()
                .unwrap_or_else(|| exit_brief(&end_of(&s.rec)))
        ));
        change.tasks.push(s.rec.clone());
    }
}

/// A failed task's record as the end it was, for the words of its exit.
/// Its reason is the exit's until the back-off replaces it.
fn end_of(rec: &TaskRecord) -> TaskEnd {
    TaskEnd {
        state: rec.state,
        exit_code: rec.exit_code,
        signal: rec.signal,
        reason: rec.reason.clone().filter(|r| !r.starts_with("back-off:")),
        platform: false,
    }
}
