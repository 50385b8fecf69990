//! The loop against a fake engine that places (as Slurm and Kubernetes do):
//! the hold → render → launch handshake driven by scripted events, with no
//! processes. What a real engine does is tested against real parts
//! (tests/local_engine.rs, tests/slurm_engine.rs); this pins down what the
//! loop does with each event, whichever engine sends it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_engine::engine::{
    Allocation, AttemptRef, AttemptSpec, Engine, EngineEvent, EngineInfo, EventSink, KnownTask,
    NodeState, Placement, Prepared, RunAs, Submission, TaskAllocation, TaskExit, TaskLaunch,
    TaskRef, WaitReason,
};
use kiln_engine::EngineError;
use kiln_sched::{Node, Placed};
use kiln_spec::completion::{JobState, TaskState};
use kiln_spec::{JobId, TaskId};
use kiln_store::{NewJob, SqliteStore, Store};

use super::{start, ControlConfig};
use crate::control::backoff::Backoff;
use crate::layout::Layout;

/// What the fake was asked, in order, and the launches it was given.
#[derive(Default)]
struct Seen {
    calls: Vec<String>,
    launches: Vec<TaskLaunch>,
}

struct Fake {
    seen: Arc<Mutex<Seen>>,
}

fn note(seen: &Arc<Mutex<Seen>>, call: String) {
    if let Ok(mut s) = seen.lock() {
        s.calls.push(call);
    }
}

impl Engine for Fake {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            name: "fake",
            placement: Placement::Engine,
            capacity_can_grow: false,
            started_on_launch: false,
            sandboxed: false,
            limits_summary: None,
        }
    }

    fn nodes(&self) -> Vec<NodeState> {
        ["n1", "n2"]
            .iter()
            .map(|n| NodeState {
                node: Node {
                    name: (*n).to_owned(),
                    cpus: 8,
                    memory_mb: 16384,
                    gpus: Vec::new(),
                },
                details: serde_json::Map::new(),
            })
            .collect()
    }

    fn submit(&mut self, a: &AttemptSpec) -> Result<Submission, EngineError> {
        note(
            &self.seen,
            format!(
                "submit {}.a{} placed={}",
                a.attempt.key,
                a.attempt.attempt,
                a.placed.is_some()
            ),
        );
        Ok(Submission::Queued)
    }

    fn prepare(&mut self, tasks: &[TaskLaunch]) -> Result<Vec<Prepared>, EngineError> {
        let mut out = Vec::new();
        for t in tasks {
            note(&self.seen, format!("prepare {}", t.task.task));
            if let Ok(mut s) = self.seen.lock() {
                s.launches.push(t.clone());
            }
            out.push(Prepared {
                task: t.task.clone(),
                dir: format!("/fake/{}", t.task.task),
            });
        }
        Ok(out)
    }

    fn prepare_again(
        &mut self,
        from: &KnownTask,
        _run_as: Option<RunAs>,
    ) -> Result<Prepared, EngineError> {
        let mut task = from.task.clone();
        task.gen += 1;
        note(
            &self.seen,
            format!("prepare_again {}.{}", task.task, task.gen),
        );
        Ok(Prepared {
            dir: format!("/fake/{}.{}", task.task, task.gen),
            task,
        })
    }

    fn launch(&mut self, task: &TaskRef) -> Result<(), EngineError> {
        note(&self.seen, format!("launch {}", task.task));
        Ok(())
    }

    fn stop(&mut self, tasks: &[TaskRef]) {
        for t in tasks {
            note(&self.seen, format!("stop {}", t.task));
        }
    }

    fn ended(&mut self, task: &TaskRef, keep: bool) {
        note(&self.seen, format!("ended {} keep={keep}", task.task));
    }

    fn release(&mut self, attempt: AttemptRef) {
        note(
            &self.seen,
            format!("release {}.a{}", attempt.key, attempt.attempt),
        );
    }

    fn reattach(&mut self, known: &[(AttemptRef, Vec<KnownTask>)]) {
        note(&self.seen, format!("reattach {}", known.len()));
    }
}

/// Polls `f` until it gives a value: the loop runs on its own thread.
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct World {
    _tmp: tempfile::TempDir,
    store: Arc<dyn Store>,
    control: super::super::Control,
    seen: Arc<Mutex<Seen>>,
    sink: EventSink,
}

