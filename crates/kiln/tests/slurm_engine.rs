//! `kiln server --engine slurm` on a real Slurm cluster (`scripts/slurm-cluster
//! up DIR`, which `scripts/test` starts and points `SLURM_CONF` at): jobs run as
//! Slurm jobs, one step per task, placed by Slurm across both nodes. Without
//! `SLURM_CONF` these are skipped, unless `KILN_REQUIRE_SLURM=1`.
//!
//! One cluster for the whole binary; one server per test, with its own data
//! folder and shared folder (inside the data folder, so a dropped server's
//! launchers and steps are killed with it). The cases every engine passes
//! (tests/cases) run here in `mod slurm`, on the local engine in
//! tests/local_engine.rs; the seeds with PyTorch are in tests/slurm_seeds.rs.

mod common;
#[macro_use]
mod cases;

use std::path::{Path, PathBuf};

use common::{env_of, task, until, Server};

fn whole_cluster() -> std::sync::MutexGuard<'static, ()> {
    cases::Eng {
        kind: cases::Kind::Slurm,
    }
    .whole()
    .expect("the cluster's lock")
}

fn have_cluster() -> bool {
    cases::have_cluster()
}

fn slurm_server() -> Server {
    cases::slurm_server(&[])
}

fn squeue_ids() -> String {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-o", "%i %j %T"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn a_trivial_job_succeeds_with_its_log() {
    if !have_cluster() {
        return;
    }
    let s = slurm_server();
    let id = s.submit(
        "hello",
        "name: hello\ncommand: 'echo hello from $KILN_TASK_ID'\n",
    );
    let j = s.wait_state(&id, "SUCCEEDED", 60);
    let t = task(&j, "main-0");
    assert!(
        t["host"] == "n1" || t["host"] == "n2",
        "the task ran on a Slurm node: {j:#}"
    );
    let log = s.logs(&id, "main-0");
    assert!(log.contains("hello from main-0"), "{log}");
}

#[test]
fn a_gang_spans_both_nodes_with_its_environment_and_gpus() {
    if !have_cluster() {
        return;
    }
    let _whole = whole_cluster();
    let s = slurm_server();
    // Each task takes a whole node's 8 CPUs: they cannot share one.
    let spec = "name: span\nroles:\n  - name: w\n    replicas: 2\n    cpus: 8\n    memory: 256Mi\n    gpus: 1\n    command: 'env | sort'\n";
    let id = s.submit("span", spec);
    let j = s.wait_state(&id, "SUCCEEDED", 90);
    let hosts: Vec<String> = ["w-0", "w-1"]
        .iter()
        .map(|t| task(&j, t)["host"].as_str().unwrap_or("").to_owned())
        .collect();
    let mut sorted = hosts.clone();
    sorted.sort();
    assert_eq!(sorted, ["n1", "n2"], "{j:#}");
    for (rank, t) in ["w-0", "w-1"].iter().enumerate() {
        let env = env_of(&s.logs(&id, t));
        assert_eq!(
            env.get("RANK").map(String::as_str),
            Some(rank.to_string().as_str()),
            "{env:?}"
        );
        assert_eq!(env.get("WORLD_SIZE").map(String::as_str), Some("2"));
        assert_eq!(
            env.get("MASTER_ADDR").map(String::as_str),
            Some("127.0.0.1")
        );
        assert!(env
            .get("MASTER_PORT")
            .is_some_and(|p| p.parse::<u16>().is_ok()));
        // The GPU Slurm bound to the step, not kiln's guess.
        let gpus = env.get("CUDA_VISIBLE_DEVICES").cloned().unwrap_or_default();
        assert!(!gpus.is_empty(), "{env:?}");
    }
}

#[test]
fn stop_of_a_running_job_ends_stopped() {
    if !have_cluster() {
        return;
    }
    let s = slurm_server();
    let id = s.submit(
        "forever",
        "name: forever\ncommand: 'echo up; exec sleep 300'\n",
    );
    s.wait_state(&id, "RUNNING", 60);
    s.wait_job(&id, 30, "logging", |_| s.logs(&id, "main-0").contains("up"));
    s.ok(&["stop", &id]);
    let j = s.wait_state(&id, "STOPPED", 60);
    assert_eq!(task(&j, "main-0")["state"], "STOPPED", "{j:#}");
}

#[test]
fn a_failing_task_fails_the_job_and_stops_the_rest() {
    if !have_cluster() {
        return;
    }
    let s = slurm_server();
    let spec = "name: fails\nroles:\n  - name: w\n    replicas: 2\n    cpus: 1\n    memory: 128Mi\n    command: 'if [ $KILN_TASK_ID = w-0 ]; then exit 7; fi; exec sleep 300'\n";
    let id = s.submit("fails", spec);
    let j = s.wait_state(&id, "FAILED", 90);
    assert_eq!(task(&j, "w-0")["exitCode"], 7, "{j:#}");
    assert_ne!(task(&j, "w-1")["state"], "RUNNING", "{j:#}");
}

#[test]
fn a_job_that_waits_says_why_in_words() {
    if !have_cluster() {
        return;
    }
    let _whole = whole_cluster();
    let s = slurm_server();
    // All four GPUs of the cluster, held until the test lets go.
    let hold = s.submit(
        "hold",
        "name: hold\nroles:\n  - name: h\n    replicas: 2\n    cpus: 1\n    memory: 128Mi\n    gpus: 2\n    command: 'exec sleep 300'\n",
    );
    s.wait_state(&hold, "RUNNING", 60);
    let waits = s.submit("waits", "name: waits\ngpus: 1\ncommand: 'echo ok'\n");
    let j = s.wait_job(&waits, 30, "given a reason", |j| {
        j["pendingReason"]
            .as_str()
            .is_some_and(|r| r.contains("GPU"))
    });
    let reason = j["pendingReason"].as_str().unwrap_or_default().to_owned();
    assert!(!reason.contains("Resources"), "{reason}");
    assert_eq!(j["state"], "WAITING");
    s.ok(&["stop", &hold]);
    s.wait_state(&waits, "SUCCEEDED", 60);
}

#[test]
fn a_killed_server_comes_back_and_nothing_runs_twice() {
    if !have_cluster() {
        return;
    }
    let mut s = slurm_server();
    let marks = common::shared_tempdir();
    let m = marks.path().display().to_string();
    let spec = format!(
        "name: across\nroles:\n  - name: w\n    replicas: 2\n    cpus: 1\n    memory: 128Mi\n    command: 'echo run >> {m}/runs-$KILN_TASK_ID; while [ ! -e {m}/go ]; do sleep 0.05; done; echo done'\n"
    );
    let id = s.submit("across", &spec);
    s.wait_state(&id, "RUNNING", 60);
    let runs = |t: &str| read(&PathBuf::from(&m).join(format!("runs-{t}")));
    until(30, "both tasks ran", || {
        (runs("w-0").lines().count() == 1 && runs("w-1").lines().count() == 1)
            .then_some(())
            .ok_or_else(squeue_ids)
    });
    s.kill9();
    std::fs::write(marks.path().join("go"), "").expect("go");
    s.boot();
    let j = s.wait_state(&id, "SUCCEEDED", 60);
    assert_eq!(runs("w-0").lines().count(), 1, "{j:#}");
    assert_eq!(runs("w-1").lines().count(), 1, "{j:#}");
    assert!(s.logs(&id, "w-1").contains("done"));
}

mod slurm {
    engine_cases!(
        Slurm: openpai_ports,
        completion_rules,
        logs_followed_live_and_stop,
        retry_count,
        max_duration_and_extend,
        is_debug,
        never_fits,
    );
}
