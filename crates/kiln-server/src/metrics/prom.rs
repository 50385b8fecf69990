//! kiln's own numbers for Prometheus at `/metrics`: jobs by state, queue
//! length, GPUs, and how long scheduling passes and API requests take.
//! Counts are read when scraped; latencies are observed as they happen.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::control::ClusterView;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    /// The route's pattern (`/api/v1/jobs/{id}`), never the raw path, so
    /// job names cannot blow up the number of series.
    pub route: String,
}

fn latency() -> Histogram {
    // 50 µs .. ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

pub struct Prom {
    registry: Registry,
    jobs: Family<StateLabel, Gauge>,
    queue: Gauge,
    gpus: Gauge,
    gpus_allocated: Gauge,
    /// Seconds per scheduling pass; the control loop observes it.
    pub schedule: Histogram,
    /// Seconds per API request.
    pub requests: Family<RouteLabels, Histogram>,
}

impl Default for Prom {
    fn default() -> Self {
        Prom::new()
    }
}

impl Prom {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kiln");
        let jobs = Family::<StateLabel, Gauge>::default();
        let (queue, gpus, gpus_allocated) = (Gauge::default(), Gauge::default(), Gauge::default());
        let schedule = latency();
        let requests =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        registry.register("jobs", "Jobs by state", jobs.clone());
        registry.register("queue_length", "Jobs waiting to be placed", queue.clone());
        registry.register("gpus", "GPUs of the cluster", gpus.clone());
        registry.register(
            "gpus_allocated",
            "GPUs held by running jobs",
            gpus_allocated.clone(),
        );
        registry.register(
            "schedule_pass_seconds",
            "Time of one scheduling pass",
            schedule.clone(),
        );
        registry.register(
            "api_request_seconds",
            "Time to answer an API request",
            requests.clone(),
        );
        Prom {
            registry,
            jobs,
            queue,
            gpus,
            gpus_allocated,
            schedule,
            requests,
        }
    }

    /// The text exposition, with counts as of now.
    pub fn render(&self, by_state: &[(String, u64)], cluster: &ClusterView) -> String {
        for state in [
            "WAITING",
            "RUNNING",
            "STOPPING",
            "SUCCEEDED",
            "FAILED",
            "STOPPED",
        ] {
            let n = by_state
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&StateLabel {
                    state: state.to_owned(),
                })
                .set(n as i64);
        }
        self.queue.set(cluster.waiting as i64);
        let total: usize = cluster.nodes.iter().map(|n| n.node.gpus.len()).sum();
        let held: usize = cluster.nodes.iter().map(|n| n.gpu_jobs.len()).sum();
        self.gpus.set(total as i64);
        self.gpus_allocated.set(held as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