fn world() -> World {
    let tmp = tempfile::tempdir().expect("tmp");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&tmp.path().join("kiln.db")).expect("store"));
    let layout = Layout::new(tmp.path().join("data"));
    std::fs::create_dir_all(layout.spaces()).expect("spaces");
    let identities = Arc::new(crate::identity::Identities::new(
        Arc::clone(&store),
        None,
        false,
        layout.spaces(),
    ));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink_slot: Arc<Mutex<Option<EventSink>>> = Arc::new(Mutex::new(None));
    let (fake_seen, slot) = (Arc::clone(&seen), Arc::clone(&sink_slot));
    let control = start(
        Arc::clone(&store),
        ControlConfig {
            layout,
            schedule_seconds: None,
            identities,
            restart_backoff: Backoff::default(),
            fair_share_half_life_secs: kiln_sched::fair::DEFAULT_HALF_LIFE_SECS,
            test_pass_delay: None,
        },
        move |sink| {
            if let Ok(mut s) = slot.lock() {
                *s = Some(sink);
            }
            Box::new(Fake { seen: fake_seen })
        },
    )
    .expect("loop");
    let sink = sink_slot
        .lock()
        .ok()
        .and_then(|s| s.clone())
        .expect("the engine was built with a sink");
    World {
        _tmp: tmp,
        store,
        control,
        seen,
        sink,
    }
}

impl World {
    fn submit(&self, yaml: &str) -> (i64, JobId) {
        let spec = kiln_spec::parse(yaml.as_bytes()).expect("spec").job;
        let id = JobId::new("alice", &spec.name).expect("id");
        let rec = self
            .store
            .submit(&NewJob {
                id: id.clone(),
                spec_json: kiln_spec::export::to_json(&spec).expect("json"),
                format: "kiln".into(),
                queue: "default".into(),
                priority: 0,
                pending_reason: "queued".into(),
                submitted_at_ms: crate::now_ms(),
            })
            .expect("stored");
        self.control.submitted(rec.key);
        (rec.key, id)
    }

    fn called(&self, call: &str) -> bool {
        self.seen
            .lock()
            .map(|s| s.calls.iter().any(|c| c == call))
            .unwrap_or(false)
    }

    fn wait_call(&self, call: &str) {
        until(call, || self.called(call).then_some(()));
    }

    fn state(&self, id: &JobId) -> JobState {
        self.store
            .job(id)
            .ok()
            .flatten()
            .map(|j| j.state)
            .expect("job")
    }

    fn wait_state(&self, id: &JobId, want: JobState) {
        until(&format!("{id} to be {want:?}"), || {
            (self.state(id) == want).then_some(())
        });
    }
}

fn task_ref(key: i64, task: &str) -> TaskRef {
    TaskRef {
        attempt: AttemptRef { key, attempt: 0 },
        task: task.parse::<TaskId>().expect("task id"),
        gen: 0,
    }
}

fn on(task: &str, host: &str, address: &str) -> TaskAllocation {
    TaskAllocation {
        task: task.parse().expect("task id"),
        host: host.into(),
        address: address.into(),
        gpus: Vec::new(),
        ports: Vec::new(),
        placed: Placed {
            node: 0,
            cpus: 1,
            memory_mb: 512,
            gpus: Vec::new(),
        },
    }
}

fn exited(key: i64, task: &str, code: i32) -> EngineEvent {
    EngineEvent::Exited {
        task: task_ref(key, task),
        exit: TaskExit {
            exit_code: Some(code),
            signal: None,
            stop_requested: false,
            cause: None,
            finished_at_ms: crate::now_ms(),
        },
        notes: Vec::new(),
    }
}

const GANG: &str = "name: gang\nroles:\n  - name: master\n    command: 'true'\n  - name: worker\n    command: 'true'\n";

