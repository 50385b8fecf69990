//! The task supervisor on real processes: `kiln __supervise` started the way
//! the local engine starts it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_engine::local::resources::{discover, Overrides};
use kiln_engine::local::{
    spawn_standby, spawn_supervisor, supervisor_alive, Exit, LaunchSpec, Limits, RunAs, Started,
    TaskDir,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn kiln() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
}

fn launch(dir: &Path, command: &str, grace: u64) -> TaskDir {
    let task = TaskDir::new(dir.join("task"));
    task.write_launch(&LaunchSpec {
        command: command.into(),
        env: vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("A".into(), "1".into()),
        ],
        working_dir: dir.to_owned(),
        stop_grace_secs: grace,
        limits: None,
        sandbox: None,
        container: None,
        run_as: None,
        gpus_from_step: false,
        stop_file: None,
    })
    .expect("launch.json");
    task
}

/// Polls for a condition until a deadline: the supervisor reports through
/// files, and the test has no other event to wait on.
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn exit_of(task: &TaskDir) -> Exit {
    wait_for("exit.json", 30, || task.read_exit().expect("readable"))
}

fn started_of(task: &TaskDir) -> Started {
    wait_for("started.json", 30, || {
        task.read_started().expect("readable")
    })
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn runs_the_command_with_exactly_its_environment_and_keeps_its_logs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let task = launch(
        tmp.path(),
        "echo out; echo err >&2; echo \"A=$A\"; env > env.txt; exit 3",
        5,
    );
    let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
    let exit = exit_of(&task);
    sup.wait().expect("reaped");
    assert_eq!(
        (exit.exit_code, exit.signal, exit.stop_requested),
        (Some(3), None, false)
    );
    assert_eq!(read(task.stdout()), "out\nA=1\n");
    assert_eq!(read(task.stderr()), "err\n");
    let merged = read(task.output());
    assert!(merged.contains("out\n") && merged.contains("err\n") && merged.contains("A=1\n"));
    // Nothing of the server's environment leaks in (only what bash adds).
    let env = read(tmp.path().join("env.txt"));
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(names.contains(&"A") && names.contains(&"PATH"), "{env}");
    assert!(
        !names.contains(&"HOME") && !names.contains(&"CARGO_MANIFEST_DIR"),
        "{env}"
    );
}

/// As root, a task given its user's uid runs as that uid for good: no
/// supplementary groups, no capabilities, no way back through set-uid
/// programs. Root itself is never a uid to run as.
#[test]
fn a_task_runs_as_its_uid_with_no_privileges_left() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root to change uid");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    std::os::unix::fs::chown(tmp.path(), Some(1_500_000_777), Some(1_500_000_777)).expect("chown");
    let with = |uid: u32| {
        let task = TaskDir::new(tmp.path().join(format!("task-{uid}")));
        task.write_launch(&LaunchSpec {
            command: "id -u; id -G; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status; \
                      echo x > mine && echo wrote"
                .into(),
            env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
            working_dir: tmp.path().to_owned(),
            stop_grace_secs: 1,
            limits: None,
            sandbox: None,
            container: None,
            run_as: Some(RunAs { uid, gid: uid }),
            gpus_from_step: false,
            stop_file: None,
        })
        .expect("launch.json");
        let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
        let exit = exit_of(&task);
        sup.wait().expect("reaped");
        (exit, read(task.stdout()))
    };
    let (exit, out) = with(1_500_000_777);
    assert!(exit.succeeded(), "{exit:?} {out}");
    assert_eq!(
        out,
        "1500000777\n1500000777\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\nwrote\n"
    );
    let (exit, out) = with(0);
    assert!(exit.launch_error.is_some() && out.is_empty(), "{exit:?}");
}

#[test]
fn a_death_by_signal_is_recorded_as_such() {
    let tmp = tempfile::tempdir().expect("tmp");
    let task = launch(tmp.path(), "kill -9 $$", 5);
    let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
    let exit = exit_of(&task);
    sup.wait().expect("reaped");
    assert_eq!((exit.exit_code, exit.signal), (None, Some(9)));
    assert!(!exit.succeeded());
}

