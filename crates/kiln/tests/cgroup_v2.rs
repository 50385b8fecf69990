//! cgroup v2 on a real cgroup2 mount: the server's delegation of its own
//! group, each task's group, and killing a task's whole group.
//!
//! kiln's CI machines are cgroup v1 with an empty cgroup2 hierarchy at
//! `/sys/fs/cgroup/unified`: its memory, cpu and pids controllers are bound
//! to v1, but everything else of v2 is real (groups, `cgroup.procs`, the
//! no-internal-processes rule, `cgroup.kill`), and `hugetlb` is free to be
//! delegated. So the steps are proved with hugetlb standing in for a domain
//! controller, and the report is checked to say memory, cpu and pids are
//! not enforced here, and why. On a v2 host with them delegated the same
//! test checks that they are enforced. One test function: it moves the
//! test process itself between groups, which must not race another test.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{events, shared_tempdir, until, Server};
use kiln_engine::local::delegation::{delegate, delegate_with, SERVER_LEAF};

/// The cgroup2 mount, if this machine has one and the test may use it.
fn mount() -> Option<PathBuf> {
    if !kiln_engine::local::sandbox::running_as_root() {
        eprintln!("SKIPPED: cgroup v2 tests move processes between groups: run as root");
        return None;
    }
    let m = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|m| m.join("cgroup.controllers").exists());
    if m.is_none() {
        eprintln!("SKIPPED: no cgroup2 mount here");
    }
    m
}

fn own_v2_group(pid: u32) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("")
        .to_owned()
}

fn move_to(group: &Path, pid: u32) -> std::io::Result<()> {
    fs::write(group.join("cgroup.procs"), pid.to_string())
}

fn words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Removes the test's groups, deepest first, once their processes are out.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

