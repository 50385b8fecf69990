//! The security and files side of `kiln server --engine slurm` on a real Slurm
//! cluster (`scripts/slurm-cluster up DIR`, `SLURM_CONF` pointing at it): spaces,
//! datasets and jobs on the shared path, tasks sandboxed as on one machine and
//! run as their user's own Unix account, jobs in Slurm as that account, and the
//! server's binary copied to the shared path for the nodes. Without
//! `SLURM_CONF` these are skipped, unless `KILN_REQUIRE_SLURM=1`.
//!
//! One cluster for the whole binary; one server per test, with its own data
//! folder and shared folder (inside the data folder, so a dropped server's
//! launchers and steps are killed with it). Needs root (the server gives uids).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{task, Server};
use serde_json::Value;

fn have_cluster() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if std::env::var_os("SLURM_CONF").is_some() && root {
        return true;
    }
    assert!(
        std::env::var_os("KILN_REQUIRE_SLURM").is_none(),
        "KILN_REQUIRE_SLURM is set but SLURM_CONF is not, or this is not root"
    );
    eprintln!(
        "SKIPPED: no Slurm cluster (scripts/slurm-cluster up DIR sets SLURM_CONF), or not root"
    );
    false
}

/// A Unix account for tests (made when missing), as slurmctld and every node
/// know it: the nodes of the test cluster are this machine. Returns its uid.
fn account(name: &str) -> u32 {
    if let Ok(Some(u)) = nix::unistd::User::from_name(name) {
        return u.uid.as_raw();
    }
    let out = std::process::Command::new("useradd")
        .args(["--create-home", "--shell", "/bin/bash", name])
        .output()
        .expect("useradd runs");
    // Another test binary may have made it meanwhile.
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => u.uid.as_raw(),
        _ => panic!("useradd {name}: {out:?}"),
    }
}

/// A server on the Slurm engine with the sandbox on; its shared folder
/// inside its data folder.
fn slurm_server() -> (Server, PathBuf) {
    slurm_server_with(&[])
}

fn slurm_server_with(extra: &[&str]) -> (Server, PathBuf) {
    let data = tempfile::tempdir().expect("tmp");
    common::open_tree(data.path());
    let shared = data.path().join("shared");
    std::fs::create_dir_all(&shared).expect("shared");
    common::open_tree(&shared);
    let shared = std::fs::canonicalize(&shared).expect("resolve");
    let s = Server::start_in(
        data,
        &[
            "--engine",
            "slurm",
            "--shared",
            shared.to_str().expect("utf8"),
            "--stop-grace",
            "1",
            "--restart-backoff",
            "100ms",
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect::<Vec<_>>(),
    );
    (s, shared)
}

/// A kiln user mapped to the Unix account `unix`; their token.
fn user(s: &Server, name: &str, unix: Option<&str>) -> String {
    let mut args = vec!["user", "add", name, "-o", "json"];
    if let Some(u) = unix {
        args.extend(["--unix-user", u]);
    }
    let v: Value = serde_json::from_str(&s.ok(&args)).expect("token json");
    v["token"].as_str().expect("token").to_owned()
}

/// `scontrol show job -o` for the Slurm jobs of the attempts under `shared`
/// (their output is in there), one line each.
fn slurm_jobs_under(shared: &Path) -> Vec<String> {
    let out = std::process::Command::new("scontrol")
        .args(["show", "job", "-o"])
        .output()
        .expect("scontrol");
    let want = format!("StdOut={}/", shared.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&want))
        .map(str::to_owned)
        .collect()
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name).and_then(|w| w.strip_prefix('=')))
        .unwrap_or_default()
}

