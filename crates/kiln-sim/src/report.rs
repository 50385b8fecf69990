//! What a run measured, and the numbers people read: allocation, delays,
//! idle GPUs while jobs waited, and the checks that must come out zero.

use std::fmt::Write as _;

/// One job's life in the simulation (seconds, simulated).
#[derive(Debug, Clone, Default)]
pub struct JobOutcome {
    pub arrival: u64,
    pub first_start: Option<u64>,
    pub last_start: Option<u64>,
    pub end: Option<u64>,
    /// Preempted attempts before the one that ended.
    pub attempts: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub policy: String,
    pub total_gpus: u64,
    /// First arrival and last start (see [`Outcome::close`]).
    pub window: (u64, u64),
    /// (from, to, GPUs, CPUs) held, for every stretch between events.
    pub steps: Vec<(u64, u64, u64, u64)>,
    /// Seconds during which some job waited.
    pub waiting_secs: f64,
    pub alloc_gpu_secs: f64,
    pub total_cpus: u64,
    pub alloc_cpu_secs: f64,
    /// GPU-seconds of preempted attempts, thrown away (no checkpoint).
    pub lost_gpu_secs: f64,
    /// Allocated GPU-seconds per hour of the window.
    pub hourly: Vec<f64>,
    pub idle_waiting_gpu_secs: f64,
    pub jobs: Vec<JobOutcome>,
    pub preemptions: u64,
    pub partial_gangs: u64,
    pub over_allocations: u64,
    /// The first few faults, for the report.
    pub faults: Vec<String>,
    /// Passes that found the cluster empty, jobs waiting, and started and
    /// preempted nothing: a scheduler bug (every job left in fits).
    pub stalls: u64,
    pub never_fit: usize,
    pub stuck: usize,
    pub pass_micros: Vec<f64>,
    pub end_time: u64,
}

impl Outcome {
    pub fn new(policy: &str, total_gpus: u64, total_cpus: u64, window: (u64, u64)) -> Outcome {
        Outcome {
            policy: policy.to_owned(),
            total_gpus,
            total_cpus,
            window,
            ..Default::default()
        }
    }

    /// `alloc` GPUs and `cpus` CPUs were held from `a` to `b`, with jobs
    /// waiting or not.
    pub fn integrate(&mut self, a: u64, b: u64, alloc: u64, cpus: u64, waiting: bool) {
        if b <= a {
            return;
        }
        if waiting {
            self.idle_waiting_gpu_secs +=
                self.total_gpus.saturating_sub(alloc) as f64 * (b - a) as f64;
            self.waiting_secs += (b - a) as f64;
        }
        self.steps.push((a, b, alloc, cpus));
    }

    /// Closes the books: allocation is averaged from the first arrival to
    /// the last start (after it nothing waits, and what is left is the long
    /// tail of month-long pods draining, which says nothing about a policy).
    pub fn close(&mut self, last_start: u64) {
        self.window.1 = last_start.max(self.window.0);
        let (lo, hi) = self.window;
        self.hourly = vec![0.0; ((hi - lo) / 3600 + 1) as usize];
        for &(a, b, alloc, cpus) in &self.steps {
            let (a, b) = (a.max(lo), b.min(hi));
            let mut t = a;
            while t < b {
                let hour = (t - lo) / 3600;
                let until = (lo + (hour + 1) * 3600).min(b);
                let g = alloc as f64 * (until - t) as f64;
                self.alloc_gpu_secs += g;
                self.alloc_cpu_secs += cpus as f64 * (until - t) as f64;
                if let Some(h) = self.hourly.get_mut(hour as usize) {
                    *h += g;
                }
                t = until;
            }
        }
    }

    pub fn summary(&self) -> Summary {
        let span = self.window.1.saturating_sub(self.window.0).max(1) as f64;
        let delays: Vec<f64> = self
            .jobs
            .iter()
            .filter_map(|j| Some((j.first_start? - j.arrival) as f64))
            .collect();
        let jcts: Vec<f64> = self
            .jobs
            .iter()
            .filter_map(|j| Some((j.end? - j.arrival) as f64))
            .collect();
        Summary {
            allocation: self.alloc_gpu_secs / span / self.total_gpus.max(1) as f64,
            waiting_allocation: 1.0
                - self.idle_waiting_gpu_secs
                    / (self.waiting_secs.max(1.0) * self.total_gpus.max(1) as f64),
            cpu_allocation: self.alloc_cpu_secs / span / self.total_cpus.max(1) as f64,
            delay_mean: mean(&delays),
            delay_p99: pct(&delays, 99.0),
            jct_mean: mean(&jcts),
            jct_p99: pct(&jcts, 99.0),
            idle_waiting_gpu_hours: self.idle_waiting_gpu_secs / 3600.0,
            completed: jcts.len(),
            pass_mean_us: mean(&self.pass_micros),
            pass_p99_us: pct(&self.pass_micros, 99.0),
            pass_max_us: self.pass_micros.iter().copied().fold(0.0, f64::max),
            passes: self.pass_micros.len(),
        }
    }