#[test]
fn delegation_task_groups_and_whole_group_kill_on_a_real_cgroup2_mount() {
    let Some(mount) = mount() else { return };
    let me = std::process::id();
    let home = mount.join(own_v2_group(me).trim_start_matches('/'));
    let name = format!("kiln-v2-test-{me}");
    let t = mount.join(&name);
    if let Err(e) = fs::create_dir(&t) {
        eprintln!("SKIPPED: cannot create {}: {e}", t.display());
        return;
    }
    let result = std::panic::catch_unwind(|| steps(&mount, &t, &name));
    // Back where it was, whatever happened, so the groups can go.
    let _ = move_to(&home, me);
    for d in [
        t.join(SERVER_LEAF),
        t.join("srv").join(SERVER_LEAF),
        t.join("srv"),
        t.clone(),
    ] {
        for pid in words(&d.join("cgroup.procs")) {
            let _ = fs::write(home.join("cgroup.procs"), pid);
        }
    }
    remove_tree(&t);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn steps(mount: &Path, t: &Path, name: &str) {
    // 1. A group with a process of its own cannot hand controllers to
    // children: the kernel's rule that made every task's memory.max
    // "Permission denied" on the H200 machine.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("sleep");
    move_to(t, sleeper.id()).expect("into the test group");
    // The machine hands hugetlb down to the test's group, as systemd hands
    // memory, cpu and pids to a unit with Delegate=yes (a no-op where it
    // already does, or where hugetlb is bound to v1).
    let _ = fs::write(mount.join("cgroup.subtree_control"), "+hugetlb");
    let free: Vec<String> = words(&t.join("cgroup.controllers"));
    let stand_in = ["hugetlb", "memory", "pids", "cpu"]
        .into_iter()
        .find(|c| free.iter().any(|f| f == c));
    if let Some(c) = stand_in {
        let err = fs::write(t.join("cgroup.subtree_control"), format!("+{c}"))
            .expect_err("refused while the group has a process");
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
        // 2. Delegation moves the process into the leaf, then enables it.
        let s = delegate_with(mount, &format!("/{name}"), &[c]);
        assert_eq!(s.group, t);
        assert_eq!(s.moved, 1, "{s:?}");
        assert!(s.controllers[0].enforced, "{s:?}");
        assert!(words(&t.join("cgroup.subtree_control"))
            .iter()
            .any(|w| w == c));
        assert_eq!(own_v2_group(sleeper.id()), format!("/{name}/{SERVER_LEAF}"));
    } else {
        eprintln!("no controller free on this cgroup2 mount: the enabling step is not exercised");
    }
    // 3. The report says, per controller, exactly what this group offers.
    let s = delegate(mount, &format!("/{name}"));
    for c in &s.controllers {
        let offered = free.contains(&c.controller);
        assert_eq!(c.enforced, offered, "{c:?}");
        if !offered {
            assert!(c.detail.contains("not delegated"), "{c:?}");
        }
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    // 4. The server, started inside the group, gives each task a group of
    // its own there, and kills all a task started.
    // A group of its own: the first one now hands out hugetlb, so it can
    // hold no process.
    let srv = t.join("srv");
    fs::create_dir(&srv).expect("server's group");
    let free: Vec<String> = words(&srv.join("cgroup.controllers"));
    let name = format!("{name}/srv");
    let t = srv.as_path();
    move_to(t, std::process::id()).expect("the test into its group");
    let mut server = Server::start_with(&[
        "--cgroup-mount",
        mount.to_str().expect("utf-8"),
        "--cpus",
        "4",
        "--memory",
        "8Gi",
        "--stop-grace",
        "1",
        "--no-sandbox",
    ]);
    // It empties its group only to enable memory, cpu or pids there; with
    // none of them offered (this machine) it leaves the group as it is.
    let any_offered = ["memory", "cpu", "pids"]
        .iter()
        .any(|c| free.iter().any(|f| f == c));
    let server_group = if any_offered {
        format!("/{name}/{SERVER_LEAF}")
    } else {
        format!("/{name}")
    };
    let server_pid = server.child.as_ref().expect("server").id();
    assert_eq!(own_v2_group(server_pid), server_group);
    let nodes = server.ok(&["nodes"]);
    for c in ["memory", "cpu", "pids"] {
        let offered = free.iter().any(|f| f == c);
        let line = nodes
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{c}: ")))
            .unwrap_or_else(|| panic!("no {c} line in {nodes}"));
        assert_eq!(!line.contains("NOT enforced"), offered, "{nodes}");
    }
    let shared = shared_tempdir();
    let bg = shared.path().join("bg.pid");
    let id = server.submit(
        "v2",
        &format!(
            "name: v2\ncommand: 'cat /proc/self/cgroup; setsid sleep 300 & echo $! > {}; echo started'\n",
            bg.display()
        ),
    );
    let job = server.wait_state(&id, "SUCCEEDED", 60);
    let log = server.logs(&id, "main-0");
    let line = log.lines().find(|l| l.starts_with("0::")).unwrap_or("");
    assert!(
        line.starts_with(&format!("0::/{name}/kiln-")) && !line.contains(SERVER_LEAF),
        "the task ran in a group of its own beside the server: {log}"
    );
    let (_, summary) = events(&job)
        .into_iter()
        .find(|(k, _)| k == "limits")
        .expect("a limits event");
    assert!(summary.starts_with("limits with cgroup v2: "), "{summary}");
    let pid: i32 = fs::read_to_string(&bg)
        .expect("bg.pid")
        .trim()
        .parse()
        .expect("pid");
    until(
        10,
        "the process that left its process group to be gone",
        || match fs::metadata(format!("/proc/{pid}")) {
            Err(_) => Ok(()),
            Ok(_) => Err(format!("{pid} still runs")),
        },
    );

    // 5. Each controller the group is offered holds a task to its limit.
    let offered = |c: &str| free.iter().any(|f| f == c);
    if offered("memory") {
        // tail holds a line in memory until it ends: 400 MB, no newline.
        let id = server.submit(
            "oom",
            "name: oom\nmemory: 100Mi\ncommand: 'head -c 400M /dev/zero | tail > /dev/null'\n",
        );
        let j = server.wait_state(&id, "FAILED", 60);
        assert_eq!(common::task(&j, "main-0")["reason"], "OOMKilled", "{j}");
    }
    if offered("cpu") {
        let id = server.submit(
            "cpu",
            "name: cpu\ncpus: 2\ncommand: 'cat /sys/fs/cgroup/unified$(sed -n s/^0:://p /proc/self/cgroup)/cpu.max 2>/dev/null || cat /sys/fs/cgroup$(sed -n s/^0:://p /proc/self/cgroup)/cpu.max'\n",
        );
        server.wait_state(&id, "SUCCEEDED", 60);
        assert_eq!(server.logs(&id, "main-0").trim(), "200000 100000");
    }
    if offered("pids") {
        let id = server.submit(
            "fork",
            "name: fork\npids: 20\ncommand: |\n  python3 -c \"import os\n  for i in range(40): os.posix_spawn('/bin/sleep', ['sleep', '60'], {})\"\n",
        );
        let j = server.wait_state(&id, "FAILED", 60);
        assert_eq!(
            common::task(&j, "main-0")["reason"],
            "PidsLimitReached",
            "{j}"
        );
    }
    eprintln!(
        "proved on {}: delegation, task groups, cgroup.kill{}",
        mount.display(),
        ["memory", "cpu", "pids"]
            .iter()
            .filter(|c| offered(c))
            .map(|c| format!(", {c} limit"))
            .collect::<String>()
    );

    // 6. A restarted server uses the same group (from the leaf, if it moved
    // there): restarts never nest.
    server.kill9();
    server.boot();
    let pid = server.child.as_ref().expect("server").id();
    assert_eq!(own_v2_group(pid), server_group);
    assert!(!t.join(SERVER_LEAF).join(SERVER_LEAF).exists());
    let id = server.submit("again", "name: again\ncommand: 'cat /proc/self/cgroup'\n");
    server.wait_state(&id, "SUCCEEDED", 60);
    let log = server.logs(&id, "main-0");
    assert!(
        log.lines()
            .any(|l| l.starts_with(&format!("0::/{name}/kiln-")) && !l.contains(SERVER_LEAF)),
        "{log}"
    );
    server.kill9();
}

/// The units in `dist/` load without warnings (`systemd-analyze verify`),
/// with this build's binary in place of `/usr/local/bin/kiln`. It runs
/// `systemd-analyze` only, whose children never join the groups above.
#[test]
fn the_systemd_units_verify() {
    if !common::have_program("systemd-analyze", "KILN_TEST_SYSTEMD") {
        return;
    }
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist");
    let tmp = tempfile::tempdir().expect("tmp");
    let exe = common::kiln_exe();
    let mut units = Vec::new();
    for name in ["kiln-tasks.service", "kiln.service"] {
        let text = fs::read_to_string(dist.join(name)).expect("unit");
        assert!(text.contains("/usr/local/bin/kiln") || name == "kiln-tasks.service");
        let path = tmp.path().join(name);
        fs::write(
            &path,
            text.replace("/usr/local/bin/kiln", &exe.display().to_string()),
        )
        .expect("write");
        units.push(path);
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .current_dir(tmp.path())
        .output()
        .expect("systemd-analyze");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    let tasks = fs::read_to_string(dist.join("kiln-tasks.service")).expect("unit");
    assert!(tasks.contains("\nDelegate=yes\n"), "{tasks}");
    let server = fs::read_to_string(dist.join("kiln.service")).expect("unit");
    assert!(
        server.contains("--cgroup-group /system.slice/kiln-tasks.service")
            && server.contains("\nKillMode=process\n"),
        "{server}"
    );
}