#[test]
fn an_engine_that_places_gets_the_job_then_its_reason_allocation_and_exits() {
    let w = world();
    let (key, id) = w.submit(GANG);
    // Submitted to the engine, not placed by kiln.
    w.wait_call(&format!("submit {key}.a0 placed=false"));
    assert_eq!(w.state(&id), JobState::Waiting);

    // The engine's reason is the job's.
    (w.sink)(EngineEvent::Pending {
        attempt: AttemptRef { key, attempt: 0 },
        reason: WaitReason {
            message: "waiting for 2 CPUs on one node in partition debug".into(),
        },
    });
    until("the engine's reason", || {
        w.control
            .pending_reason(key)
            .filter(|p| p.text().contains("2 CPUs on one node"))
    });

    // Its allocation: the environment is rendered from it, then launched.
    (w.sink)(EngineEvent::Allocated(Allocation {
        attempt: AttemptRef { key, attempt: 0 },
        master_port: 29555,
        tasks: vec![
            on("master-0", "n1", "10.0.0.1"),
            on("worker-0", "n2", "10.0.0.2"),
        ],
    }));
    w.wait_call("launch master-0");
    w.wait_call("launch worker-0");
    let launches = w.seen.lock().map(|s| s.launches.clone()).expect("seen");
    let env = |task: &str, name: &str| -> Option<String> {
        let l = launches.iter().find(|l| l.task.task.to_string() == task)?;
        l.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(env("worker-0", "MASTER_ADDR").as_deref(), Some("10.0.0.1"));
    assert_eq!(env("worker-0", "MASTER_PORT").as_deref(), Some("29555"));
    assert_eq!(env("worker-0", "RANK").as_deref(), Some("1"));
    assert_eq!(env("master-0", "WORLD_SIZE").as_deref(), Some("2"));
    // Launched is not running: that is the engine's word.
    assert_eq!(w.state(&id), JobState::Waiting);
    let hosts: Vec<String> = w
        .store
        .tasks(key, 0)
        .expect("tasks")
        .iter()
        .map(|t| t.host.clone())
        .collect();
    assert_eq!(hosts, ["n1", "n2"]);

    for t in ["master-0", "worker-0"] {
        (w.sink)(EngineEvent::Started {
            task: task_ref(key, t),
            at_ms: crate::now_ms(),
        });
    }
    w.wait_state(&id, JobState::Running);
    let tasks = w.store.tasks(key, 0).expect("tasks");
    assert!(
        tasks.iter().all(|t| t.state == TaskState::Running),
        "{tasks:?}"
    );

    // A repeated or stale event changes nothing.
    (w.sink)(exited(key, "master-0", 0));
    (w.sink)(exited(key, "master-0", 1));
    (w.sink)(exited(key, "worker-0", 0));
    w.wait_state(&id, JobState::Succeeded);
    w.wait_call(&format!("release {key}.a0"));
    let tasks = w.store.tasks(key, 0).expect("tasks");
    assert!(
        tasks.iter().all(|t| t.state == TaskState::Succeeded),
        "{tasks:?}"
    );
}

#[test]
fn a_lost_task_stops_the_others_and_the_attempt_is_submitted_again() {
    let w = world();
    let (key, id) = w.submit(GANG);
    w.wait_call(&format!("submit {key}.a0 placed=false"));
    (w.sink)(EngineEvent::Allocated(Allocation {
        attempt: AttemptRef { key, attempt: 0 },
        master_port: 29556,
        tasks: vec![
            on("master-0", "n1", "10.0.0.1"),
            on("worker-0", "n1", "10.0.0.1"),
        ],
    }));
    w.wait_call("launch worker-0");
    for t in ["master-0", "worker-0"] {
        (w.sink)(EngineEvent::Started {
            task: task_ref(key, t),
            at_ms: crate::now_ms(),
        });
    }
    w.wait_state(&id, JobState::Running);
    // A task the engine lost is a platform failure; the other is stopped.
    (w.sink)(EngineEvent::Lost {
        task: task_ref(key, "worker-0"),
        why: "its Slurm job ended (NODE_FAIL) without recording how the task ended".into(),
        notes: Vec::new(),
    });
    w.wait_call("stop master-0");
    (w.sink)(EngineEvent::Exited {
        task: task_ref(key, "master-0"),
        exit: TaskExit {
            exit_code: None,
            signal: Some(15),
            stop_requested: true,
            cause: None,
            finished_at_ms: crate::now_ms(),
        },
        notes: Vec::new(),
    });
    // A platform failure is retried as a new attempt, submitted again.
    w.wait_call(&format!("submit {key}.a1 placed=false"));
    assert_eq!(w.state(&id), JobState::Waiting);
}