    /// `hour,allocated_fraction` for each hour of the arrival window.
    pub fn hourly_csv(&self) -> String {
        let mut s = String::from("hour,allocated_fraction\n");
        for (i, g) in self.hourly.iter().enumerate() {
            let len = (self
                .window
                .1
                .saturating_sub(self.window.0 + i as u64 * 3600))
            .clamp(1, 3600) as f64;
            let _ = writeln!(s, "{i},{:.4}", g / len / self.total_gpus.max(1) as f64);
        }
        s
    }
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub allocation: f64,
    /// Allocation while some job waited: 1 − idle / available then.
    pub waiting_allocation: f64,
    pub cpu_allocation: f64,
    pub delay_mean: f64,
    pub delay_p99: f64,
    pub jct_mean: f64,
    pub jct_p99: f64,
    pub idle_waiting_gpu_hours: f64,
    pub completed: usize,
    pub pass_mean_us: f64,
    pub pass_p99_us: f64,
    pub pass_max_us: f64,
    pub passes: usize,
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Nearest-rank percentile.
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Seconds as people read them.
pub fn dur(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.1} min", secs / 60.0)
    } else if secs < 2.0 * 86400.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} d", secs / 86400.0)
    }
}

fn us(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.0} µs")
    } else {
        format!("{:.1} ms", v / 1000.0)
    }
}

/// One markdown table, a column per policy.
pub fn table(outcomes: &[Outcome]) -> String {
    let sums: Vec<Summary> = outcomes.iter().map(Outcome::summary).collect();
    let mut s = String::from("| | ");
    s += &outcomes
        .iter()
        .map(|o| o.policy.as_str())
        .collect::<Vec<_>>()
        .join(" | ");
    s += " |\n|---|";
    s += &"---:|".repeat(outcomes.len());
    s.push('\n');
    let mut row = |name: &str, f: &dyn Fn(&Outcome, &Summary) -> String| {
        let cells: Vec<String> = outcomes.iter().zip(&sums).map(|(o, m)| f(o, m)).collect();
        let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
    };
    row(
        "GPU allocation, time-weighted mean, first arrival to last start",
        &|_, m| format!("{:.1}%", m.allocation * 100.0),
    );
    row("GPU allocation while a job waited", &|o, m| {
        if o.waiting_secs > 0.0 {
            format!("{:.1}%", m.waiting_allocation * 100.0)
        } else {
            "nothing waited".into()
        }
    });
    row("CPU allocation, same window", &|_, m| {
        format!("{:.1}%", m.cpu_allocation * 100.0)
    });
    row("queueing delay, mean", &|_, m| dur(m.delay_mean));
    row("queueing delay, p99", &|_, m| dur(m.delay_p99));
    row("job completion time, mean", &|_, m| dur(m.jct_mean));
    row("job completion time, p99", &|_, m| dur(m.jct_p99));
    row("GPU-hours idle while a job waited", &|_, m| {
        format!("{:.0}", m.idle_waiting_gpu_hours)
    });
    row("jobs completed", &|o, m| {
        format!("{} of {}", m.completed, o.jobs.len() - o.never_fit)
    });
    row("preemptions", &|o, _| o.preemptions.to_string());
    row("GPU-hours of preempted attempts thrown away", &|o, _| {
        format!("{:.0}", o.lost_gpu_secs / 3600.0)
    });
    row("partial gangs (must be 0)", &|o, _| {
        o.partial_gangs.to_string()
    });
    row("over-allocations (must be 0)", &|o, _| {
        o.over_allocations.to_string()
    });
    row(
        "empty-cluster passes that started nothing (must be 0)",
        &|o, _| o.stalls.to_string(),
    );
    row("scheduling passes", &|_, m| m.passes.to_string());
    row("pass wall time, mean / p99 / max", &|_, m| {
        format!(
            "{} / {} / {}",
            us(m.pass_mean_us),
            us(m.pass_p99_us),
            us(m.pass_max_us)
        )
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrates_by_hour_and_counts_idle_only_while_waiting() {
        let mut o = Outcome::new("x", 4, 8, (0, 7200));
        o.integrate(0, 1800, 2, 8, false);
        o.integrate(1800, 5400, 4, 0, true);
        o.integrate(5400, 9000, 1, 0, true);
        o.close(7200);
        assert_eq!(o.alloc_cpu_secs, 8.0 * 1800.0);
        // 2×1800 + 4×3600 + 1×1800 within the window.
        assert_eq!(o.alloc_gpu_secs, 3600.0 + 14400.0 + 1800.0);
        assert_eq!(
            o.hourly,
            vec![3600.0 + 4.0 * 1800.0, 4.0 * 1800.0 + 1800.0, 0.0]
        );
        // Idle while waiting: 0 GPUs for 3600 s, then 3 for 3600 s.
        assert_eq!(o.idle_waiting_gpu_secs, 3.0 * 3600.0);
        assert_eq!(pct(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
        assert_eq!(pct(&[5.0], 99.0), 5.0);
    }
}
