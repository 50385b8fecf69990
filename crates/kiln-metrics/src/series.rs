//! Time series that stay small however long a job runs: a series holds at
//! most `cap` points, and when it fills, its older half is merged pairwise.
//! The recent past keeps full resolution and the distant past gets coarser,
//! so a week-long job sampled every few seconds keeps a few thousand points
//! per series, enough for a chart and cheap to store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Points per series unless a caller says otherwise.
pub const DEFAULT_CAP: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub t_ms: u64,
    pub value: f64,
    /// Training step or epoch, when the source gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    cap: usize,
    points: Vec<Point>,
}

impl Default for Series {
    fn default() -> Self {
        Series::new(DEFAULT_CAP)
    }
}

impl Series {
    /// `cap` below 4 is raised to 4, so merging always frees room.
    pub fn new(cap: usize) -> Self {
        Series {
            cap: cap.max(4),
            points: Vec::new(),
        }
    }

    /// Adds a point, keeping time order (sources such as several TensorBoard
    /// files can deliver out of order). Non-finite values are dropped.
    pub fn push(&mut self, p: Point) {
        if !p.value.is_finite() {
            return;
        }
        match self.points.last() {
            Some(last) if last.t_ms > p.t_ms => {
                let at = self.points.partition_point(|q| q.t_ms <= p.t_ms);
                self.points.insert(at, p);
            }
            _ => self.points.push(p),
        }
        if self.points.len() > self.cap {
            self.compact();
        }
    }

    /// Merges the older half pairwise: each pair becomes one point at their
    /// mean time and value, keeping the later step.
    fn compact(&mut self) {
        let half = self.points.len() / 2;
        let mut merged: Vec<Point> = self.points[..half]
            .chunks(2)
            .map(|c| {
                // A chunk holds one or two points; alone, a point stays as is.
                let (a, b) = (c[0], c[c.len() - 1]);
                Point {
                    t_ms: a.t_ms + (b.t_ms - a.t_ms) / 2,
                    value: a.value / 2.0 + b.value / 2.0,
                    step: b.step.or(a.step),
                }
            })
            .collect();
        merged.extend_from_slice(&self.points[half..]);
        self.points = merged;
    }

    pub fn points(&self) -> &[Point] {
        &self.points
    }

    pub fn last(&self) -> Option<&Point> {
        self.points.last()
    }

    /// Points with `from <= t_ms <= to`.
    pub fn range(&self, from: u64, to: u64) -> &[Point] {
        let a = self.points.partition_point(|p| p.t_ms < from);
        let b = self.points.partition_point(|p| p.t_ms <= to);
        &self.points[a..b.max(a)]
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// Every series of one job: task id → metric name → series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSeries {
    pub tasks: BTreeMap<String, BTreeMap<String, Series>>,
}

impl JobSeries {
    pub fn push(&mut self, task: &str, name: &str, p: Point) {
        self.tasks
            .entry(task.to_owned())
            .or_default()
            .entry(name.to_owned())
            .or_default()
            .push(p);
    }

    pub fn get(&self, task: &str, name: &str) -> Option<&Series> {
        self.tasks.get(task).and_then(|m| m.get(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pt(t: u64, v: f64) -> Point {
        Point {
            t_ms: t,
            value: v,
            step: None,
        }
    }

    #[test]
    fn a_week_of_samples_stays_within_the_cap_and_keeps_recent_detail() {
        let mut s = Series::new(1000);
        // One sample every 5 s for a week.
        for i in 0..(7 * 24 * 3600 / 5) {
            s.push(pt(i * 5000, (i % 100) as f64));
        }
        assert!(s.len() <= 1000);
        let last = s.points().last().expect("points");
        assert_eq!(last.t_ms, (7 * 24 * 3600 / 5 - 1) * 5000);
        // The newest quarter is untouched: consecutive samples 5 s apart.
        let tail = &s.points()[s.len() - 100..];
        assert!(tail.windows(2).all(|w| w[1].t_ms - w[0].t_ms == 5000));
    }

    #[test]
    fn ranges_and_out_of_order_points() {
        let mut s = Series::new(16);
        for t in [10, 30, 20, 40] {
            s.push(pt(t, t as f64));
        }
        s.push(pt(25, f64::NAN));
        let ts: Vec<u64> = s.points().iter().map(|p| p.t_ms).collect();
        assert_eq!(ts, [10, 20, 30, 40]);
        assert_eq!(s.range(15, 30).len(), 2);
        assert!(s.range(50, 60).is_empty());
        assert!(s.range(30, 10).is_empty());
    }

    proptest! {
        #[test]
        fn bounded_ordered_and_within_the_values_seen(
            cap in 4usize..64,
            pts in proptest::collection::vec((0u64..10_000, -1e6f64..1e6), 0..500),
        ) {
            let mut s = Series::new(cap);
            for (t, v) in &pts {
                s.push(pt(*t, *v));
            }
            prop_assert!(s.len() <= cap);
            prop_assert!(s.points().windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
            let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            for p in s.points() {
                prop_assert!(p.value >= lo - 1e-6 && p.value <= hi + 1e-6);
            }
        }
    }
}
