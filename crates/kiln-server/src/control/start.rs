//! Submissions, scheduling, and the handshake that starts an attempt
//! (docs/engines.md, section 1): the engine holds resources (`submit`), the
//! loop renders every task's environment and records the tasks, the engine
//! starts them (`prepare`, then `launch`).

use kiln_engine::engine::RunAs;
use kiln_engine::engine::{
    Allocation, AttemptSpec, FileView, Mount, PortWant, Submission, TaskLaunch, TaskShape,
    WaitReason,
};
use kiln_spec::env::{render_env, task_ids, RenderContext, TaskPlacement};
use kiln_spec::model::MountSource;

use super::*;
use crate::identity::{chown_tree, give, set_mode};
use crate::layout::SPACE_INSIDE;

impl Loop {
    pub(super) fn on_submitted(&mut self, key: i64) {
        let job = match self.store.job_by_key(key) {
            Ok(Some(j)) if j.state == JobState::Waiting => j,
            Ok(_) => return,
            Err(e) => {
                error!(job_key = key, error = %e, "cannot read a submitted job; trying again");
                self.later(key);
                return;
            }
        };
        let spec = match parse_spec(&job) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                error!(job = %job.id, error = %e, "submitted job does not parse back");
                self.abandon(&job, e);
                return;
            }
        };
        let request = request_of(&job, &spec);
        self.waiting.insert(
            key,
            Waiting {
                job,
                spec,
                request,
                opportunistic: false,
                submitted: false,
            },
        );
        self.dirty = true;
    }

    /// With an engine that places: every waiting job not yet handed to it
    /// is submitted, in queue order; the engine's reasons are kept.
    pub(super) fn submit_waiting(&mut self) {
        let keys: Vec<i64> = self
            .waiting
            .iter()
            .filter(|(_, w)| !w.submitted)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Err(reason) = self.start_job(key, None) {
                self.set_reason(key, Pending::Text(reason));
                self.recheck_at = Some(now_ms() + RECHECK_MS);
            }
        }
        if let Ok(mut r) = self.reasons.write() {
            r.retain(|k, _| self.waiting.contains_key(k));
        }
    }

    fn set_reason(&self, key: i64, reason: Pending) {
        if let Ok(mut r) = self.reasons.write() {
            r.insert(key, reason);
        }
    }

    /// Phase 1: asks the engine to hold resources for the job's attempt,
    /// placed by kiln-sched (`placed`) or not. An `Err` keeps the job
    /// waiting with that reason.
    pub(super) fn start_job(
        &mut self,
        key: i64,
        placed: Option<Vec<Placed>>,
    ) -> Result<(), String> {
        let Some(w) = self.waiting.get(&key) else {
            return Ok(());
        };
        let spec = Arc::clone(&w.spec);
        let attempt = AttemptRef {
            key,
            attempt: w.job.attempt,
        };
        // Who the tasks run as, before anything is held.
        self.cfg
            .identities
            .run_as(w.job.id.user())
            .map_err(|e| format!("cannot give the task its user's uid: {e}"))?;
        let tasks = task_ids(&spec)
            .iter()
            .map(|id| shape_of(&spec, id))
            .collect();
        let submission = self
            .engine
            .submit(&AttemptSpec {
                attempt,
                tasks,
                placed,
                queue: Some(w.job.queue.clone()).filter(|q| !q.is_empty()),
                name: w.job.id.to_string(),
                max_duration_secs: spec.max_duration_secs,
            })
            .map_err(|e| e.to_string())?;
        match submission {
            Submission::Allocated(allocation) => self.start_allocated(allocation),
            Submission::Queued => {
                if let Some(w) = self.waiting.get_mut(&key) {
                    w.submitted = true;
                }
                Ok(())
            }
            Submission::Wait(WaitReason { message }) => Err(message),
        }
    }

    /// The engine placed a submitted job and holds its resources.
    pub(super) fn on_allocated(&mut self, allocation: Allocation) {
        let attempt = allocation.attempt;
        let current = self
            .waiting
            .get(&attempt.key)
            .is_some_and(|w| w.submitted && w.job.attempt == attempt.attempt);
        if !current {
            self.engine.release(attempt);
            return;
        }
        if let Err(reason) = self.start_allocated(allocation) {
            if let Some(w) = self.waiting.get_mut(&attempt.key) {
                w.submitted = false;
            }
            self.set_reason(attempt.key, Pending::Text(reason));
            self.recheck_at = Some(now_ms() + RECHECK_MS);
        }
        self.dirty = true;
    }

    /// Why a submitted job still waits, in the engine's words.
    pub(super) fn on_pending(&mut self, attempt: AttemptRef, reason: WaitReason) {
        let current = self
            .waiting
            .get(&attempt.key)
            .is_some_and(|w| w.job.attempt == attempt.attempt);
        if current {
            self.set_reason(attempt.key, Pending::Text(reason.message));
        }
    }

    /// Renders every task's environment from what the engine holds, has the
    /// engine prepare the tasks, records the start and launches them. An
    /// `Err` gives back what the engine holds and keeps the job waiting
    /// with that reason.
    fn start_allocated(&mut self, allocation: Allocation) -> Result<(), String> {
        let attempt = allocation.attempt;
        let key = attempt.key;
        let Some(w) = self.waiting.get(&key) else {
            self.engine.release(attempt);
            return Ok(());
        };
        let (job, spec) = (w.job.clone(), Arc::clone(&w.spec));
        let run_as = match self.cfg.identities.run_as(job.id.user()) {
            Ok(r) => r,
            Err(e) => {
                self.engine.release(attempt);
                return Err(format!("cannot give the task its user's uid: {e}"));
            }
        };
        let ids = task_ids(&spec);

        // Sandboxed: the space is /mnt and outputs go to Output/<name> in
        // it. Otherwise: a folder of the job's own.
        let space = self
            .info
            .sandboxed
            .then(|| self.cfg.layout.spaces().join(job.id.user()));
        let (output, output_inside) =
            self.cfg
                .layout
                .outputs(key, &job.id, spec.output_dir.as_deref(), space.is_some());
        let fs_uri = match &space {
            Some(_) => format!("file://{SPACE_INSIDE}"),
            None => format!("file://{}", output.display()),
        };
        let ctx = RenderContext {
            job_id: job.id.clone(),
            attempt: job.attempt,
            default_fs_uri: fs_uri,
            space_dir: space.as_ref().map(|_| SPACE_INSIDE.to_owned()),
            output_dir: output_inside.display().to_string(),
            tensorboard_dir: Layout::tensorboard(&output_inside).display().to_string(),
            master_port: allocation.master_port,
            placement: allocation
                .tasks
                .iter()
                .map(|t| TaskPlacement {
                    task: t.task.clone(),
                    host_ip: t.address.clone(),
                    gpus: t.gpus.clone(),
                    ports: t.ports.iter().cloned().collect::<IndexMap<_, _>>(),
                })
                .collect(),
        };
        let mut envs = match render_env(&spec, &ctx) {
            Ok(e) => e,
            Err(e) => {
                self.engine.release(attempt);
                self.waiting.remove(&key);
                self.finish_unstarted(
                    key,
                    JobState::Failed,
                    format!("cannot render the environment: {e}"),
                );
                return Ok(());
            }
        };
        // The attempt after a preemption can resume from a checkpoint.
        if job.preempted_by.is_some() {
            for e in &mut envs {
                e.env.insert("KILN_PREEMPTED".into(), "1".into());
            }
        }

        let prepared = (|| -> Result<_, String> {
            if run_as.is_some() {
                self.close_job_folder(key, run_as)?;
            }
            self.make_output(&job, &output, space.is_some(), run_as)?;
            let mut launches = Vec::new();
            for ((id, env), t) in ids.iter().zip(envs).zip(&allocation.tasks) {
                let role = spec
                    .role(id.role())
                    .ok_or_else(|| format!("no role for {id}"))?;
                let (workdir_host, workdir_inside) = match &spec.working_dir {
                    Some(w) => (output.join(w), output_inside.join(w)),
                    None => (output.clone(), output_inside.clone()),
                };
                if space.is_none() {
                    // The job's own folder outside any space: the server's
                    // to make, the task's to write.
                    std::fs::create_dir_all(&workdir_host)
                        .map_err(|e| format!("cannot create {}: {e}", workdir_host.display()))?;
                    if let Some(id) = run_as {
                        chown_tree(&output, id)?;
                        set_mode(&output, 0o700);
                    }
                }
                // A role's image, or the job's.
                let image = role.image.clone().or_else(|| spec.image.clone());
                let pull = self.image_pull(
                    job.id.user(),
                    image.as_deref(),
                    spec.auth_file.as_deref(),
                    space.as_deref(),
                );
                launches.push(TaskLaunch {
                    task: TaskRef {
                        attempt,
                        task: id.clone(),
                        gen: 0,
                    },
                    shape: shape_of(&spec, id),
                    gpus: t.gpus.clone(),
                    command: role.command.clone(),
                    env: env.env.into_iter().collect(),
                    files: FileView {
                        user: job.id.user().to_owned(),
                        mounts: match &space {
                            Some(_) => self.mounts(job.id.user(), key, &spec),
                            None => Vec::new(),
                        },
                        home_inside: PathBuf::from(SPACE_INSIDE),
                        workdir_host,
                        workdir_inside,
                    },
                    image,
                    pull,
                    run_as,
                });
            }
            self.engine.prepare(&launches).map_err(|e| e.to_string())
        })();
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.engine.release(attempt);
                return Err(format!("cannot prepare the task folders: {e}"));
            }
        };
        self.record_start(&job, spec, allocation, prepared)
    }

    /// Records the tasks and their placement in one transaction (with the
    /// start itself where the engine starts tasks on launch, so the job is
    /// RUNNING at once), then launches them.
    fn record_start(
        &mut self,
        job: &JobRecord,
        spec: Arc<JobSpec>,
        allocation: Allocation,
        prepared: Vec<kiln_engine::engine::Prepared>,
    ) -> Result<(), String> {
        let key = job.key;
        let now = now_ms();
        let started = self.info.started_on_launch;
        let mut hosts: Vec<String> = Vec::new();
        let mut slots = Vec::new();
        for (t, p) in allocation.tasks.into_iter().zip(&prepared) {
            if !hosts.contains(&t.host) {
                hosts.push(t.host.clone());
            }
            slots.push(Slot {
                rec: TaskRecord {
                    attempt: job.attempt,
                    task: t.task,
                    state: if started {
                        TaskState::Running
                    } else {
                        TaskState::Waiting
                    },
                    exit_code: None,
                    signal: None,
                    reason: None,
                    host: t.host,
                    gpus: t.gpus,
                    ports: t.ports.into_iter().collect(),
                    restarts: 0,
                    started_at_ms: started.then_some(now),
                    finished_at_ms: None,
                    dir: Some(p.dir.clone()),
                    restart_at_ms: None,
                    restart_streak: 0,
                },
                placed: t.placed,
                gen: p.task.gen,
                platform_failure: None,
                last_exit: None,
            });
        }
        let placement: Vec<String> = slots
            .iter()
            .map(|s| {
                if s.rec.gpus.is_empty() {
                    s.rec.task.to_string()
                } else {
                    let g: Vec<String> = s.rec.gpus.iter().map(u32::to_string).collect();
                    format!("{} GPUs {}", s.rec.task, g.join(","))
                }
            })
            .collect();
        let mut events = vec![event(
            "placed",
            format!(
                "attempt {} placed on {}: {}",
                job.attempt,
                hosts.join(", "),
                placement.join("; ")
            ),
        )];
        if let Some(summary) = &self.info.limits_summary {
            events.push(event("limits", summary.clone()));
        }
        let mut patch = JobPatch::default();
        if started {
            events.push(started_event(slots.len()));
            patch = started_patch(now, &spec);
        }
        let opportunistic = self.waiting.get(&key).is_some_and(|w| w.opportunistic);
        patch.opportunistic = Some(opportunistic);
        if opportunistic {
            events.push(event(
                "opportunistic",
                "started on idle resources ahead of a job that waits for more; it may be preempted when that job can start",
            ));
        }
        let change = Change {
            job: patch,
            tasks: slots.iter().map(|s| s.rec.clone()).collect(),
            events,
            ..Default::default()
        };
        let attempt = AttemptRef {
            key,
            attempt: job.attempt,
        };
        let Some(recorded) = self.apply(key, &change) else {
            self.engine.release(attempt);
            return Err("cannot record the start; will try again".into());
        };
        self.waiting.remove(&key);
        self.active.insert(
            key,
            Active {
                job: recorded,
                spec,
                slots,
                ending: None,
            },
        );
        let mut change = Change::default();
        for i in 0..prepared.len() {
            // Once the attempt is decided (a task could not be started),
            // the rest are not started at all.
            if self.active.get(&key).is_some_and(|a| a.ending.is_some()) {
                self.skip_unstarted(key, i, &mut change);
                continue;
            }
            if !self.launch(key, i, &mut change) {
                self.apply(key, &std::mem::take(&mut change));
                self.evaluate(key);
            }
        }
        if !change.tasks.is_empty() {
            self.apply(key, &change);
            self.evaluate(key);
        }
        Ok(())
    }

    /// A launched task runs (engines that report it): the first one
    /// starts the job's clock.
    pub(super) fn on_started(&mut self, t: TaskRef, at_ms: u64) {
        let Some(i) = self.slot_of(&t) else {
            return;
        };
        let key = t.attempt.key;
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        let slot = &mut a.slots[i];
        if slot.rec.state != TaskState::Waiting || slot.rec.restart_at_ms.is_some() {
            return;
        }
        slot.rec.state = TaskState::Running;
        slot.rec.started_at_ms = Some(at_ms);
        let mut change = Change {
            tasks: vec![slot.rec.clone()],
            ..Default::default()
        };
        if a.job.state == JobState::Waiting {
            change.job = started_patch(at_ms, &a.spec);
            change.events.push(started_event(a.slots.len()));
        }
        if let Some(job) = self.apply(key, &change) {
            if let Some(a) = self.active.get_mut(&key) {
                a.job = job;
            }
        }
        self.dirty = true;
    }

    /// The bind mounts of a sandboxed task: the user's space at /mnt, the
    /// codeDir copy and the job's mounts. Every source in a space or the
    /// datasets is named relative to its folder and resolved beneath it when
    /// the task starts: a task may have swapped any of it for a link since
    /// submission.
    fn mounts(&self, user: &str, key: i64, spec: &JobSpec) -> Vec<Mount> {
        let spaces = self.cfg.layout.spaces();
        let space = spaces.join(user);
        let mut binds = vec![Mount {
            source: user.into(),
            target: SPACE_INSIDE.into(),
            read_only: false,
            beneath: Some(spaces),
        }];
        // OpenPAI's codeDir: the copy taken at submission, read-only where
        // the folder is (the live folder should the copy be missing).
        if let Some(code) = &spec.code_dir {
            let copy = self.cfg.layout.code(key);
            let (source, beneath) = if copy.is_dir() {
                (copy, None)
            } else {
                (PathBuf::from(code), Some(space.clone()))
            };
            binds.push(Mount {
                source,
                target: PathBuf::from(SPACE_INSIDE).join(code),
                read_only: true,
                beneath,
            });
        }
        for m in &spec.mounts {
            let source = match &m.source {
                MountSource::Space(rel) => crate::spaces::SpacePath::parse(rel)
                    .ok()
                    .map(|p| (p.rel().to_owned(), space.clone())),
                MountSource::Dataset(name) => {
                    crate::spaces::Datasets::new(self.cfg.layout.datasets())
                        .path(name)
                        .map(|_| (PathBuf::from(name), self.cfg.layout.datasets()))
                }
            };
            if let Some((source, base)) = source {
                binds.push(Mount {
                    source,
                    target: m.target.clone().into(),
                    // Datasets are shared: never writable.
                    read_only: m.read_only || matches!(m.source, MountSource::Dataset(_)),
                    beneath: Some(base),
                });
            }
        }
        binds
    }

    /// The job's folder in the data folder is passable, not listable, by
    /// the tasks' uids; its codeDir copy (bound read-only into the tasks)
    /// is the owner's alone.
    fn close_job_folder(&self, key: i64, run_as: Option<RunAs>) -> Result<(), String> {
        let job = self.cfg.layout.job(key);
        std::fs::create_dir_all(&job)
            .map_err(|e| format!("cannot create {}: {e}", job.display()))?;
        set_mode(&job, 0o711);
        let code = self.cfg.layout.code(key);
        if let (Some(id), true) = (run_as, code.is_dir()) {
            chown_tree(&code, id)?;
            set_mode(&code, 0o700);
        }
        Ok(())
    }

    /// Makes the job's output folder (and its TensorBoard folder). In a
    /// space it is made beneath the space as the user, so a link a task
    /// left there never makes the server create anything elsewhere.
    fn make_output(
        &self,
        job: &JobRecord,
        output: &std::path::Path,
        in_space: bool,
        run_as: Option<RunAs>,
    ) -> Result<(), String> {
        let board = Layout::tensorboard(output);
        if !in_space {
            return std::fs::create_dir_all(&board)
                .map_err(|e| format!("cannot create {}: {e}", output.display()));
        }
        let space = self.cfg.layout.spaces().join(job.id.user());
        let rel = board.strip_prefix(&space).map_err(|_| {
            format!(
                "{} is not in the space of {}",
                output.display(),
                job.id.user()
            )
        })?;
        std::fs::create_dir_all(&space)
            .map_err(|e| format!("cannot create {}: {e}", space.display()))?;
        if let Some(id) = run_as {
            // The space is its user's alone.
            give(&space, id, 0o700)?;
        }
        let dir = cap_std::fs::Dir::open_ambient_dir(&space, cap_std::ambient_authority())
            .map_err(|e| format!("cannot open {}: {e}", space.display()))?;
        let _as = crate::identity::ActingAs::new(run_as);
        dir.create_dir_all(rel).map_err(|e| {
            format!(
                "cannot create {} in the space of {}: {e} (a link there that leads out of the space is not followed)",
                rel.display(),
                job.id.user()
            )
        })
    }

    /// Phase 2b: starts one prepared run. A failure to start it is the
    /// task's end, recorded in `change`; returns whether it started.
    fn launch(&mut self, key: i64, i: usize, change: &mut Change) -> bool {
        let Some(task) = self.active.get(&key).and_then(|a| a.task_ref(i)) else {
            return false;
        };
        match self.engine.launch(&task) {
            Ok(()) => true,
            Err(e) => {
                error!(job_key = key, error = %e, "cannot start a supervisor");
                self.record_end(
                    key,
                    i,
                    task_lost(&format!("cannot start its supervisor: {e}")),
                    change,
                );
                false
            }
        }
    }

    /// Starts a task again in a fresh run of the same attempt, with the
    /// same launch (an in-place restart, or a start kiln never made). The
    /// new run is recorded before it starts, together with whatever
    /// `change` held so far, so a crash in between is recovered like any
    /// recorded-but-unstarted task. `ev` says why, with the start.
    pub(super) fn relaunch(&mut self, key: i64, i: usize, change: &mut Change, ev: NewEvent) {
        // Who the task runs as now, not what an older launch record says
        // (one from before kiln gave uids has none).
        let run_as = match self.active.get(&key) {
            Some(a) => self.cfg.identities.run_as(a.job.id.user()),
            None => return,
        };
        let run_as = match run_as {
            Ok(r) => r,
            Err(e) => {
                let end = task_lost(&format!("cannot give the task its user's uid: {e}"));
                self.record_end(key, i, end, change);
                return;
            }
        };
        let Some(a) = self.active.get(&key) else {
            return;
        };
        let (Some(task), Some(dir)) = (a.task_ref(i), a.slots[i].rec.dir.clone()) else {
            let end = task_lost("its launch record is missing");
            self.record_end(key, i, end, change);
            return;
        };
        let from = KnownTask {
            task,
            dir,
            ports: Vec::new(),
            settled: true,
        };
        let prepared = match self.engine.prepare_again(&from, run_as) {
            Ok(p) => p,
            Err(e) => {
                let end = task_lost(&e.to_string());
                self.record_end(key, i, end, change);
                return;
            }
        };
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        let slot = &mut a.slots[i];
        slot.gen = prepared.task.gen;
        slot.rec.state = TaskState::Running;
        slot.rec.exit_code = None;
        slot.rec.signal = None;
        slot.rec.reason = None;
        slot.rec.started_at_ms = Some(now_ms());
        slot.rec.finished_at_ms = None;
        slot.rec.dir = Some(prepared.dir);
        let mut recorded = std::mem::take(change);
        recorded.tasks.push(slot.rec.clone());
        recorded.events.push(ev);
        self.apply(key, &recorded);
        self.launch(key, i, change);
    }

    fn finish_unstarted(&mut self, key: i64, state: JobState, reason: String) {
        self.apply(
            key,
            &Change {
                job: JobPatch {
                    state: Some(state),
                    reason: Some(Some(reason.clone())),
                    pending_reason: Some(None),
                    finished_at_ms: Some(Some(now_ms())),
                    ..Default::default()
                },
                events: vec![event("finished", format!("{}: {reason}", state.as_str()))],
                ..Default::default()
            },
        );
    }
}

