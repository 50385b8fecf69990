//! The series behind `GET /api/v1/jobs/{id}/metrics` and `kiln top`: CPU
//! and memory of each running task, sampled every few seconds, and the
//! training metrics the job prints or writes as TensorBoard scalars. Log
//! files and event files are read from where the last read stopped, so
//! each byte is parsed once; a job's series are kept in
//! `<data>/jobs/<key>/metrics.json` and survive restarts. All calls here do
//! file I/O: run them on the blocking pool.

pub mod prom;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln_engine::local::gpu_usage::{self, GpuUsage};
use kiln_engine::local::usage;
use kiln_engine::local::TaskDir;
use kiln_metrics::idle::{IdleAction, IdlePolicy, IdleWatch};
use kiln_metrics::lines::Extractor;
use kiln_metrics::series::{JobSeries, Point};
use kiln_spec::completion::{JobState, TaskState};
use kiln_spec::quantity::format_duration_secs;
use kiln_store::{JobRecord, Store};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::control::Control;
use crate::layout::Layout;
use crate::now_ms;

/// Most bytes of one file parsed per pass, so a task printing gigabytes
/// cannot hold a sampling round up; the rest waits for the next pass.
const READ_CHUNK: u64 = 64 << 20;

/// The series name for the TensorBoard scalars of a job (any task may
/// write them).
pub const TENSORBOARD: &str = "tensorboard";

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    series: JobSeries,
    /// File → bytes already parsed.
    offsets: HashMap<PathBuf, u64>,
}

#[derive(Default)]
struct JobMetrics {
    saved: Saved,
    /// Task → (CPU ticks, when), for the CPU use since the last sample.
    cpu: HashMap<String, (u64, Instant)>,
    /// Built once per job: its patterns are compiled regexes.
    extractor: Option<Arc<Extractor>>,
    /// Whether its GPUs sit idle, in attempt `idle_attempt`.
    idle: IdleWatch,
    idle_attempt: u32,
    dirty: bool,
}

/// Where GPU use comes from and what is done about idle GPUs.
pub struct GpuWatch {
    pub source: Box<dyn GpuUsage>,
    pub policy: IdlePolicy,
    /// Where notices go (events) and releases are asked for (stops).
    pub control: Control,
}

pub struct Hub {
    store: Arc<dyn Store>,
    layout: Layout,
    sandboxed: bool,
    jobs: Mutex<HashMap<i64, JobMetrics>>,
    ticks_per_second: u64,
    gpus: Option<GpuWatch>,
    /// The last failed GPU reading, so a failing driver is logged once per
    /// change rather than every round.
    gpu_error: Mutex<Option<String>>,
    /// Job → since when its GPUs are idle, once noticed. Kept apart from
    /// `jobs`, which is held while logs are parsed, so that the API's read
    /// of it never waits.
    /// The value: (since when, whether it is being stopped for it).
    idle_since: Mutex<HashMap<i64, (u64, bool)>>,
    /// Who each job's user is on the machine, to read their files as them.
    identities: Option<Arc<crate::identity::Identities>>,
}

impl Hub {
    pub fn new(store: Arc<dyn Store>, layout: Layout, sandboxed: bool) -> Self {
        Hub {
            store,
            layout,
            sandboxed,
            jobs: Mutex::new(HashMap::new()),
            ticks_per_second: usage::ticks_per_second(),
            gpus: None,
            gpu_error: Mutex::new(None),
            idle_since: Mutex::new(HashMap::new()),
            identities: None,
        }
    }

    /// Event files are read as the job's user (see `identity`).
    pub fn with_identities(mut self, ids: Arc<crate::identity::Identities>) -> Self {
        self.identities = Some(ids);
        self
    }

    /// Samples GPU use too, and watches for idle GPUs.
    pub fn with_gpus(mut self, watch: GpuWatch) -> Self {
        self.gpus = Some(watch);
        self
    }