#[test]
fn a_space_on_the_shared_path_is_its_users_at_mnt_and_no_one_elses() {
    if !have_cluster() {
        return;
    }
    let (a_uid, b_uid) = (account("kiln-sa"), account("kiln-sb"));
    let (s, shared) = slurm_server();
    let alice = user(&s, "alice", Some("kiln-sa"));
    let bob = user(&s, "bob", Some("kiln-sb"));

    // `kiln files put` puts it in alice's space, on the shared path.
    let src = s.data.path().join("secret.txt");
    std::fs::write(&src, "alice's secret 7f3a\n").expect("write");
    let out = s.cli_as(
        &alice,
        &["files", "put", src.to_str().expect("utf8"), "secret.txt"],
    );
    assert!(out.status.success(), "{out:?}");
    let space = shared.join("spaces/alice");
    let meta = std::fs::metadata(space.join("secret.txt")).expect("the file is on the shared path");
    assert_eq!(meta.uid(), a_uid, "the file is alice's");
    let smeta = std::fs::metadata(&space).expect("space");
    assert_eq!(
        (smeta.uid(), smeta.permissions().mode() & 0o777),
        (a_uid, 0o700)
    );
    assert!(
        !s.data.path().join("spaces/alice/secret.txt").exists(),
        "the space is not in the data folder"
    );
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .ok()
    };
    assert_eq!(
        mode(&shared),
        Some(0o711),
        "the shared root is passable, not listable"
    );
    assert_eq!(mode(&shared.join("spaces")), Some(0o711));
    assert_eq!(mode(&shared.join("jobs")), Some(0o711));

    // Her sandboxed job reads it at /mnt and writes its output there.
    let id = s.submit_as(
        &alice,
        "reader",
        "name: reader\ncommand: 'cat /mnt/secret.txt > /mnt/copy.txt && id -u && echo read-ok'\n",
    );
    let j = s.ended(&id, 90);
    let log = s.logs(&id, "main-0");
    assert_eq!(j["state"], "SUCCEEDED", "{j:#}\n{log}");
    assert!(log.contains("read-ok"), "{log}");
    assert!(
        log.contains(&a_uid.to_string()),
        "the task ran as alice's uid: {log}"
    );
    let copy = space.join("copy.txt");
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap_or_default(),
        "alice's secret 7f3a\n"
    );
    assert_eq!(std::fs::metadata(&copy).map(|m| m.uid()).ok(), Some(a_uid));
    assert!(
        task(&j, "main-0")["host"] == "n1" || task(&j, "main-0")["host"] == "n2",
        "{j:#}"
    );

    // Slurm ran the server's own binary, copied to the shared path.
    let jobs = slurm_jobs_under(&shared);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let shown = &jobs[0];
    let script = std::process::Command::new("scontrol")
        .args(["write", "batch_script", field(shown, "JobId"), "-"])
        .output()
        .expect("scontrol");
    let script = String::from_utf8_lossy(&script.stdout).into_owned();
    let bin = format!("{}/kiln-", shared.join("bin").display());
    let exe = script
        .split_whitespace()
        .find(|w| w.starts_with(&bin))
        .unwrap_or_else(|| panic!("the batch script runs <shared>/bin/kiln-<build>: {script}"));
    assert_eq!(mode(Path::new(exe)), Some(0o755), "{exe}");
    assert!(
        script.contains(&format!("{exe} __slurm-launch")),
        "{script}"
    );

    // Bob's job, knowing where her space is, reaches none of it.
    let target = space.join("secret.txt");
    let attack = format!(
        "name: peek\ncommand: |\n  for p in {t} {sp} {sh}/spaces {sh}/jobs; do\n    cat $p 2>/dev/null && echo LEAK-read-$p\n    ls $p 2>/dev/null && echo LEAK-list-$p\n  done\n  id -u\n  echo peek-done\n",
        t = target.display(),
        sp = space.display(),
        sh = shared.display(),
    );
    let id = s.submit_as(&bob, "peek", &attack);
    let j = s.ended(&id, 90);
    let log = s.logs(&id, "main-0");
    assert!(log.contains("peek-done"), "{j:#}\n{log}");
    assert!(
        log.contains(&b_uid.to_string()),
        "bob's task is bob's: {log}"
    );
    assert!(!log.contains("7f3a") && !log.contains("LEAK"), "{log}");
}

/// A job's image on Slurm: the nodes run it with their podman, through the
/// same supervisor code as one machine: the user's uid inside, the space at
/// /mnt on the shared path, and the image's files, not the node's.
#[test]
fn a_jobs_image_runs_in_a_container_on_the_slurm_node() {
    if !have_cluster() {
        return;
    }
    let have = std::process::Command::new("podman")
        .args(["--runtime", "runc", "image", "exists", "kiln-test/busybox"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var_os("KILN_REQUIRE_CONTAINERS").is_none(),
            "KILN_REQUIRE_CONTAINERS is set but podman or kiln-test/busybox is missing"
        );
        eprintln!("SKIPPED: no podman with the image kiln-test/busybox (scripts/test makes it)");
        return;
    }
    let (s, _shared) = slurm_server_with(&["--containers", "podman"]);
    let alice = user(&s, "alice", None);
    let (status, v) = s.api_as(&alice, "PUT", "/files/hello.txt", Some("from-the-space"));
    assert_eq!(status, 201, "{v}");
    let id = s.submit_as(
        &alice,
        "img",
        "name: img\nimage: localhost/kiln-test/busybox\ncommand: |\n  id -u\n  cat /mnt/hello.txt; echo\n  test -e /usr/bin/python3 && echo node-files || echo image-files\n  grep CapEff /proc/self/status\n",
    );
    let j = s.wait_state(&id, "SUCCEEDED", 120);
    let t = task(&j, "main-0");
    assert!(t["host"] == "n1" || t["host"] == "n2", "{j:#}");
    let log = s.logs(&id, "main-0");
    let uid: u64 = log.lines().next().and_then(|l| l.parse().ok()).unwrap_or(0);
    assert!(uid >= 1000, "{log}");
    for want in ["from-the-space", "image-files", "CapEff:\t0000000000000000"] {
        assert!(log.lines().any(|l| l == want), "{want}: {log}");
    }
}
