//! `kill -9` of the server while jobs run and wait: after a restart every
//! job reaches the state it would have reached, logs are whole, and nothing
//! runs twice.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{task, Server};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn wait_file(path: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn a_killed_server_comes_back_and_carries_on() {
    let mut s = Server::start();
    let marks = common::shared_tempdir();
    let m = marks.path().display().to_string();

    // Runs across the crash and ends after the restart.
    let across = s.submit(
        "across",
        &format!("name: across\ngpus: 1\ncommand: 'echo run >> {m}/across; echo start; while [ ! -e {m}/go ]; do sleep 0.05; done; echo done'\n"),
    );
    // Ends while the server is down.
    let during = s.submit(
        "during",
        &format!("name: during\ncommand: 'echo run >> {m}/during; while [ ! -e {m}/go-during ]; do sleep 0.05; done; echo bye; touch {m}/during-ended'\n"),
    );
    // Fails while the server is down: one of two tasks exits 7.
    let fails = s.submit(
        "fails",
        &format!(
            "name: fails\nroles:\n  - name: w\n    replicas: 2\n    cpus: 1\n    memory: 128Mi\n    command: 'echo run >> {m}/fails-$KILN_TASK_ID; while [ ! -e {m}/go-during ]; do sleep 0.05; done; if [ $KILN_TASK_ID = w-0 ]; then touch {m}/fails-ended; exit 7; fi; sleep 300'\n"
        ),
    );
    // Keeps running; stopped after the restart through its old supervisor.
    let forever = s.submit(
        "forever",
        &format!("name: forever\ncommand: 'echo run >> {m}/forever; exec sleep 300'\n"),
    );
    // Waits for GPUs the first job holds.
    let waits = s.submit(
        "waits",
        &format!(
            "name: waits\ngpus: 4\ncommand: 'echo run >> {m}/waits; echo $CUDA_VISIBLE_DEVICES'\n"
        ),
    );
    for id in [&across, &during, &fails, &forever] {
        s.wait_state(id, "RUNNING", 30);
    }
    assert_eq!(s.job(&waits)["state"], "WAITING");
    for f in ["across", "during", "fails-w-0", "fails-w-1", "forever"] {
        wait_file(&marks.path().join(f), 30);
    }

    s.kill9();
    // While it is down, two jobs' tasks end.
    std::fs::write(marks.path().join("go-during"), "").expect("signal");
    wait_file(&marks.path().join("during-ended"), 30);
    wait_file(&marks.path().join("fails-ended"), 30);
    s.boot();

    let j = s.wait_state(&during, "SUCCEEDED", 30);
    assert_eq!(task(&j, "main-0")["exitCode"], 0);
    let j = s.wait_state(&fails, "FAILED", 30);
    assert_eq!(task(&j, "w-0")["exitCode"], 7);
    assert_eq!(task(&j, "w-1")["state"], "STOPPED");
    assert_eq!(s.job(&across)["state"], "RUNNING");
    assert_eq!(s.job(&forever)["state"], "RUNNING");
    assert_eq!(s.job(&waits)["state"], "WAITING");

    // The job that ran across the restart finishes normally, then the
    // waiting one gets its GPUs.
    std::fs::write(marks.path().join("go"), "").expect("signal");
    s.wait_state(&across, "SUCCEEDED", 30);
    assert_eq!(s.logs(&across, "main-0"), "start\ndone\n");
    assert_eq!(s.logs(&during, "main-0"), "bye\n");
    s.ok(&["stop", &forever]);
    s.wait_state(&forever, "STOPPED", 30);
    let j = s.wait_state(&waits, "SUCCEEDED", 30);
    assert_eq!(j["attempt"], 0);
    assert_eq!(s.logs(&waits, "main-0"), "0,1,2,3\n");

    // Nothing ran twice.
    for f in [
        "across",
        "during",
        "fails-w-0",
        "fails-w-1",
        "forever",
        "waits",
    ] {
        assert_eq!(lines(&marks.path().join(f)), 1, "{f} ran more than once");
    }
    for id in [&across, &during, &fails, &forever, &waits] {
        assert_eq!(s.job(id)["attempt"], 0, "{id} was retried");
    }
}