/// What one task needs, from its role.
fn shape_of(spec: &JobSpec, id: &TaskId) -> TaskShape {
    let role = spec.role(id.role());
    TaskShape {
        task: id.clone(),
        cpus: role.map_or(0, |r| r.cpus),
        memory_mb: role.map_or(0, |r| r.memory_mb),
        shm_mb: role.map_or(0, |r| r.shm_mb),
        gpus: role.map_or(0, |r| r.gpus),
        pids: role.and_then(|r| r.pids),
        gpu_type: role
            .and_then(|r| r.gpu_type.clone())
            .or_else(|| spec.gpu_type.clone()),
        ports: role
            .map(|r| {
                r.ports
                    .iter()
                    .map(|p| PortWant {
                        label: p.label.clone(),
                        count: p.count,
                        begin_at: p.begin_at,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The job's change when its first tasks run: RUNNING, and the clock of
/// its max duration starts.
fn started_patch(now: u64, spec: &JobSpec) -> JobPatch {
    JobPatch {
        state: Some(JobState::Running),
        pending_reason: Some(None),
        started_at_ms: Some(Some(now)),
        deadline_at_ms: Some(spec.max_duration_secs.map(|s| now + s * 1000)),
        ..Default::default()
    }
}

fn started_event(tasks: usize) -> NewEvent {
    event(
        "started",
        format!("{} started", kiln_spec::words::count(tasks as u64, "task")),
    )
}
