//! Queues and their users through the `Store` trait, against every backend
//! (as `store_suite.rs` does for jobs and users).

use kiln_sched::{GpuQuota, Quota};
use kiln_store::{QueueRecord, SqliteStore, Store, StoreError};

fn vision(users: &[&str]) -> QueueRecord {
    QueueRecord {
        name: "vision".into(),
        quota: Quota {
            cpus: 32,
            memory_mb: 65536,
            gpus: vec![
                GpuQuota {
                    model: Some("A100".into()),
                    count: 4,
                },
                GpuQuota {
                    model: None,
                    count: 2,
                },
            ],
        },
        user_max_gpus: Some(2),
        users: users.iter().map(|u| u.to_string()).collect(),
        created_at_ms: 100,
    }
}

fn suite(store: &dyn Store) {
    assert_eq!(store.queues().expect("list"), vec![]);

    // Created with its first users, who come back sorted.
    store.put_queue(&vision(&["carol", "bob"])).expect("put");
    let got = store.queues().expect("list");
    assert_eq!(got, vec![vision(&["bob", "carol"])]);
    assert_eq!(got[0].to_queue().user_max_gpus, Some(2));

    // Replacing keeps users and the creation time, changes the quota.
    let mut changed = vision(&[]);
    changed.quota.cpus = 8;
    changed.user_max_gpus = None;
    changed.created_at_ms = 999;
    store.put_queue(&changed).expect("replace");
    let got = store.queues().expect("list");
    assert_eq!(got[0].quota.cpus, 8);
    assert_eq!(got[0].user_max_gpus, None);
    assert_eq!(got[0].created_at_ms, 100);
    assert_eq!(got[0].users, vec!["bob", "carol"]);

    // Grants are idempotent; revokes say whether there was one.
    store.grant_queue("vision", "alice").expect("grant");
    store.grant_queue("vision", "alice").expect("grant twice");
    assert_eq!(
        store.queues().expect("list")[0].users,
        vec!["alice", "bob", "carol"]
    );
    assert!(store.revoke_queue("vision", "carol").expect("revoke"));
    assert!(!store.revoke_queue("vision", "carol").expect("revoke twice"));
    assert!(matches!(
        store.grant_queue("nlp", "alice"),
        Err(StoreError::NotFound(_))
    ));

    // Sorted by name; `default` may carry an explicit quota too.
    let mut default = vision(&[]);
    default.name = "default".into();
    store.put_queue(&default).expect("default");
    let names: Vec<String> = store
        .queues()
        .expect("list")
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, vec!["default", "vision"]);

    // Removing takes its grants along: a new queue of the same name starts
    // with nobody.
    assert!(store.remove_queue("vision").expect("remove"));
    assert!(!store.remove_queue("vision").expect("remove twice"));
    store.put_queue(&vision(&[])).expect("again");
    let again = store.queues().expect("list");
    assert_eq!(again[1].users, Vec::<String>::new());
}

#[test]
fn sqlite_in_memory_keeps_queues() {
    suite(&SqliteStore::in_memory().expect("opened"));
}

#[test]
fn sqlite_on_disk_keeps_queues_across_reopening() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("kiln.db");
    suite(&SqliteStore::open(&path).expect("opened"));
    let again = SqliteStore::open(&path).expect("reopened");
    assert_eq!(again.queues().expect("list").len(), 2);
}