#[test]
fn a_deadline_that_fired_before_a_crash_still_fails_the_job() {
    let mut s = Server::start();
    let marks = common::shared_tempdir();
    let m = marks.path().display().to_string();
    // The task takes its time over SIGTERM (the grace period, 1 s, then
    // SIGKILL), so the server can die between the deadline and the end.
    let id = s.submit(
        "late",
        &format!("name: late\nmaxDuration: 1s\ncommand: 'trap \"touch {m}/term\" TERM; while true; do sleep 0.05; done'\n"),
    );
    s.wait_job(&id, 30, "past its deadline", |j| {
        j["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "deadline"))
    });
    s.kill9();
    wait_file(&marks.path().join("term"), 30);
    // Let the supervisor finish the task (SIGKILL after the grace period).
    let exit = s
        .data
        .path()
        .join("jobs")
        .read_dir()
        .expect("jobs")
        .flatten()
        .map(|e| e.path().join("attempt-0/main-0/exit.json"))
        .next()
        .expect("a job folder");
    wait_file(&exit, 30);
    s.boot();
    let j = s.wait_job(&id, 30, "finished", |j| {
        ["STOPPED", "FAILED", "SUCCEEDED"].contains(&j["state"].as_str().unwrap_or_default())
    });
    assert_eq!(j["state"], "FAILED", "{j}");
    assert!(
        j["reason"]
            .as_str()
            .expect("reason")
            .starts_with("DeadlineExceeded"),
        "{j}"
    );
}

#[test]
fn a_graceful_shutdown_leaves_running_tasks_alone() {
    let mut s = Server::start();
    let marks = common::shared_tempdir();
    let m = marks.path().display().to_string();
    let id = s.submit(
        "steady",
        &format!("name: steady\ncommand: 'echo up; while [ ! -e {m}/go ]; do sleep 0.05; done; echo down'\n"),
    );
    s.wait_state(&id, "RUNNING", 30);
    // SIGTERM, as `systemctl stop` or Ctrl-C would send to the server alone.
    let mut child = s.child.take().expect("server");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signalled");
    let status = child.wait().expect("exited");
    assert!(status.success(), "{status:?}");
    std::fs::write(marks.path().join("go"), "").expect("go");
    s.boot();
    let j = s.wait_state(&id, "SUCCEEDED", 30);
    assert_eq!(j["attempt"], 0);
    assert_eq!(s.logs(&id, "main-0"), "up\ndown\n");
}

/// A supervisor killed (the OOM killer, `kill -9`) cannot remove its
/// task's cgroups, nor end the task: the next start kills what runs there
/// unsupervised and removes the groups.
#[test]
fn groups_left_by_killed_supervisors_are_removed_at_the_next_start() {
    let cg = kiln_engine::local::resources::discover(&Default::default()).cgroups;
    let Some(root) = cg
        .cpu_root
        .clone()
        .or(cg.pids_root.clone())
        .or(cg.group_root.clone())
    else {
        eprintln!("SKIPPED: no writable cgroups here");
        return;
    };
    let mut s = Server::start();
    let id = s.submit("held", "name: held\ncpus: 1\ncommand: 'sleep 300'\n");
    s.wait_state(&id, "RUNNING", 30);
    let instance = std::fs::read_to_string(s.data.path().join("instance"))
        .expect("instance")
        .trim()
        .to_owned();
    let prefix = format!("kiln-{instance}-");
    let groups = || -> Vec<String> {
        std::fs::read_dir(&root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    };
    common::until(10, "the running task's group", || match groups().len() {
        1 => Ok(()),
        n => Err(format!("{n} groups")),
    });
    s.kill9();
    // SIGKILL the supervisor alone: its task runs on in its group, with
    // nobody to capture its output or its exit.
    let data = s.data.path().as_os_str().as_encoded_bytes().to_vec();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmd.windows(data.len()).any(|w| w == data.as_slice()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let orphans: Vec<i32> = groups()
        .iter()
        .flat_map(|n| {
            std::fs::read_to_string(root.join(n).join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    assert!(!orphans.is_empty(), "the task outlived its supervisor");
    let stale = groups();
    assert_eq!(stale.len(), 1, "left behind by the killed supervisor");
    s.boot();
    // The job goes on as a new attempt, in a group of its own; the orphan
    // is killed and its group removed.
    common::until(10, "the stale group to be removed", || {
        let g = groups();
        if g.contains(&stale[0]) {
            Err(format!("{g:?}"))
        } else {
            Ok(())
        }
    });
    for pid in orphans {
        common::until(10, "the unsupervised task to be killed", || {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                // Gone, or a zombie its parent has not reaped yet.
                Ok(st) if !st.contains(") Z ") => Err(format!("{pid} still runs")),
                _ => Ok(()),
            }
        });
    }
}
