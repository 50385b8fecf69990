//! Fills a kiln data folder's store with N finished jobs, for the server
//! footprint benchmark (`bench/footprint.py`): an idle server holding a long
//! history, and `GET /api/v1/jobs` over it.
//!
//! Each job goes through the same store calls the server makes for a
//! trivial job (`kiln run -- true`): `submit` (WAITING, a `submitted`
//! event), one `apply` for the start (RUNNING, its task, `placed` and
//! `started`) and one for the end (SUCCEEDED, the task's exit code,
//! `exited` and `finished`). The spec is parsed and exported by kiln-spec,
//! as the API does. Only the rows are made: the task folders under
//! `<data>/jobs/` (logs, launch files) are not written, so the jobs' logs
//! read as missing.
//!
//! Run it on a data folder the server has initialised (admin user, token)
//! while the server is stopped:
//!
//! ```sh
//! cargo run --release -p kiln-store --example fill_history -- DATA_DIR 100000 [USER]
//! ```

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kiln_spec::completion::{JobState, TaskState};
use kiln_spec::{JobId, TaskId};
use kiln_store::{Change, JobPatch, NewEvent, NewJob, SqliteStore, Store, TaskRecord};

fn event(at_ms: u64, kind: &str, message: String) -> NewEvent {
    NewEvent {
        at_ms,
        kind: kind.into(),
        message,
        line: None,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fill_history DATA_DIR N [USER]";
    let data = PathBuf::from(args.next().ok_or(usage)?);
    let n: u64 = args.next().ok_or(usage)?.parse()?;
    let user = args.next().unwrap_or_else(|| "admin".into());
    let store = SqliteStore::open(&data.join("kiln.db"))?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let task = TaskId::new("main", 0)?;
    let t0 = Instant::now();
    for i in 0..n {
        let name = format!("hist-{i}");
        // One job a second, the newest just before now.
        let submitted = now - (n - i) * 1000;
        let started = submitted + 6;
        let finished = started + 35;
        let parsed = kiln_spec::parse(format!("name: {name}\ncommand: 'true'\n").as_bytes())?;
        let mut spec = parsed.job;
        spec.user = Some(user.clone());
        let job = store.submit(&NewJob {
            id: JobId::new(&user, &name)?,
            spec_json: kiln_spec::export::to_json(&spec)?,
            format: parsed.format.as_str().to_owned(),
            queue: "default".into(),
            priority: 0,
            pending_reason: "queued".into(),
            submitted_at_ms: submitted,
        })?;
        let key = job.key;
        let mut rec = TaskRecord {
            attempt: 0,
            task: task.clone(),
            state: TaskState::Running,
            exit_code: None,
            signal: None,
            reason: None,
            host: host.clone(),
            gpus: vec![],
            ports: Default::default(),
            restarts: 0,
            started_at_ms: Some(started),
            finished_at_ms: None,
            dir: Some(
                data.join(format!("jobs/{key}/attempt-0/main-0"))
                    .display()
                    .to_string(),
            ),
            restart_at_ms: None,
            restart_streak: 0,
        };
        store.apply(
            key,
            &Change {
                job: JobPatch {
                    state: Some(JobState::Running),
                    pending_reason: Some(None),
                    started_at_ms: Some(Some(started)),
                    deadline_at_ms: Some(None),
                    ..Default::default()
                },
                tasks: vec![rec.clone()],
                events: vec![
                    event(
                        started,
                        "placed",
                        format!("attempt 0 placed on {host}: main-0"),
                    ),
                    event(started, "started", "1 task started".into()),
                ],
                usage: None,
            },
        )?;
        rec.state = TaskState::Succeeded;
        rec.exit_code = Some(0);
        rec.finished_at_ms = Some(finished);
        store.apply(
            key,
            &Change {
                job: JobPatch {
                    state: Some(JobState::Succeeded),
                    reason: Some(Some("all tasks finished".into())),
                    finished_at_ms: Some(Some(finished)),
                    ..Default::default()
                },
                tasks: vec![rec],
                events: vec![
                    event(finished, "exited", "main-0 exited with code 0".into()),
                    event(finished, "finished", "SUCCEEDED: all tasks finished".into()),
                ],
                usage: None,
            },
        )?;
    }
    println!(
        "{n} finished jobs of {user} written to {} in {:.1} s",
        data.join("kiln.db").display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
