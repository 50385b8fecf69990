//! Back-off between restarts in place (DESIGN.md, "Restarts in place"), as
//! Kubernetes' CrashLoopBackOff: a task that fails under a restart policy
//! waits 10 s before it starts again, then 20 s, 40 s, ... at most 5 min; a
//! run of 10 min or more shows the task can work, and the next failure
//! waits 10 s again. Without it a command that is not found restarted some
//! 70 times a second, with a folder and two events each (issue 16).
//!
//! Pure functions over times in milliseconds: the control loop gives the
//! clock and acts on the answers; what they decide is kept in the store.

/// The first delay of the server's default back-off: DESIGN's 10 s.
pub const DEFAULT_FIRST_MS: u64 = 10_000;

/// How long restarts wait. One knob, the first delay, sets the shape: the
/// cap is 30 times it and the reset 60 times, so 10 s gives DESIGN's 5 min
/// and 10 min, and a test's 100 ms gives the same doubling in 3 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first_ms: u64,
    pub max_ms: u64,
    /// A run at least this long resets the doubling.
    pub reset_after_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::from_first(DEFAULT_FIRST_MS)
    }
}

/// When a failed task starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextRestart {
    pub at_ms: u64,
    pub delay_ms: u64,
    /// Restarts in a row with this one, for the next failure's delay.
    pub streak: u32,
}

impl Backoff {
    pub fn from_first(first_ms: u64) -> Self {
        Backoff {
            first_ms,
            max_ms: first_ms.saturating_mul(30),
            reset_after_ms: first_ms.saturating_mul(60),
        }
    }

    /// The delay before the restart that follows `streak` restarts in a row.
    pub fn delay_ms(&self, streak: u32) -> u64 {
        let factor = 1u64.checked_shl(streak).unwrap_or(u64::MAX);
        self.first_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// The restart of a task that ran from `started_at_ms` to
    /// `finished_at_ms` after `streak` restarts in a row. Counted from the
    /// task's end, so a server that learns of it late (it was restarting)
    /// does not make it wait longer; never from a time after `now_ms`.
    pub fn next(
        &self,
        streak: u32,
        started_at_ms: Option<u64>,
        finished_at_ms: Option<u64>,
        now_ms: u64,
    ) -> NextRestart {
        let ended = finished_at_ms.unwrap_or(now_ms).min(now_ms);
        let ran = started_at_ms.map_or(0, |s| ended.saturating_sub(s));
        let streak = if ran >= self.reset_after_ms {
            0
        } else {
            streak
        };
        let delay_ms = self.delay_ms(streak);
        NextRestart {
            at_ms: ended.saturating_add(delay_ms),
            delay_ms,
            streak: streak.saturating_add(1),
        }
    }
}

/// The server's `--restart-backoff`: a duration with a unit (`10s`, `1m`,
/// `200ms`), at least 1 ms.
pub fn parse_first(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let ms = match t.strip_suffix("ms") {
        Some(n) => n
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("'{text}': not a whole number of ms"))?,
        None => kiln_spec::quantity::parse_duration_secs(t)?.saturating_mul(1000),
    };
    if ms == 0 {
        return Err(format!("'{text}': must be more than 0"));
    }
    Ok(ms)
}

