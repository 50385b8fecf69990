//! Crater's clean-up rule for GPUs that a job holds and does not use: after
//! its GPUs have all shown 0% for `notice_after`, the job gets an event and
//! a warning; with `release_after` set (off by default) it is stopped once
//! idle that long. One [`IdleWatch`] per running job, fed each sample.

/// When to speak up and when to act; durations in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdlePolicy {
    pub notice_after_ms: Option<u64>,
    pub release_after_ms: Option<u64>,
    /// Samples further apart than this (a driver that failed for a while, a
    /// server that was down) start a new stretch: nobody saw the GPUs idle
    /// in between.
    pub max_gap_ms: Option<u64>,
}

/// What the watcher asks the server to do after a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleAction {
    /// Idle this long: an event and a warning.
    Notice { idle_ms: u64 },
    /// Idle this long, and the policy releases: stop the job.
    Release { idle_ms: u64 },
    /// In use again after a notice, which was idle this long.
    Busy { idle_ms: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdleWatch {
    /// When the current stretch of all-zero samples began.
    idle_since_ms: Option<u64>,
    /// The last sample that covered a GPU.
    last_ms: Option<u64>,
    noticed: bool,
    released: bool,
}

impl IdleWatch {
    /// Feeds one sample: the utilisation of each of the job's GPUs at
    /// `t_ms`. A sample that covers none of them (no GPUs, fake GPUs, a
    /// failed reading) says nothing and changes nothing.
    pub fn observe(
        &mut self,
        t_ms: u64,
        utilization: &[u32],
        policy: &IdlePolicy,
    ) -> Option<IdleAction> {
        if utilization.is_empty() {
            return None;
        }
        let gap = self.last_ms.map(|l| t_ms.saturating_sub(l));
        self.last_ms = Some(t_ms);
        if gap.zip(policy.max_gap_ms).is_some_and(|(g, max)| g > max) && !self.released {
            self.idle_since_ms = None;
            self.noticed = false;
        }
        if utilization.iter().any(|u| *u > 0) {
            let was = self.idle_since_ms.take();
            let noticed = std::mem::take(&mut self.noticed);
            self.released = false;
            return match was {
                Some(since) if noticed => Some(IdleAction::Busy {
                    idle_ms: t_ms.saturating_sub(since),
                }),
                _ => None,
            };
        }
        let since = *self.idle_since_ms.get_or_insert(t_ms);
        let idle_ms = t_ms.saturating_sub(since);
        if let Some(after) = policy.release_after_ms {
            if idle_ms >= after && !self.released {
                self.released = true;
                self.noticed = true;
                return Some(IdleAction::Release { idle_ms });
            }
        }
        if let Some(after) = policy.notice_after_ms {
            if idle_ms >= after && !self.noticed {
                self.noticed = true;
                return Some(IdleAction::Notice { idle_ms });
            }
        }
        None
    }

    /// Since when the GPUs have been idle, once noticed; for the notice
    /// in the job's detail.
    pub fn noticed_since_ms(&self) -> Option<u64> {
        self.idle_since_ms.filter(|_| self.noticed)
    }

    /// Whether the policy has asked for the job to be stopped.
    pub fn released(&self) -> bool {
        self.released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: u64 = 60_000;

    fn policy(notice: u64, release: Option<u64>) -> IdlePolicy {
        IdlePolicy {
            notice_after_ms: Some(notice * MIN),
            release_after_ms: release.map(|r| r * MIN),
            max_gap_ms: None,
        }
    }

    #[test]
    fn idle_gpus_are_noticed_once_then_cleared_by_use() {
        let p = policy(30, None);
        let mut w = IdleWatch::default();
        assert_eq!(w.observe(0, &[0, 0], &p), None);
        assert_eq!(w.observe(29 * MIN, &[0, 0], &p), None);
        assert_eq!(w.noticed_since_ms(), None);
        assert_eq!(
            w.observe(30 * MIN, &[0, 0], &p),
            Some(IdleAction::Notice { idle_ms: 30 * MIN })
        );
        assert_eq!(w.observe(45 * MIN, &[0, 0], &p), None, "said once");
        assert_eq!(w.noticed_since_ms(), Some(0));
        assert_eq!(
            w.observe(50 * MIN, &[0, 3], &p),
            Some(IdleAction::Busy { idle_ms: 50 * MIN })
        );
        assert_eq!(w.noticed_since_ms(), None);
        // A new idle stretch counts from its own start.
        assert_eq!(w.observe(60 * MIN, &[0, 0], &p), None);
        assert_eq!(
            w.observe(90 * MIN, &[0, 0], &p),
            Some(IdleAction::Notice { idle_ms: 30 * MIN })
        );
    }

    #[test]
    fn one_busy_gpu_keeps_the_job_from_idling() {
        let p = policy(1, Some(2));
        let mut w = IdleWatch::default();
        for t in 0..100 {
            assert_eq!(w.observe(t * MIN, &[0, 0, 1, 0], &p), None);
        }
    }

    #[test]
    fn release_is_off_unless_set_and_comes_after_the_notice() {
        let mut w = IdleWatch::default();
        let off = policy(30, None);
        for t in 0..1000 {
            let a = w.observe(t * MIN, &[0], &off);
            assert!(!matches!(a, Some(IdleAction::Release { .. })));
        }
        let p = policy(30, Some(60));
        let mut w = IdleWatch::default();
        let actions: Vec<(u64, IdleAction)> = (0..200)
            .filter_map(|t| w.observe(t * MIN, &[0], &p).map(|a| (t, a)))
            .collect();
        assert_eq!(
            actions,
            vec![
                (30, IdleAction::Notice { idle_ms: 30 * MIN }),
                (60, IdleAction::Release { idle_ms: 60 * MIN }),
            ]
        );
    }

    #[test]
    fn readings_that_cover_no_gpu_change_nothing() {
        let p = policy(1, None);
        let mut w = IdleWatch::default();
        w.observe(0, &[0], &p);
        // Without a gap limit, the stretch spans readings that covered none.
        for t in 1..100 {
            assert_eq!(w.observe(t * MIN, &[], &p), None);
        }
        assert_eq!(
            w.observe(100 * MIN, &[0], &p),
            Some(IdleAction::Notice { idle_ms: 100 * MIN })
        );
    }

    #[test]
    fn a_long_gap_between_samples_starts_a_new_stretch() {
        let p = IdlePolicy {
            max_gap_ms: Some(5 * MIN),
            ..policy(30, Some(60))
        };
        let mut w = IdleWatch::default();
        assert_eq!(w.observe(0, &[0], &p), None);
        // Nothing seen for two hours (the driver failed): not two hours idle.
        assert_eq!(w.observe(120 * MIN, &[0], &p), None);
        for t in 121..150 {
            assert_eq!(w.observe(t * MIN, &[0], &p), None, "at {t} min");
        }
        assert_eq!(
            w.observe(150 * MIN, &[0], &p),
            Some(IdleAction::Notice { idle_ms: 30 * MIN })
        );
    }

    proptest! {
        /// Notices and releases only ever follow at least their threshold of
        /// all-zero samples, and never repeat within one idle stretch.
        #[test]
        fn actions_follow_their_thresholds(
            samples in proptest::collection::vec((1u64..600_000, 0u32..3), 1..300),
            notice in 1u64..3_000_000,
            extra in 0u64..3_000_000,
        ) {
            let p = IdlePolicy { notice_after_ms: Some(notice), release_after_ms: Some(notice + extra), max_gap_ms: None };
            let mut w = IdleWatch::default();
            let (mut t, mut since, mut said_notice, mut said_release) = (0u64, None::<u64>, false, false);
            for (dt, util) in samples {
                t += dt;
                let busy = util > 0;
                let action = w.observe(t, &[util], &p);
                if busy {
                    since = None; said_notice = false; said_release = false;
                    continue;
                }
                let s = *since.get_or_insert(t);
                match action {
                    Some(IdleAction::Notice { idle_ms }) => {
                        prop_assert!(idle_ms >= notice && idle_ms == t - s && !said_notice);
                        said_notice = true;
                    }
                    Some(IdleAction::Release { idle_ms }) => {
                        prop_assert!(idle_ms >= notice + extra && !said_release);
                        said_release = true; said_notice = true;
                    }
                    Some(IdleAction::Busy { .. }) => prop_assert!(false, "busy while idle"),
                    None => {}
                }
            }
        }
    }
}