    /// The job's live notices, for its detail: idle GPUs.
    pub fn notices(&self, key: i64) -> Vec<String> {
        let Some(w) = &self.gpus else {
            return Vec::new();
        };
        let since = self
            .idle_since
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied());
        let Some((since, released)) = since else {
            return Vec::new();
        };
        let ms = now_ms().saturating_sub(since);
        let mut text = format!(
            "its GPUs have shown 0% use for {}",
            format_duration_secs(ms / 1000)
        );
        if released {
            text.push_str("; it is being stopped for it");
        } else if let Some(release) = w.policy.release_after_ms {
            text.push_str(&format!(
                "; it will be stopped once idle for {}",
                format_duration_secs(release / 1000)
            ));
        } else {
            text.push_str("; stop it if it no longer needs them");
        }
        vec![text]
    }

    /// One round: resources of every running task, new training metrics of
    /// every running job, and the changed series written out.
    pub fn sample(&self) {
        let running: Vec<JobRecord> = match self.store.unfinished_jobs() {
            Ok(j) => j
                .into_iter()
                .filter(|j| j.state == JobState::Running)
                .collect(),
            Err(e) => {
                warn!(error = %e, "metrics: cannot list running jobs");
                return;
            }
        };
        // (job key, task id, process group, GPUs) of every running task.
        let mut tasks: Vec<(i64, String, i32, Vec<u32>)> = Vec::new();
        // A container's processes: (the task's group, the container's session).
        let mut sessions: Vec<(i32, i32)> = Vec::new();
        for job in &running {
            let Ok(list) = self.store.tasks(job.key, job.attempt) else {
                continue;
            };
            for t in list {
                if t.state != TaskState::Running {
                    continue;
                }
                let Some(dir) = &t.dir else { continue };
                if let Ok(Some(s)) = TaskDir::new(dir).read_started() {
                    tasks.push((job.key, t.task.to_string(), s.pid, t.gpus.clone()));
                    if let Some(sid) = s.container_sid {
                        sessions.push((s.pid, sid));
                    }
                }
            }
        }
        let groups: Vec<i32> = tasks
            .iter()
            .map(|t| t.2)
            .chain(sessions.iter().map(|s| s.1))
            .collect();
        let mut used = usage::scan(&groups);
        for (pgid, sid) in sessions {
            if let Some(c) = used.remove(&sid) {
                let u = used.entry(pgid).or_default();
                u.cpu_ticks += c.cpu_ticks;
                u.rss_bytes += c.rss_bytes;
                u.pids.extend(c.pids);
            }
        }
        let t_ms = now_ms();
        let now = Instant::now();
        let reading = self.read_gpus(&tasks);
        // Job → the utilisation of each of its GPUs in this reading.
        let mut job_gpus: HashMap<i64, Vec<u32>> = HashMap::new();
        for (key, task, pgid, gpus) in &tasks {
            let Some(u) = used.get(pgid) else { continue };
            if let Some(reading) = &reading {
                let pids: std::collections::HashSet<u32> = u.pids.iter().copied().collect();
                let points = gpu_usage::task_points(reading, gpus, &pids);
                job_gpus
                    .entry(*key)
                    .or_default()
                    .extend(gpu_usage::utilizations(reading, gpus));
                self.with_job(*key, |m| {
                    for (name, value) in points {
                        m.saved.series.push(task, &name, point(t_ms, value, None));
                    }
                });
            }
            self.with_job(*key, |m| {
                if let Some((ticks, at)) = m.cpu.get(task) {
                    let secs = now.duration_since(*at).as_secs_f64();
                    if secs > 0.0 {
                        let cpu = u.cpu_ticks.saturating_sub(*ticks) as f64
                            / self.ticks_per_second as f64
                            / secs;
                        m.saved.series.push(task, "cpu", point(t_ms, cpu, None));
                    }
                }
                m.cpu.insert(task.clone(), (u.cpu_ticks, now));
                m.saved
                    .series
                    .push(task, "memory", point(t_ms, u.rss_bytes as f64, None));
                m.dirty = true;
            });
        }
        for job in &running {
            self.catch_up(job);
        }
        self.watch_idle(&running, &job_gpus, t_ms);
        self.save_dirty();
    }

    /// One GPU reading, when there are GPU tasks to read it for.
    fn read_gpus(
        &self,
        tasks: &[(i64, String, i32, Vec<u32>)],
    ) -> Option<Vec<gpu_usage::DeviceSample>> {
        let w = self.gpus.as_ref()?;
        if tasks.iter().all(|t| t.3.is_empty()) {
            return None;
        }
        let result = w.source.sample();
        let Ok(mut last) = self.gpu_error.lock() else {
            return result.ok();
        };
        match result {
            Ok(r) => {
                *last = None;
                Some(r)
            }
            Err(e) => {
                if last.as_deref() != Some(e.as_str()) {
                    warn!(error = %e, "metrics: cannot read GPU use");
                    *last = Some(e);
                }
                None
            }
        }
    }

    /// Feeds each running job's GPU use to its idle watch, and passes on
    /// what the watch says: events, and stops where the policy releases.
    fn watch_idle(&self, running: &[JobRecord], job_gpus: &HashMap<i64, Vec<u32>>, t_ms: u64) {
        let Some(w) = &self.gpus else { return };
        // Jobs no longer running lose their notice; jobs this reading did
        // not cover keep theirs.
        let mut idle_since: HashMap<i64, (u64, bool)> = self
            .idle_since
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| running.iter().any(|j| j.key == **k))
                    .map(|(k, v)| (*k, *v))
                    .collect()
            })
            .unwrap_or_default();
        let mut actions = Vec::new();
        for job in running {
            let Some(util) = job_gpus.get(&job.key) else {
                continue;
            };
            let Some((action, since)) = self.with_job(job.key, |m| {
                // Each attempt is watched afresh: a retry's GPUs owe nothing
                // to the last attempt's idleness or to the time it queued.
                if m.idle_attempt != job.attempt {
                    m.idle = IdleWatch::default();
                    m.idle_attempt = job.attempt;
                }
                (
                    m.idle.observe(t_ms, util, &w.policy),
                    m.idle.noticed_since_ms().map(|s| (s, m.idle.released())),
                )
            }) else {
                continue;
            };
            match since {
                Some(since) => idle_since.insert(job.key, since),
                None => idle_since.remove(&job.key),
            };
            if let Some(action) = action {
                actions.push((job.key, job.attempt, action));
            }
        }
        // The notice first, so that a detail read after the event shows it.
        if let Ok(mut m) = self.idle_since.lock() {
            *m = idle_since;
        }
        let took = |ms: u64| format_duration_secs(ms / 1000);
        for (key, attempt, action) in actions {
            match action {
                IdleAction::Notice { idle_ms } => w.control.note(
                    key,
                    "gpus-idle",
                    format!(
                        "its GPUs have shown 0% use for {}; stop it if it no longer needs them",
                        took(idle_ms)
                    ),
                ),
                IdleAction::Release { idle_ms } => {
                    w.control.note(
                        key,
                        "gpus-idle",
                        format!(
                            "its GPUs have shown 0% use for {}: releasing them",
                            took(idle_ms)
                        ),
                    );
                    w.control.release(
                        key,
                        attempt,
                        &format!("kiln (GPUs idle for {})", took(idle_ms)),
                    );
                }
                IdleAction::Busy { idle_ms } => w.control.note(
                    key,
                    "gpus-busy",
                    format!("its GPUs are in use again after {} idle", took(idle_ms)),
                ),
            }
        }
    }

    /// The job's series, with its logs and event files read up to now.
    pub fn series(&self, job: &JobRecord) -> JobSeries {
        self.catch_up(job);
        self.with_job(job.key, |m| m.saved.series.clone())
            .unwrap_or_default()
    }

    /// Forgets a deleted job.
    pub fn forget(&self, key: i64) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.remove(&key);
        }
    }

    fn with_job<T>(&self, key: i64, f: impl FnOnce(&mut JobMetrics) -> T) -> Option<T> {
        let mut jobs = self.jobs.lock().ok()?;
        let m = jobs.entry(key).or_insert_with(|| JobMetrics {
            saved: self.load(key),
            ..JobMetrics::default()
        });
        Some(f(m))
    }

    fn load(&self, key: i64) -> Saved {
        std::fs::read(self.layout.metrics(key))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_dirty(&self) {
        let out: Vec<(i64, Vec<u8>)> = match self.jobs.lock() {
            Ok(mut jobs) => jobs
                .iter_mut()
                .filter(|(_, m)| m.dirty)
                .filter_map(|(k, m)| {
                    m.dirty = false;
                    serde_json::to_vec(&m.saved).ok().map(|b| (*k, b))
                })
                .collect(),
            Err(_) => return,
        };
        for (key, bytes) in out {
            let path = self.layout.metrics(key);
            let tmp = path.with_extension("json.tmp");
            // No fsync: the series are rebuilt from logs where it matters,
            // and a lost sample costs nothing.
            if let Err(e) = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path))
            {
                warn!(job_key = key, error = %e, "metrics: cannot save series");
            }
        }
    }

    /// Reads what the job's tasks printed and its TensorBoard files gained
    /// since the last read.
    fn catch_up(&self, job: &JobRecord) {
        let Ok(parsed) = kiln_spec::parse_stored(job.spec_json.as_bytes()) else {
            return;
        };
        let spec = parsed.job;
        let Some(extractor) = self
            .with_job(job.key, |m| m.extractor.clone())
            .flatten()
            .or_else(|| {
                let e = Arc::new(extractor_for(job, &spec)?);
                self.with_job(job.key, |m| m.extractor = Some(Arc::clone(&e)));
                Some(e)
            })
        else {
            return;
        };
        // Logs of every attempt, newest generation of each task.
        let mut logs: Vec<(String, PathBuf)> = Vec::new();
        for attempt in 0..=job.attempt {
            if let Ok(list) = self.store.tasks(job.key, attempt) {
                for t in list {
                    if let Some(dir) = &t.dir {
                        logs.push((t.task.to_string(), TaskDir::new(dir).output()));
                    }
                }
            }
        }
        let (output, _) =
            self.layout
                .outputs(job.key, &job.id, spec.output_dir.as_deref(), self.sandboxed);
        let events = self.event_files(&job.id, &Layout::tensorboard(&output));
        // The event files are in a folder the user controls: a link swapped
        // in after the check above reaches only what the user may read.
        let owner = match &self.identities {
            Some(ids) => match ids.run_as(job.id.user()) {
                Ok(id) => id,
                Err(_) => return,
            },
            None => None,
        };
        let t_ms = now_ms();
        self.with_job(job.key, |m| {
            for (task, path) in &logs {
                let from = m.saved.offsets.get(path).copied().unwrap_or(0);
                let Some((bytes, _)) = read_from(path, from) else {
                    continue;
                };
                // Only whole lines; a line still being written waits.
                let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
                    continue;
                };
                for line in String::from_utf8_lossy(&bytes[..end]).lines() {
                    for f in extractor.line(line) {
                        m.saved
                            .series
                            .push(task, &f.name, point(t_ms, f.value, f.step));
                    }
                }
                m.saved.offsets.insert(path.clone(), from + end as u64 + 1);
                m.dirty = true;
            }
            for path in &events {
                let from = m.saved.offsets.get(path).copied().unwrap_or(0);
                let read = {
                    let _as = crate::identity::ActingAs::new(owner);
                    read_from(path, from)
                };
                let Some((bytes, _)) = read else {
                    continue;
                };
                match kiln_metrics::tfevents::read_records(&bytes, from) {
                    Ok((scalars, used)) => {
                        for s in scalars {
                            let t = (s.wall_time * 1000.0).max(0.0) as u64;
                            m.saved.series.push(
                                TENSORBOARD,
                                &s.tag,
                                point(t, s.value, Some(s.step as f64)),
                            );
                        }
                        if used > 0 {
                            m.saved.offsets.insert(path.clone(), from + used as u64);
                            m.dirty = true;
                        }
                    }
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "metrics: skipping an event file");
                        // Parse it no further.
                        m.saved.offsets.insert(path.clone(), u64::MAX);
                    }
                }
            }
        });
    }

    /// `events.out.tfevents.*` files under `dir` (and two levels below),
    /// only where they really are inside the job's own folder: the folder
    /// is in the user's space, where a planted symlink could point at
    /// someone else's.
    fn event_files(&self, job: &kiln_spec::JobId, dir: &Path) -> Vec<PathBuf> {
        let root = if self.sandboxed {
            self.layout.spaces().join(job.user())
        } else {
            self.layout.jobs()
        };
        let Ok(root) = std::fs::canonicalize(root) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut stack = vec![(dir.to_owned(), 0)];
        while let Some((d, depth)) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_symlink() {
                    continue;
                }
                let p = e.path();
                if ft.is_dir() && depth < 2 {
                    stack.push((p, depth + 1));
                } else if ft.is_file()
                    && e.file_name().to_string_lossy().contains("tfevents")
                    && std::fs::canonicalize(&p).is_ok_and(|c| c.starts_with(&root))
                {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }
}

/// The job's extractor: built-in forms plus `extras.metricPatterns`; with
/// only the built-in forms should its patterns be invalid.
fn extractor_for(job: &JobRecord, spec: &kiln_spec::JobSpec) -> Option<Extractor> {
    let patterns: Vec<String> = spec
        .extras
        .get("metricPatterns")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    match Extractor::new(&patterns) {
        Ok(e) => Some(e),
        Err(e) => {
            warn!(job = %job.id, error = %e, "metrics: the job's patterns are not valid");
            Extractor::new(&[]).ok()
        }
    }
}

fn point(t_ms: u64, value: f64, step: Option<f64>) -> Point {
    Point { t_ms, value, step }
}

/// Up to READ_CHUNK bytes of `path` from `from`; None when nothing is new.
fn read_from(path: &Path, from: u64) -> Option<(Vec<u8>, u64)> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len <= from {
        return None;
    }
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = Vec::new();
    f.take(READ_CHUNK).read_to_end(&mut buf).ok()?;
    Some((buf, len))
}