/// A wait in words for people: `200 ms`, `40 s`, `4 min 10 s`.
pub fn format_wait(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let secs = ms.div_ceil(1000);
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

/// What a task waiting out its back-off shows as its reason: the length
/// of the wait, which stays true while it lasts (`restartAtMs` says when it
/// ends; `kiln show` counts down to it).
pub fn waiting_reason(wait_ms: u64, restarts: u32, last_exit: &str) -> String {
    let so_far = match restarts {
        0 => String::new(),
        1 => "restarted once; ".into(),
        n => format!("restarted {n} times; "),
    };
    format!(
        "back-off of {} before restarting ({so_far}last exit {last_exit})",
        format_wait(wait_ms)
    )
}

/// The one event line of a task's restarts, replaced at each restart.
pub fn restarted_line(task: &str, restarts: u32, last_exit: &str) -> String {
    let times = match restarts {
        1 => "once".to_owned(),
        n => format!("{n} times"),
    };
    format!("{task} restarted {times}; last exit {last_exit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_designs_10_s_doubling_to_5_min_reset_after_10_min() {
        let b = Backoff::default();
        assert_eq!(
            (b.first_ms, b.max_ms, b.reset_after_ms),
            (10_000, 300_000, 600_000)
        );
        let delays: Vec<u64> = (0..7).map(|n| b.delay_ms(n) / 1000).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.delay_ms(u32::MAX), 300_000);
    }

    #[test]
    fn a_long_run_starts_the_doubling_again() {
        let b = Backoff::default();
        // Five restarts in a row, then a 9 min run: still doubling.
        let n = b.next(5, Some(0), Some(540_000), 600_000);
        assert_eq!((n.delay_ms, n.streak, n.at_ms), (300_000, 6, 840_000));
        // A 10 min run: back to 10 s.
        let n = b.next(5, Some(0), Some(600_000), 600_000);
        assert_eq!((n.delay_ms, n.streak, n.at_ms), (10_000, 1, 610_000));
    }

    #[test]
    fn counted_from_the_end_never_from_the_future() {
        let b = Backoff::default();
        // The server learnt of the end 30 s late: 10 s after the end is past.
        assert_eq!(b.next(0, Some(0), Some(1_000), 31_000).at_ms, 11_000);
        // A clock that went back: from now.
        assert_eq!(b.next(0, Some(0), Some(99_000), 50_000).at_ms, 60_000);
        // No record of the end: from now.
        assert_eq!(b.next(1, None, None, 5_000).at_ms, 25_000);
    }

    #[test]
    fn the_flag_takes_ms_or_any_duration() {
        assert_eq!(parse_first("200ms"), Ok(200));
        assert_eq!(parse_first("10s"), Ok(10_000));
        assert_eq!(parse_first("1m"), Ok(60_000));
        assert!(parse_first("0s").is_err());
        assert!(parse_first("0ms").is_err());
        assert!(parse_first("fast").is_err());
    }

    #[test]
    fn waits_and_lines_read_as_people_expect() {
        assert_eq!(format_wait(200), "200 ms");
        assert_eq!(format_wait(40_000), "40 s");
        assert_eq!(format_wait(39_001), "40 s");
        assert_eq!(format_wait(300_000), "5 min");
        assert_eq!(format_wait(250_000), "4 min 10 s");
        assert_eq!(
            waiting_reason(40_000, 3, "127 (command not found)"),
            "back-off of 40 s before restarting (restarted 3 times; last exit 127 (command not found))"
        );
        assert_eq!(
            waiting_reason(10_000, 0, "1"),
            "back-off of 10 s before restarting (last exit 1)"
        );
        assert_eq!(
            restarted_line("main-0", 7, "127 (command not found)"),
            "main-0 restarted 7 times; last exit 127 (command not found)"
        );
        assert_eq!(
            restarted_line("w-1", 1, "1"),
            "w-1 restarted once; last exit 1"
        );
    }

    proptest! {
        #[test]
        fn delays_double_up_to_the_cap(first in 1u64..100_000, streak in 0u32..80) {
            let b = Backoff::from_first(first);
            let d = b.delay_ms(streak);
            prop_assert!(d >= first && d <= b.max_ms);
            prop_assert_eq!(b.delay_ms(streak + 1), d.saturating_mul(2).min(b.max_ms));
        }

        #[test]
        fn a_restart_waits_its_delay_after_the_end(
            first in 1u64..100_000,
            streak in 0u32..80,
            started in 0u64..1_000_000_000,
            ran in 0u64..10_000_000,
            late in 0u64..10_000_000,
        ) {
            let b = Backoff::from_first(first);
            let finished = started + ran;
            let n = b.next(streak, Some(started), Some(finished), finished + late);
            prop_assert_eq!(n.at_ms, finished + n.delay_ms);
            prop_assert!(n.delay_ms >= first && n.delay_ms <= b.max_ms);
            if ran >= b.reset_after_ms {
                prop_assert_eq!((n.delay_ms, n.streak), (first, 1));
            } else {
                prop_assert_eq!((n.delay_ms, n.streak), (b.delay_ms(streak), streak + 1));
            }
        }
    }
}
