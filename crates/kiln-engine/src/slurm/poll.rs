//! The Slurm engine's thread: it submits, polls `squeue --json` and
//! `sinfo --json` every `--slurm-poll`, and watches the attempt folders every
//! [`FILES_EVERY`] for `allocation.json`, `started.json`, `exit.json` and
//! `srun.json`. Every event comes from here; the loop never waits on Slurm.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::alloc::{place_tasks, Allocation as SlurmAllocation};
use super::cli::SlurmApi;
use super::engine::{lock, slurm_gpu_type, Shared, State, TaskWatch, Watch};
use super::files::{self, SrunEnd, StepSpec};
use super::reasons::{pending_words, Ask, PendingFacts};
use super::state::{job_view, unrecorded_end, JobView, UnrecordedEnd};
use crate::engine::{
    Allocation, AttemptRef, EngineEvent, EventSink, TaskAllocation, TaskExit, TaskRef, WaitReason,
};
use crate::error::EngineError;
use crate::local::reattach::end_of;
use crate::local::TaskDir;

/// How often the folders are looked at: one `stat` per waiting attempt and
/// per running task.
pub const FILES_EVERY: Duration = Duration::from_millis(100);
/// A submitted job missing from squeue this long is taken as gone.
const GONE_AFTER: Duration = Duration::from_secs(30);
/// A failed sbatch is tried again after this long.
const SUBMIT_RETRY: Duration = Duration::from_secs(5);