#[test]
fn the_task_outlives_whoever_started_its_supervisor() {
    let tmp = tempfile::tempdir().expect("tmp");
    let task = launch(
        tmp.path(),
        "while [ ! -e go ]; do sleep 0.05; done; echo finished",
        5,
    );
    // The starter exits at once, as a killed server would.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' __supervise '{}' >/dev/null 2>&1 &",
            kiln().display(),
            task.path().display()
        ))
        .status()
        .expect("starter ran");
    assert!(status.success());
    let started = started_of(&task);
    assert!(supervisor_alive(&task, &started));
    std::fs::write(tmp.path().join("go"), "").expect("signal file");
    let exit = exit_of(&task);
    assert!(exit.succeeded());
    assert_eq!(read(task.stdout()), "finished\n");
    wait_for("the supervisor to exit", 10, || {
        (!supervisor_alive(&task, &started)).then_some(())
    });
}

#[test]
fn stop_sends_term_then_kill_after_the_grace_period() {
    let tmp = tempfile::tempdir().expect("tmp");
    let task = launch(
        tmp.path(),
        "trap '' TERM; echo ready; while true; do sleep 0.05; done",
        1,
    );
    let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
    let started = started_of(&task);
    wait_for("the task to trap TERM", 10, || {
        read(task.stdout()).contains("ready").then_some(())
    });
    kill(Pid::from_raw(started.supervisor_pid), Signal::SIGTERM).expect("signalled");
    let exit = exit_of(&task);
    sup.wait().expect("reaped");
    assert_eq!((exit.signal, exit.stop_requested), (Some(9), true));
}

#[test]
fn a_task_that_handles_term_ends_on_its_own_terms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let task = launch(
        tmp.path(),
        "trap 'echo saving; exit 0' TERM; echo ready; while true; do sleep 0.05; done",
        30,
    );
    let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
    let started = started_of(&task);
    wait_for("the task to start", 10, || {
        read(task.stdout()).contains("ready").then_some(())
    });
    kill(Pid::from_raw(started.supervisor_pid), Signal::SIGTERM).expect("signalled");
    let exit = exit_of(&task);
    sup.wait().expect("reaped");
    assert_eq!((exit.exit_code, exit.stop_requested), (Some(0), true));
    assert!(read(task.stdout()).contains("saving"));
}

#[test]
fn processes_left_behind_end_with_the_task() {
    let tmp = tempfile::tempdir().expect("tmp");
    let task = launch(tmp.path(), "sleep 300 & echo $! > bg.pid; exit 0", 5);
    let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
    let exit = exit_of(&task);
    sup.wait().expect("reaped");
    assert!(exit.succeeded());
    let bg: i32 = read(tmp.path().join("bg.pid")).trim().parse().expect("pid");
    wait_for("the background process to be gone", 10, || {
        let stat = read(PathBuf::from(format!("/proc/{bg}/stat")));
        // Gone, or a zombie waiting for init to reap it.
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    });
}

#[test]
fn a_task_that_cannot_start_is_a_launch_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let task = TaskDir::new(tmp.path().join("task"));
    task.write_launch(&LaunchSpec {
        command: "true".into(),
        env: vec![],
        working_dir: tmp.path().join("no/such/folder"),
        stop_grace_secs: 1,
        limits: None,
        sandbox: None,
        container: None,
        run_as: None,
        gpus_from_step: false,
        stop_file: None,
    })
    .expect("launch.json");
    let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
    let exit = exit_of(&task);
    sup.wait().expect("reaped");
    let err = exit.launch_error.expect("a launch error");
    assert!(err.contains("no/such/folder"), "{err}");
    assert!(task.read_started().expect("readable").is_none());
}

/// A task with limits, placed in groups under what discovery found usable.
fn limited(
    dir: &Path,
    name: &str,
    command: &str,
    memory_mb: u64,
    cpus: u32,
) -> (TaskDir, Option<u8>) {
    let cg = discover(&Overrides::default()).cgroups;
    let task = TaskDir::new(dir.join("task"));
    task.write_launch(&LaunchSpec {
        command: command.into(),
        env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
        working_dir: dir.to_owned(),
        stop_grace_secs: 1,
        limits: Some(Limits {
            memory_mb: Some(memory_mb),
            cpus: Some(cpus),
            cgroup_version: cg.version.unwrap_or(1),
            memory_root: cg.memory_root.clone(),
            cpu_root: cg.cpu_root.clone(),
            pids_max: None,
            pids_root: None,
            group_root: cg.group_root.clone(),
            group: format!("kiln-test-{}-{name}", std::process::id()),
        }),
        sandbox: None,
        container: None,
        run_as: None,
        gpus_from_step: false,
        stop_file: None,
    })
    .expect("launch.json");
    (
        task,
        cg.version
            .filter(|_| cg.memory_root.is_some() && cg.cpu_root.is_some()),
    )
}

