//! Registry credentials against every store backend: each user's own,
//! replaced not duplicated, removable, and the registries any user has one
//! for, and the image repositories pulled with credentials (pulled afresh
//! for each user from then on).

use kiln_store::{RegistryCredential, SqliteStore, Store};

fn cred(user: &str, registry: &str, username: &str, secret: &str) -> RegistryCredential {
    RegistryCredential {
        user: user.into(),
        registry: registry.into(),
        username: username.into(),
        secret: secret.into(),
        updated_at_ms: 1_700_000_000_000,
    }
}

fn suite(store: &dyn Store) {
    store
        .put_credential(&cred("alice", "ghcr.io", "alice-gh", "t1"))
        .expect("put");
    store
        .put_credential(&cred("alice", "registry.lab:5000", "alice", "pw"))
        .expect("put");
    store
        .put_credential(&cred("bob", "ghcr.io", "bob-gh", "t2"))
        .expect("put");
    // A second login replaces the first.
    store
        .put_credential(&cred("alice", "ghcr.io", "alice-gh2", "t3"))
        .expect("put again");
    let alice = store.credentials("alice").expect("alice's");
    assert_eq!(alice.len(), 2);
    assert_eq!(
        (
            alice[0].registry.as_str(),
            alice[0].username.as_str(),
            alice[0].secret.as_str()
        ),
        ("ghcr.io", "alice-gh2", "t3")
    );
    assert_eq!(store.credentials("bob").expect("bob's").len(), 1);
    assert!(store.credentials("carol").expect("none").is_empty());
    assert!(store
        .remove_credential("alice", "registry.lab:5000")
        .expect("rm"));
    assert!(!store
        .remove_credential("alice", "registry.lab:5000")
        .expect("rm twice"));
    assert_eq!(store.credentials("alice").expect("alice's").len(), 1);
    // Private repositories: marked once, never forgotten.
    assert!(!store.is_private_image("ghcr.io/alice/train").expect("read"));
    store
        .mark_private_image("ghcr.io/alice/train", 1)
        .expect("mark");
    store
        .mark_private_image("ghcr.io/alice/train", 2)
        .expect("mark again");
    assert!(store.is_private_image("ghcr.io/alice/train").expect("read"));
    assert!(!store.is_private_image("ghcr.io/alice").expect("read"));
}

#[test]
fn sqlite_in_memory_keeps_credentials() {
    suite(&SqliteStore::in_memory().expect("opened"));
}

#[test]
fn sqlite_on_disk_keeps_credentials_across_reopening() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("kiln.db");
    suite(&SqliteStore::open(&path).expect("opened"));
    let again = SqliteStore::open(&path).expect("reopened");
    assert_eq!(again.credentials("bob").expect("bob's")[0].secret, "t2");
}
