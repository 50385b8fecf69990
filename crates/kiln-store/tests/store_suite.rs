//! One suite for every backend of the `Store` trait (today SQLite, in memory
//! and on disk), plus what only a file can show: migrations and surviving a
//! kill -9 of the process that wrote.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use kiln_spec::completion::{JobState, TaskState};
use kiln_spec::{JobId, TaskId};
use kiln_store::{
    Change, Identity, JobFilter, JobPatch, NewEvent, NewJob, Revoke, SqliteStore, Store,
    StoreError, TaskRecord, TokenLife, Usage, User,
};

fn new_job(user: &str, name: &str, at: u64) -> NewJob {
    NewJob {
        id: JobId::new(user, name).expect("id"),
        spec_json: format!("{{\"name\":\"{name}\",\"roles\":[]}}"),
        format: "kiln".into(),
        queue: "default".into(),
        priority: 0,
        pending_reason: "queued".into(),
        submitted_at_ms: at,
    }
}

fn task(attempt: u32, id: &str, state: TaskState) -> TaskRecord {
    TaskRecord {
        attempt,
        task: id.parse::<TaskId>().expect("task id"),
        state,
        exit_code: None,
        signal: None,
        reason: None,
        host: "127.0.0.1".into(),
        gpus: vec![0, 1],
        ports: [("http".to_string(), vec![20000, 20001])]
            .into_iter()
            .collect(),
        restarts: 0,
        started_at_ms: Some(5),
        finished_at_ms: None,
        dir: Some("/data/x".into()),
        restart_at_ms: None,
        restart_streak: 0,
    }
}

fn event(kind: &str, message: &str) -> NewEvent {
    NewEvent {
        at_ms: 10,
        kind: kind.into(),
        message: message.into(),
        line: None,
    }
}