pub(super) fn spawn(
    shared: Shared,
    api: Arc<dyn SlurmApi>,
    events: EventSink,
    poll: Duration,
) -> Sender<()> {
    let (tx, rx) = channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("kiln-slurm".into())
        .spawn(move || {
            let mut next_poll = Instant::now();
            loop {
                match rx.recv_timeout(FILES_EVERY) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                submit_due(&shared, api.as_ref(), &events);
                if Instant::now() >= next_poll {
                    poll_slurm(&shared, api.as_ref(), &events);
                    next_poll = Instant::now() + poll;
                }
                watch_files(&shared, &events);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the Slurm engine's thread");
    }
    tx
}

fn pending(events: &EventSink, attempt: AttemptRef, message: String) {
    events(EngineEvent::Pending {
        attempt,
        reason: WaitReason { message },
    });
}

/// Submits every attempt whose submission is due: a job id already recorded
/// (or found in squeue after a crash mid-sbatch) is taken over instead.
fn submit_due(shared: &Shared, api: &dyn SlurmApi, events: &EventSink) {
    let due: Vec<(AttemptRef, std::path::PathBuf, Vec<String>, String)> = {
        let st = lock(shared);
        st.attempts
            .iter()
            .filter(|(_, w)| {
                w.job.is_none()
                    && w.released_at.is_none()
                    && w.submit_at.is_some_and(|t| t <= Instant::now())
            })
            .map(|(a, w)| (*a, w.dir.clone(), w.args.clone(), job_name(&w.args)))
            .collect()
    };
    for (attempt, dir, args, name) in due {
        let mut found = files::read_job_id(&dir);
        if found.is_none() && dir.join(files::SUBMITTING).exists() {
            // kiln stopped between sbatch and recording its answer.
            found = api
                .jobs()
                .ok()
                .and_then(|jobs| jobs.iter().find(|j| j.name == name).map(|j| j.id));
        }
        let result = match found {
            Some(id) => Ok(id),
            None => files::write_text(&dir.join(files::SUBMITTING), "").and_then(|()| {
                let t = Instant::now();
                let id = api.submit(&args, None)?;
                info!(
                    job_key = attempt.key,
                    attempt = attempt.attempt,
                    slurm_job = id,
                    ms = t.elapsed().as_millis() as u64,
                    "submitted to Slurm"
                );
                files::write_job_id(&dir, id)?;
                Ok(id)
            }),
        };
        let mut st = lock(shared);
        let Some(w) = st.attempts.get_mut(&attempt) else {
            continue;
        };
        match result {
            Ok(id) => {
                w.job = Some(id);
                w.submit_at = None;
                w.submitted_at = Instant::now();
            }
            Err(e) => {
                warn!(job_key = attempt.key, error = %e, "sbatch failed; trying again");
                w.submit_at = Some(Instant::now() + SUBMIT_RETRY);
                drop(st);
                pending(
                    events,
                    attempt,
                    format!("cannot submit to Slurm ({e}); trying again"),
                );
            }
        }
    }
}

fn job_name(args: &[String]) -> String {
    args.iter()
        .find_map(|a| a.strip_prefix("--job-name="))
        .unwrap_or_default()
        .to_owned()
}

/// One squeue and one sinfo: nodes, pending reasons, jobs that ended.
fn poll_slurm(shared: &Shared, api: &dyn SlurmApi, events: &EventSink) {
    let cancels = std::mem::take(&mut lock(shared).cancels);
    for job in cancels {
        if let Err(e) = api.cancel(job, None) {
            warn!(slurm_job = job, error = %e, "scancel failed");
        }
    }
    move_time_limits(shared, api);
    let (jobs, nodes) = match (api.jobs(), api.nodes()) {
        (Ok(j), Ok(n)) => (j, n),
        (Err(e), _) | (_, Err(e)) => {
            // Never a reason to call a task lost: the files decide.
            warn!(error = %e, "cannot poll Slurm");
            return;
        }
    };
    let mut st = lock(shared);
    st.jobs = jobs;
    st.nodes = nodes;
    let names: BTreeMap<u64, String> = st
        .attempts
        .values()
        .filter_map(|w| Some((w.job?, w.name.clone())))
        .collect();
    let mut cancel = Vec::new();
    let mut gone = Vec::new();
    let mut sends = Vec::new();
    let State {
        attempts,
        jobs,
        nodes,
        ..
    } = &mut *st;
    for (attempt, w) in attempts.iter_mut() {
        let Some(id) = w.job else { continue };
        let found = jobs.iter().find(|j| j.id == id);
        let view = match found {
            Some(j) => match job_view(&id.to_string(), &j.state) {
                Ok(v) => Some(v),
                Err(e) => {
                    warn!(error = %e, "unknown Slurm state");
                    continue;
                }
            },
            None if w.submitted_at.elapsed() > GONE_AFTER => None,
            None => continue,
        };
        let word = match view {
            None => Some("gone from squeue".to_owned()),
            Some(JobView::Ended(k)) => Some(k.slurm_word().to_owned()),
            _ => None,
        };
        if w.released_at.is_some() {
            match word {
                Some(_) => gone.push(*attempt),
                None if w
                    .released_at
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(1)) =>
                {
                    cancel.push(id)
                }
                None => {}
            }
            continue;
        }
        if let Some(word) = word {
            w.ended = Some(word.clone());
            if w.steps.is_none() && !w.dir.join(files::ALLOCATION).exists() {
                // It never started: submit the attempt again.
                let _ = std::fs::remove_file(w.dir.join(files::JOB_ID));
                let _ = std::fs::remove_file(w.dir.join(files::SUBMITTING));
                w.job = None;
                w.ended = None;
                w.submit_at = Some(Instant::now() + SUBMIT_RETRY);
                sends.push((
                    *attempt,
                    format!("Slurm job {id} ended ({word}) before it started; submitting again"),
                ));
            }
            continue;
        }
        if let (Some(JobView::Pending), Some(j), None) = (view, found, &w.steps) {
            let largest = w
                .shapes
                .iter()
                .max_by_key(|t| (t.gpus, t.cpus, t.memory_mb));
            let ask = Ask {
                gpus: largest.map_or(0, |t| u64::from(t.gpus)),
                gpu_type: largest.and_then(|t| slurm_gpu_type(t, nodes)),
                cpus: largest.map_or(1, |t| u64::from(t.cpus.max(1))),
                memory_mb: largest.map_or(0, |t| t.memory_mb),
            };
            let words = pending_words(&PendingFacts {
                job: j,
                heterogeneous: w.groups.len() > 1,
                ask: &ask,
                nodes,
                jobs,
                kiln_names: &names,
            });
            if w.reason.as_deref() != Some(words.message.as_str()) {
                w.reason = Some(words.message.clone());
                sends.push((*attempt, words.message));
            }
        }
    }
    for a in gone {
        attempts.remove(&a);
    }
    st.cancels.extend(cancel);
    drop(st);
    for (attempt, message) in sends {
        pending(events, attempt, message);
    }
}

/// Allocations that arrived, and tasks that started or ended.
fn watch_files(shared: &Shared, events: &EventSink) {
    let mut out = Vec::new();
    {
        let mut st = lock(shared);
        let State {
            attempts,
            nodes,
            book,
            ..
        } = &mut *st;
        for (attempt, w) in attempts.iter_mut() {
            if w.released_at.is_some() {
                continue;
            }
            if w.steps.is_none() && w.job.is_some() {
                match allocated(*attempt, w, nodes, book) {
                    Ok(Some(a)) => out.push(EngineEvent::Allocated(a)),
                    Ok(None) => {}
                    Err(e) => {
                        let message = format!("Slurm's allocation cannot be used: {e}");
                        if w.reason.as_deref() != Some(message.as_str()) {
                            warn!(job_key = attempt.key, error = %e, "bad allocation");
                            w.reason = Some(message.clone());
                            out.push(EngineEvent::Pending {
                                attempt: *attempt,
                                reason: WaitReason { message },
                            });
                        }
                    }
                }
            }
            let job = w.job;
            let ended = w.ended.clone();
            w.tasks.retain(|task, t| {
                let (ev, done) = task_news(task, t, job, ended.as_deref());
                out.extend(ev);
                !done
            });
        }
    }
    for ev in out {
        events(ev);
    }
}

/// What became of one launched run since the last look; true once it ended.
fn task_news(
    task: &TaskRef,
    t: &mut TaskWatch,
    job: Option<u64>,
    ended: Option<&str>,
) -> (Vec<EngineEvent>, bool) {
    let mut out = Vec::new();
    let has_exit = t.dir.exit().exists();
    if !t.started {
        if let Ok(Some(s)) = t.dir.read_started() {
            t.started = true;
            out.push(EngineEvent::Started {
                task: task.clone(),
                at_ms: s.started_at_ms,
            });
        }
    }
    if has_exit {
        out.push(end_of(task.clone(), &t.dir));
        return (out, true);
    }
    let srun_end = t.dir.path().join(files::SRUN_END);
    let end = match files::read_json::<SrunEnd>(&srun_end) {
        Ok(Some(end)) => Some(UnrecordedEnd::Lost(srun_words(&end, &t.dir))),
        _ => ended.map(|word| unrecorded_end(job.unwrap_or_default(), word)),
    };
    match end {
        // One more look: the exit record may have landed just now.
        Some(_) if t.dir.exit().exists() => {
            out.push(end_of(task.clone(), &t.dir));
            (out, true)
        }
        Some(UnrecordedEnd::Lost(why)) => {
            out.push(EngineEvent::Lost {
                task: task.clone(),
                why,
                notes: Vec::new(),
            });
            (out, true)
        }
        Some(UnrecordedEnd::Exited(cause)) => {
            out.push(EngineEvent::Exited {
                task: task.clone(),
                exit: TaskExit {
                    exit_code: None,
                    signal: None,
                    stop_requested: t.dir.path().join(files::STOP).exists(),
                    cause: Some(cause),
                    finished_at_ms: crate::local::files::now_ms(),
                },
                notes: Vec::new(),
            });
            (out, true)
        }
        None => (out, false),
    }
}

fn srun_words(end: &SrunEnd, dir: &TaskDir) -> String {
    if let Some(e) = &end.error {
        return format!("cannot start its Slurm step: {e}");
    }
    let said = std::fs::read_to_string(dir.path().join("srun.log")).unwrap_or_default();
    let said = said.lines().last().unwrap_or("").trim().to_owned();
    let status = match (end.exit_code, end.signal) {
        (Some(c), _) => format!("status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".into(),
    };
    if said.is_empty() {
        format!("its Slurm step (srun) ended with {status} without recording how the task ended")
    } else {
        format!("its Slurm step (srun) ended with {status} without recording how the task ended: {said}")
    }
}

/// Reads `allocation.json` once the launcher wrote it, places the tasks on
/// its nodes and books their ports.
fn allocated(
    attempt: AttemptRef,
    w: &mut Watch,
    nodes: &[super::parse::SlurmNode],
    book: &mut super::book::Book,
) -> Result<Option<Allocation>, EngineError> {
    let Some(alloc) = files::read_json::<SlurmAllocation>(&w.dir.join(files::ALLOCATION))? else {
        return Ok(None);
    };
    let placed = place_tasks(&w.groups, &alloc)?;
    let het = w.groups.len() > 1;
    let mut steps = HashMap::new();
    let mut tasks = Vec::new();
    let mut taken: Vec<u16> = Vec::new();
    let result = (|| {
        let master_port = book.take(1).map_err(EngineError::SlurmAllocation)?[0];
        taken.push(master_port);
        for shape in &w.shapes {
            let name = shape.task.to_string();
            let p = placed
                .iter()
                .find(|p| p.task == name)
                .ok_or_else(|| EngineError::SlurmAllocation(format!("{name} has no node")))?;
            let node_index = nodes.iter().position(|n| n.name == p.node);
            let address = node_index
                .map(|i| nodes[i].address.clone())
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| p.node.clone());
            let mut ports = Vec::new();
            for want in &shape.ports {
                let got = if want.begin_at == 0 {
                    book.take(want.count)
                        .map_err(EngineError::SlurmAllocation)?
                } else {
                    book.fixed(want.begin_at, want.count)
                };
                taken.extend(&got);
                ports.push((want.label.clone(), got));
            }
            steps.insert(
                name,
                StepSpec {
                    het_group: het.then_some(p.component),
                    node: p.node.clone(),
                    cpus: shape.cpus.max(1),
                    memory_mb: shape.memory_mb,
                    gpus: shape.gpus,
                    gpu_type: slurm_gpu_type(shape, nodes),
                },
            );
            tasks.push(TaskAllocation {
                task: shape.task.clone(),
                host: p.node.clone(),
                address,
                // Slurm binds them when the step starts, and the supervisor
                // takes them from the step (LaunchSpec::gpus_from_step):
                // until then kiln knows only how many.
                gpus: (0..shape.gpus).collect(),
                ports,
                placed: kiln_sched::Placed {
                    node: node_index.unwrap_or(0),
                    cpus: shape.cpus,
                    memory_mb: shape.memory_mb,
                    gpus: Vec::new(),
                },
            });
        }
        Ok(master_port)
    })();
    match result {
        Ok(master_port) => {
            info!(
                job_key = attempt.key,
                slurm_job = alloc.job_id,
                "Slurm allocated the attempt"
            );
            w.steps = Some(steps);
            w.ports = taken;
            Ok(Some(Allocation {
                attempt,
                master_port,
                tasks,
            }))
        }
        Err(e) => {
            book.release(taken);
            Err(e)
        }
    }
}

/// `kiln extend`'s new Slurm time limits, once each attempt's job id is known
/// (an attempt given up meanwhile drops its own).
fn move_time_limits(shared: &Shared, api: &dyn SlurmApi) {
    let due: Vec<(u64, u64)> = {
        let mut st = lock(shared);
        let State {
            attempts,
            time_limits,
            ..
        } = &mut *st;
        let mut due = Vec::new();
        time_limits.retain(|attempt, minutes| match attempts.get(attempt) {
            Some(w) if w.released_at.is_none() => match w.job {
                Some(job) => {
                    due.push((job, *minutes));
                    false
                }
                None => true,
            },
            _ => false,
        });
        due
    };
    for (job, minutes) in due {
        match api.set_time_limit(job, minutes) {
            Ok(()) => info!(slurm_job = job, minutes, "moved the Slurm time limit"),
            // Only Slurm's operators may raise a limit: kiln's own timer
            // still ends the job at its new deadline.
            Err(e) => warn!(slurm_job = job, error = %e, "cannot move the Slurm time limit"),
        }
    }
}