#[test]
fn a_task_over_its_memory_limit_is_oom_killed_and_reported_so() {
    let tmp = tempfile::tempdir().expect("tmp");
    // tail holds a line in memory until it ends: 400 MB with no newline.
    let (task, usable) = limited(
        tmp.path(),
        "oom",
        "head -c 400M /dev/zero | tail > /dev/null",
        100,
        1,
    );
    let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
    let exit = exit_of(&task);
    sup.wait().expect("reaped");
    let started = task.read_started().expect("readable").expect("started");
    if usable.is_none() {
        // No cgroups here: the task ran unlimited, and that was said.
        assert!(started.limits_note.is_some());
        return;
    }
    assert_eq!(started.limits_note, None);
    assert!(exit.oom_killed, "{exit:?}");
    assert!(!exit.succeeded());
}

#[test]
fn a_task_within_its_limits_runs_in_its_own_groups() {
    let tmp = tempfile::tempdir().expect("tmp");
    let script = "for c in memory cpu; do grep \":$c:\" /proc/self/cgroup; done; \
        cg=$(grep ':cpu:' /proc/self/cgroup | cut -d: -f3); cat /sys/fs/cgroup/cpu$cg/cpu.cfs_quota_us; \
        mg=$(grep ':memory:' /proc/self/cgroup | cut -d: -f3); cat /sys/fs/cgroup/memory$mg/memory.limit_in_bytes";
    let (task, usable) = limited(tmp.path(), "within", script, 256, 2);
    let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
    let exit = exit_of(&task);
    sup.wait().expect("reaped");
    if usable != Some(1) {
        return; // The v1 file names below do not apply; the OOM test covers the rest.
    }
    assert!(
        exit.succeeded() && !exit.oom_killed,
        "{exit:?} {}",
        read(task.stderr())
    );
    let out = read(task.stdout());
    let group = format!("kiln-test-{}-within", std::process::id());
    assert_eq!(
        out.lines().filter(|l| l.ends_with(&group)).count(),
        2,
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == "200000"),
        "2 CPUs = 200 ms per 100 ms period: {out}"
    );
    assert!(
        out.lines().any(|l| l == (256u64 << 20).to_string()),
        "{out}"
    );
}

fn gone(pid: i32) -> bool {
    let stat = read(PathBuf::from(format!("/proc/{pid}/stat")));
    // Gone, or a zombie waiting for init to reap it.
    stat.is_empty() || stat.contains(") Z ")
}

#[test]
fn a_stop_that_races_the_start_still_stops_the_task() {
    // SIGTERM at once, again and again: whether it lands before the task is
    // spawned or just after, the task must end and say it was stopped.
    for i in 0..20 {
        let tmp = tempfile::tempdir().expect("tmp");
        let task = launch(tmp.path(), "echo $$ > task.pid; sleep 300", 5);
        let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
        let _ = kill(Pid::from_raw(sup.id() as i32), Signal::SIGTERM);
        let exit = exit_of(&task);
        sup.wait().expect("reaped");
        assert!(exit.stop_requested, "round {i}: {exit:?}");
        assert!(exit.launch_error.is_none(), "round {i}: {exit:?}");
        if let Ok(pid) = read(tmp.path().join("task.pid")).trim().parse::<i32>() {
            wait_for("the task to be gone", 10, || gone(pid).then_some(()));
        }
    }
}

#[test]
fn a_process_that_left_the_group_does_not_hold_the_exit_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    // setsid puts the sleep in a session of its own, out of the task's
    // process group, still holding the task's stdout.
    let task = launch(
        tmp.path(),
        "setsid sleep 120 & echo $! > bg.pid; echo done",
        5,
    );
    let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
    let exit = exit_of(&task);
    sup.wait().expect("reaped");
    assert!(exit.succeeded(), "{exit:?}");
    assert!(read(task.stdout()).contains("done"));
    if let Ok(pid) = read(tmp.path().join("bg.pid")).trim().parse::<i32>() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[test]
fn with_cgroups_even_processes_that_left_the_group_end_with_the_task() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (task, usable) = limited(
        tmp.path(),
        "escape",
        "setsid sleep 120 & echo $! > bg.pid; echo done",
        256,
        1,
    );
    let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
    let exit = exit_of(&task);
    sup.wait().expect("reaped");
    assert!(exit.succeeded(), "{exit:?}");
    let bg: i32 = read(tmp.path().join("bg.pid")).trim().parse().expect("pid");
    if usable.is_none() {
        let _ = kill(Pid::from_raw(bg), Signal::SIGKILL);
        return;
    }
    wait_for("the escaped process to be gone", 10, || {
        gone(bg).then_some(())
    });
}