/// Every behaviour of the trait.
fn suite(store: &dyn Store) {
    // Submit: WAITING with its reason and a `submitted` event.
    let a = store
        .submit(&new_job("alice", "train", 1))
        .expect("submitted");
    assert_eq!(a.state, JobState::Waiting);
    assert_eq!(a.pending_reason.as_deref(), Some("queued"));
    assert_eq!(a.id.to_string(), "alice~train");
    let ev = store.events(a.key).expect("events");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, "submitted");

    // Names are unique per user, not globally.
    assert!(matches!(
        store.submit(&new_job("alice", "train", 2)),
        Err(StoreError::Conflict(_))
    ));
    let b = store
        .submit(&new_job("bob", "train", 3))
        .expect("another user's job");
    assert!(b.key > a.key);

    // A change lands whole: job fields, tasks and events together.
    let change = Change {
        job: JobPatch {
            state: Some(JobState::Running),
            pending_reason: Some(None),
            started_at_ms: Some(Some(5)),
            deadline_at_ms: Some(Some(3_600_005)),
            ..Default::default()
        },
        tasks: vec![
            task(0, "master-0", TaskState::Running),
            task(0, "worker-0", TaskState::Running),
        ],
        events: vec![
            event("placed", "on 127.0.0.1 GPUs 0,1"),
            event("started", "2 tasks"),
        ],
        usage: None,
    };
    let running = store.apply(a.key, &change).expect("applied");
    assert_eq!(running.state, JobState::Running);
    assert_eq!(running.pending_reason, None);
    assert_eq!(running.deadline_at_ms, Some(3_600_005));
    let tasks = store.tasks(a.key, 0).expect("tasks");
    assert_eq!(tasks, change.tasks);
    let kinds: Vec<String> = store
        .events(a.key)
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["submitted", "placed", "started"]);

    // Replacing a task by (attempt, id) keeps its place in the list; tasks
    // of other attempts stay apart.
    let mut first = task(0, "master-0", TaskState::Running);
    first.restarts = 1;
    // A task waiting out its back-off: when it starts again, and how far
    // its back-off has doubled, survive a restart of kiln.
    first.restart_at_ms = Some(12_345);
    first.restart_streak = 4;
    store
        .apply(
            a.key,
            &Change {
                tasks: vec![first.clone()],
                ..Default::default()
            },
        )
        .expect("applied");
    let tasks = store.tasks(a.key, 0).expect("tasks");
    assert_eq!(tasks[0], first, "an updated task keeps its position");
    let mut done = task(0, "worker-0", TaskState::Failed);
    done.exit_code = Some(1);
    done.finished_at_ms = Some(9);
    store
        .apply(
            a.key,
            &Change {
                tasks: vec![done.clone(), task(1, "master-0", TaskState::Waiting)],
                ..Default::default()
            },
        )
        .expect("applied");
    let tasks = store.tasks(a.key, 0).expect("tasks");
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[1], done);
    assert_eq!(store.tasks(a.key, 1).expect("tasks").len(), 1);

    // Preemption marks and a user's usage land with the change.
    let preempted = store
        .apply(
            a.key,
            &Change {
                job: JobPatch {
                    opportunistic: Some(true),
                    preempted_by: Some(Some("bob~big".into())),
                    preemptions: Some(2),
                    ..Default::default()
                },
                usage: Some(Usage {
                    user: "alice".into(),
                    value: 7200.5,
                    at_ms: 42,
                }),
                ..Default::default()
            },
        )
        .expect("applied");
    assert!(preempted.opportunistic);
    assert_eq!(preempted.preempted_by.as_deref(), Some("bob~big"));
    assert_eq!(preempted.preemptions, 2);
    assert_eq!(store.job_by_key(a.key).expect("read"), Some(preempted));
    let usage = Usage {
        user: "alice".into(),
        value: 10.0,
        at_ms: 43,
    };
    store
        .apply(
            a.key,
            &Change {
                usage: Some(usage.clone()),
                ..Default::default()
            },
        )
        .expect("applied");
    assert_eq!(store.usage().expect("usage"), vec![usage]);

    // Reads by id and by key agree; unknown jobs are None.
    assert_eq!(
        store.job(&a.id).expect("read"),
        store.job_by_key(a.key).expect("read")
    );
    assert_eq!(
        store
            .job(&JobId::new("alice", "nope").expect("id"))
            .expect("read"),
        None
    );
    assert!(matches!(
        store.apply(99_999, &Change::default()),
        Err(StoreError::NotFound(_))
    ));

    // Unfinished jobs in submission order.
    let unfinished: Vec<i64> = store
        .unfinished_jobs()
        .expect("list")
        .iter()
        .map(|j| j.key)
        .collect();
    assert_eq!(unfinished, [a.key, b.key]);

    // Listing: newest first, filters, pages.
    for i in 0..5 {
        store
            .submit(&new_job("carol", &format!("sweep-{i}"), 10 + i))
            .expect("submitted");
    }
    let all = store.jobs(&JobFilter::default()).expect("list");
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0].key > w[1].key));
    let carol = store
        .jobs(&JobFilter {
            user: Some("carol".into()),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(carol.len(), 5);
    let page1 = store
        .jobs(&JobFilter {
            user: Some("carol".into()),
            limit: 2,
            ..Default::default()
        })
        .expect("list");
    let page2 = store
        .jobs(&JobFilter {
            user: Some("carol".into()),
            limit: 2,
            before_key: page1.last().map(|j| j.key),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(page1.len() + page2.len(), 4);
    assert!(page2.iter().all(|j| j.key < page1[1].key));
    let running = store
        .jobs(&JobFilter {
            state: Some(JobState::Running),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(running.len(), 1);
    let named = store
        .jobs(&JobFilter {
            name: Some("sweep-3".into()),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(named.len(), 1);
    // A part of the name, in any case, finds it too.
    let part = store
        .jobs(&JobFilter {
            name: Some("WEEP-3".into()),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(part.len(), 1);
    // Every combination of filters gives what filtering the whole list
    // gives (each combination is its own statement). carol also gets a job
    // of another name and another state, so no filter is implied by another.
    let other = store
        .submit(&new_job("carol", "other", 20))
        .expect("submitted");
    let running_now = Change {
        job: JobPatch {
            state: Some(JobState::Running),
            ..Default::default()
        },
        ..Default::default()
    };
    store.apply(other.key, &running_now).expect("running");
    let all = store.jobs(&JobFilter::default()).expect("list");
    for bits in 0..16u8 {
        for limit in [1, 3, 100] {
            let f = JobFilter {
                user: (bits & 1 != 0).then(|| "carol".to_owned()),
                state: (bits & 2 != 0).then_some(JobState::Waiting),
                name: (bits & 4 != 0).then(|| "SWEEP".to_owned()),
                before_key: (bits & 8 != 0).then_some(all[2].key),
                limit,
            };
            let want: Vec<i64> = all
                .iter()
                .filter(|j| f.user.as_ref().is_none_or(|u| j.id.user() == u))
                .filter(|j| f.state.is_none_or(|s| j.state == s))
                .filter(|j| f.name.is_none() || j.id.name().to_lowercase().contains("sweep"))
                .filter(|j| f.before_key.is_none_or(|k| j.key < k))
                .take(limit as usize)
                .map(|j| j.key)
                .collect();
            let got: Vec<i64> = store
                .jobs(&f)
                .expect("list")
                .iter()
                .map(|j| j.key)
                .collect();
            assert_eq!(got, want, "{f:?}");
        }
    }

    // Events of one line: each replaces the last and goes to the end;
    // other lines and other jobs' lines are left alone.
    let lined = |msg: &str, line: &str| NewEvent {
        line: Some(line.into()),
        ..event("restarted", msg)
    };
    let before = store.events(a.key).expect("events").len();
    for (n, line) in [(1, "a0/w-0"), (2, "a0/w-0"), (1, "a0/w-1"), (3, "a0/w-0")] {
        let change = Change {
            events: vec![lined(&format!("{line} restarted {n} times"), line)],
            ..Default::default()
        };
        store.apply(a.key, &change).expect("applied");
    }
    store
        .apply(
            b.key,
            &Change {
                events: vec![lined("b's own", "a0/w-0")],
                ..Default::default()
            },
        )
        .expect("applied");
    let ev = store.events(a.key).expect("events");
    let tail: Vec<&str> = ev[before..].iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        tail,
        ["a0/w-1 restarted 1 times", "a0/w-0 restarted 3 times"],
        "{ev:?}"
    );
    assert!(ev.windows(2).all(|w| w[0].seq < w[1].seq));

    // Delete: only finished jobs; tasks and events go with them.
    assert!(matches!(
        store.delete_job(a.key),
        Err(StoreError::NotFinished { .. })
    ));
    let finish = Change {
        job: JobPatch {
            state: Some(JobState::Failed),
            reason: Some(Some("worker-0 exited with 1".into())),
            finished_at_ms: Some(Some(20)),
            ..Default::default()
        },
        ..Default::default()
    };
    store.apply(a.key, &finish).expect("finished");
    store.delete_job(a.key).expect("deleted");
    assert_eq!(store.job_by_key(a.key).expect("read"), None);
    assert!(store.tasks(a.key, 0).expect("tasks").is_empty());
    assert!(store.events(a.key).expect("events").is_empty());
    // The name is free again.
    store
        .submit(&new_job("alice", "train", 30))
        .expect("resubmitted");

    // Users and tokens.
    let admin = User {
        name: "admin".into(),
        is_admin: true,
        password_hash: None,
        created_at_ms: 1,
        identity: None,
    };
    store.add_user(&admin).expect("user");
    assert!(matches!(
        store.add_user(&admin),
        Err(StoreError::Conflict(_))
    ));
    // Each user's tasks run as a uid of their own: recorded, and never
    // shared with another user.
    let id = Identity {
        uid: 1_500_000_000,
        gid: 1_500_000_000,
        unix_user: None,
    };
    store.set_identity("admin", &id).expect("identity");
    assert_eq!(
        store.user("admin").expect("read").and_then(|u| u.identity),
        Some(id.clone())
    );
    store
        .add_user(&User {
            name: "eve".into(),
            identity: None,
            ..admin.clone()
        })
        .expect("user");
    assert!(matches!(
        store.set_identity("eve", &id),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.set_identity("ghost", &id),
        Err(StoreError::NotFound(_))
    ));
    let admin = store.user("admin").expect("read").expect("admin");
    let forever = TokenLife::default();
    store.add_token("admin", "hash-1", forever).expect("token");
    assert!(matches!(
        store.add_token("ghost", "hash-2", forever),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.add_token("admin", "hash-1", forever),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.user_by_token("hash-1", 5).expect("lookup"),
        Some(admin.clone())
    );
    assert_eq!(store.user_by_token("hash-x", 5).expect("lookup"), None);
    // A sign-in works until it expires, and is then gone for good.
    let session = TokenLife {
        created_at_ms: 10,
        expires_at_ms: Some(100),
    };
    store
        .add_token("admin", "sess-1", session)
        .expect("session");
    store
        .add_token("admin", "sess-2", session)
        .expect("session");
    assert!(store.user_by_token("sess-1", 99).expect("lookup").is_some());
    assert_eq!(store.user_by_token("sess-1", 100).expect("lookup"), None);
    assert_eq!(store.purge_expired_tokens(99).expect("purge"), 0);
    // Revoked: one, then the user's sign-ins only, then everything.
    assert!(store.revoke_token("sess-1").expect("revoke"));
    assert!(!store.revoke_token("sess-1").expect("revoke again"));
    assert_eq!(store.user_by_token("sess-1", 50).expect("lookup"), None);
    assert_eq!(
        store
            .revoke_tokens("admin", Revoke::Expiring)
            .expect("revoke"),
        1
    );
    assert!(store.user_by_token("hash-1", 50).expect("lookup").is_some());
    store
        .add_token("admin", "sess-3", session)
        .expect("session");
    assert_eq!(store.purge_expired_tokens(100).expect("purge"), 1);
    assert_eq!(
        store.revoke_tokens("admin", Revoke::All).expect("revoke"),
        1
    );
    assert_eq!(store.user_by_token("hash-1", 50).expect("lookup"), None);
    store
        .add_token("admin", "hash-1", forever)
        .expect("token again");
    assert_eq!(store.user("admin").expect("read"), Some(admin));
    assert_eq!(store.users().expect("list").len(), 2);
}

#[test]
fn sqlite_in_memory_passes_the_suite() {
    suite(&SqliteStore::in_memory().expect("opened"));
}

#[test]
fn sqlite_on_disk_passes_the_suite_and_keeps_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("kiln.db");
    suite(&SqliteStore::open(&path).expect("opened"));
    // Reopening migrates nothing and sees everything.
    let again = SqliteStore::open(&path).expect("reopened");
    assert_eq!(again.jobs(&JobFilter::default()).expect("list").len(), 8);
}

#[test]
fn a_newer_database_is_refused_not_damaged() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("kiln.db");
    drop(SqliteStore::open(&path).expect("opened"));
    assert!(set_user_version(&path, 99));
    match SqliteStore::open(&path) {
        Err(StoreError::TooNew { found: 99, .. }) => {}
        other => panic!("{:?}", other.err()),
    }
}

/// Sets `PRAGMA user_version` by hand: it is the big-endian u32 at byte 60
/// of the database header (the store keeps its connection private).
fn set_user_version(path: &std::path::Path, v: i64) -> bool {
    let mut bytes = std::fs::read(path).expect("db file");
    bytes[60..64].copy_from_slice(&(v as u32).to_be_bytes());
    std::fs::write(path, bytes).is_ok()
}

/// The child half of the kill -9 test: submits, says so, and waits to die.
#[test]
fn durability_child() {
    let Ok(path) = std::env::var("KILN_STORE_CHILD_DB") else {
        return;
    };
    let store = SqliteStore::open(std::path::Path::new(&path)).expect("opened");
    for i in 0..50 {
        store
            .submit(&new_job("alice", &format!("j{i}"), i))
            .expect("submitted");
        println!("acked j{i}");
    }
    loop {
        std::thread::park();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("kiln.db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "durability_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("KILN_STORE_CHILD_DB", &path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    // Deadline: a child that stops talking is killed, which ends the read.
    let pid = child.id().to_string();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watched = std::sync::Arc::clone(&done);
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        if !watched.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    });
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut acked = Vec::new();
    for line in out.lines() {
        let line = line.expect("line");
        // libtest's own "test durability_child ... " may share the line.
        if let Some(at) = line.find("acked ") {
            acked.push(line[at + "acked ".len()..].to_string());
            if acked.len() == 50 {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let store = SqliteStore::open(&path).expect("reopened");
    for name in &acked {
        let id = JobId::new("alice", name).expect("id");
        assert!(
            store.job(&id).expect("read").is_some(),
            "{name} was acknowledged but lost"
        );
    }
    assert_eq!(acked.len(), 50);
}