#[test]
fn a_task_folder_is_never_run_twice() {
    let tmp = tempfile::tempdir().expect("tmp");
    let task = launch(tmp.path(), "echo run >> runs.txt", 5);
    let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
    exit_of(&task);
    sup.wait().expect("reaped");
    let status = spawn_supervisor(&kiln(), &task)
        .expect("spawned")
        .wait()
        .expect("reaped");
    assert!(!status.success());
    assert_eq!(read(tmp.path().join("runs.txt")), "run\n");
}

/// A standby supervisor (started before its task exists) that takes a
/// folder is that task's supervisor in every way: it runs the task, a
/// restarted server recognises it (its command line does not name the
/// folder), and a stop sent the moment the hand-over returns stops the task.
#[test]
fn a_standby_takes_a_folder_and_is_its_supervisor_from_then_on() {
    for round in 0..10 {
        let tmp = tempfile::tempdir().expect("tmp");
        let task = launch(tmp.path(), "echo $$ > task.pid; sleep 300", 5);
        let standby = spawn_standby(&kiln()).expect("standby");
        let mut sup = standby.hand_over(&task).expect("taken");
        if round == 0 {
            let started = started_of(&task);
            assert_eq!(started.supervisor_pid, sup.id() as i32);
            assert!(supervisor_alive(&task, &started), "not recognised");
            assert!(task.supervisor_log().exists());
        }
        let _ = kill(Pid::from_raw(sup.id() as i32), Signal::SIGTERM);
        let exit = exit_of(&task);
        sup.wait().expect("reaped");
        assert!(exit.stop_requested, "round {round}: {exit:?}");
        assert!(exit.launch_error.is_none(), "round {round}: {exit:?}");
        if let Ok(pid) = read(tmp.path().join("task.pid")).trim().parse::<i32>() {
            wait_for("the task to be gone", 10, || gone(pid).then_some(()));
        }
    }
}

#[test]
fn a_standby_whose_server_goes_away_ends_without_a_task() {
    let standby = spawn_standby(&kiln()).expect("standby");
    let pid = standby.pid() as i32;
    drop(standby);
    wait_for("the standby to end", 10, || gone(pid).then_some(()));
}

/// Signalled while it waits (the server never does that), a standby takes
/// no folder; the task then runs under a fresh supervisor, once.
#[test]
fn a_standby_signalled_while_it_waits_takes_no_folder() {
    let tmp = tempfile::tempdir().expect("tmp");
    let task = launch(tmp.path(), "echo run >> runs.txt", 5);
    let standby = spawn_standby(&kiln()).expect("standby");
    let _ = kill(Pid::from_raw(standby.pid() as i32), Signal::SIGTERM);
    assert!(standby.hand_over(&task).is_err());
    assert!(task.claimed_by().is_none() && task.read_exit().expect("readable").is_none());
    let mut sup = spawn_supervisor(&kiln(), &task).expect("spawned");
    assert!(exit_of(&task).succeeded());
    sup.wait().expect("reaped");
    assert_eq!(read(tmp.path().join("runs.txt")), "run\n");
}

/// A process of another uid (every task, when kiln runs as root) that calls
/// itself `__supervise` and works in a task's folder is never taken for
/// that task's supervisor; one of the server's own uid is.
#[test]
fn a_process_of_another_uid_is_never_taken_for_a_supervisor() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let task = launch(tmp.path(), "true", 5);
    for p in [tmp.path(), task.path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    let posing = |uid: Option<u32>| {
        let mut c = std::process::Command::new("sleep");
        c.arg0("__supervise").arg("30").current_dir(task.path());
        if let Some(id) = uid {
            c.uid(id).gid(id);
        }
        let child = c.spawn().expect("spawned");
        let pid = child.id() as i32;
        wait_for("the exec", 10, || {
            read(PathBuf::from(format!("/proc/{pid}/cmdline")))
                .starts_with("__supervise")
                .then_some(())
        });
        child
    };
    let mut task_uid = posing(Some(1_500_000_001));
    let mut ours = posing(None);
    assert!(!kiln_engine::local::pid_supervises(
        &task,
        task_uid.id() as i32
    ));
    assert!(kiln_engine::local::pid_supervises(&task, ours.id() as i32));
    for c in [&mut task_uid, &mut ours] {
        let _ = c.kill();
        let _ = c.wait();
    }
}
