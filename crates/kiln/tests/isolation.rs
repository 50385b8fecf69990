//! The attacks of issue "Isolation between users", played by a hostile
//! user against a real server run as root (as kiln runs on a lab's GPU
//! server), with bubblewrap: each one gets an error or nothing, while the
//! same legitimate flow still works. Each of these passed its attack on the
//! kiln before this issue (links followed at launch, shared process table,
//! tasks as root, no process limit).
//!
//! scripts/test runs as root and installs bubblewrap, so nothing skips
//! there; elsewhere a test that cannot run says SKIPPED.

mod common;

use std::path::Path;

use common::{task, until, Server};
use serde_json::Value;

/// A sandboxed server as root, with users alice and bob; None (and a
/// SKIPPED line) where this cannot be had.
fn lab() -> Option<(Server, String, String)> {
    let root = kiln_engine::local::sandbox::running_as_root();
    let bwrap = kiln_engine::local::sandbox::find_bwrap().is_some();
    if !root || !bwrap {
        assert!(
            std::env::var_os("KILN_REQUIRE_BWRAP").is_none(),
            "KILN_REQUIRE_BWRAP is set: the isolation tests need root and bubblewrap"
        );
        eprintln!("SKIPPED: needs root and bubblewrap");
        return None;
    }
    let s = Server::start_with(&["--cpus", "16", "--memory", "32Gi", "--stop-grace", "1"]);
    let alice = token(&s, "alice");
    let bob = token(&s, "bob");
    Some((s, alice, bob))
}

fn token(s: &Server, name: &str) -> String {
    let v: Value =
        serde_json::from_str(&s.ok(&["user", "add", name, "-o", "json"])).expect("token json");
    v["token"].as_str().expect("token").to_owned()
}

fn put_as(s: &Server, token: &str, path: &str, body: &str) {
    let (status, v) = s.api_as(token, "PUT", &format!("/files/{path}"), Some(body));
    assert_eq!(status, 201, "{v}");
}

/// Finding 1: a failing attempt swaps its mounted folder for a link (to
/// another user's space, to the data folder, to /etc); the retry must not
/// get the link's target bound. One job per link, so each is refused on
/// its own.
#[test]
fn links_planted_by_a_failing_attempt_are_not_followed_by_the_retry() {
    let Some((s, alice, bob)) = lab() else { return };
    put_as(&s, &bob, "private/secret.txt", "bob-secret-1234");
    // A name of this run's own in /etc: an earlier run against a kiln
    // without the fix leaves its file behind.
    let etc_mark = format!("kiln-pwned-{}", std::process::id());
    let attacks = [
        (
            "bob",
            "../bob",
            "cat /d/private/secret.txt; echo pwned > /d/pwned",
        ),
        ("root", "../..", "cat /d/admin.token; echo pwned > /d/pwned"),
        ("etc", "/etc", &*format!("echo pwned > /d/{etc_mark}")),
    ];
    let mut ids = Vec::new();
    for (name, link, payload) in attacks {
        put_as(&s, &alice, &format!("{name}/a.txt"), "alice");
        ids.push(s.submit_as(&alice,
            name,
            &format!(
                "name: {name}\nretryCount: 1\nmounts:\n  - {{space: {name}, target: /d}}\ncommand: |\n  if [ \"$KILN_ATTEMPT\" = 0 ]; then\n    cd /; rm -rf /mnt/{name}; ln -s {link} /mnt/{name}; exit 1\n  fi\n  {payload}\n"
            ),
        ));
    }
    for id in &ids {
        let j = s.ended(id, 60);
        assert_eq!(j["state"], "FAILED", "{j}");
        let t = task(&j, "main-0");
        assert_eq!(t["attempt"], 1, "{j}");
        let reason = t["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("LaunchFailed") && reason.contains("leads out of it"),
            "the retry must refuse the link: {j}"
        );
        let log = s.logs(id, "main-0");
        assert!(
            !log.contains("bob-secret") && !log.contains(&s.token),
            "{log}"
        );
    }
    let data = s.data.path();
    assert!(!data.join("spaces/bob/pwned").exists());
    assert!(!data.join("pwned").exists());
    assert!(!Path::new("/etc").join(&etc_mark).exists());
}

/// A link left where a mount point inside the space goes: bwrap, as root,
/// would make the mount point through it, on the host. The supervisor makes
/// mount points in the space itself, never through a link, so the job is
/// refused; a read-only mount inside the space stays read-only.
#[test]
fn a_link_at_a_mount_point_in_the_space_makes_nothing_on_the_host() {
    let Some((s, alice, _bob)) = lab() else {
        return;
    };
    let mark = format!("kiln-target-{}", std::process::id());
    put_as(&s, &alice, "data/a.txt", "alice");
    let plant = s.submit_as(
        &alice,
        "plant",
        &format!("name: plant\ncommand: 'ln -s ../../oldroot/etc/{mark} /mnt/victim'\n"),
    );
    assert_eq!(s.ended(&plant, 30)["state"], "SUCCEEDED");
    let id = s.submit_as(&alice,
        "victim",
        "name: victim\nmounts:\n  - {space: data, target: /mnt/victim}\ncommand: 'ls /mnt/victim'\n",
    );
    let j = s.ended(&id, 30);
    let reason = task(&j, "main-0")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("leads out of it"), "{j}");
    assert!(!Path::new("/etc").join(&mark).exists());
    // The legitimate case: a mount point made in the space, read-only.
    let id = s.submit_as(&alice,
        "inside",
        "name: inside\nmounts:\n  - {space: data, target: /mnt/deep/ro, readOnly: true}\ncommand: 'cat /mnt/deep/ro/a.txt; echo; touch /mnt/deep/ro/b 2>/dev/null || echo read-only'\n",
    );
    let j = s.wait_state(&id, "SUCCEEDED", 30);
    assert_eq!(s.logs(&id, "main-0"), "alice\nread-only\n", "{j}");
}

/// Findings 2: alice's task looks through /proc for bob's task and the
/// server, reads their environment and kills them.
#[test]
fn a_task_sees_and_signals_only_its_own_processes() {
    let Some((s, alice, bob)) = lab() else { return };
    let bobs = s.submit_as(
        &bob,
        "victim",
        "name: victim\nenv: {BOB_SECRET: hunter2-bob}\ncommand: 'echo up; sleep 300'\n",
    );
    s.wait_job(&bobs, 30, "bob's task up", |j| {
        j["state"] == "RUNNING" && s.logs(&bobs, "main-0").contains("up")
    });
    let victim = host_pid_of("hunter2-bob");
    let server = s.child.as_ref().expect("server").id();
    let id = s.submit_as(&alice,
        "snoop",
        &format!(
            "name: snoop\ncommand: |\n  id -u\n  grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status | tr -d '\\t'\n  ps -e -o pid= | wc -l | sed 's/^ */procs=/'\n  cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep BOB_SECRET || echo no-secret\n  ls /proc/{victim}/root/mnt 2>/dev/null && echo saw-bobs-space || echo no-root\n  kill -9 {victim} 2>/dev/null && echo killed-bob || echo bob-unreachable\n  kill -9 {server} 2>/dev/null && echo killed-server || echo server-unreachable\n  kill -9 1 2>/dev/null && echo killed-init || echo init-unreachable\n"
        ),
    );
    let j = s.ended(&id, 30);
    let log = s.logs(&id, "main-0");
    let uid: u32 = log
        .lines()
        .next()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(uid >= 1000, "tasks never run as root: {log}");
    for want in [
        "CapInh:0000000000000000",
        "CapPrm:0000000000000000",
        "CapEff:0000000000000000",
        "CapBnd:0000000000000000",
        "CapAmb:0000000000000000",
        "NoNewPrivs:1",
        "no-secret",
        "no-root",
        "bob-unreachable",
        "server-unreachable",
        "init-unreachable",
    ] {
        assert!(log.lines().any(|l| l == want), "{want} missing: {log}\n{j}");
    }
    // bash, ps, wc and bwrap's init: nothing of anyone else.
    let procs: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(usize::MAX);
    assert!(procs <= 6, "{log}");
    assert_eq!(s.job(&bobs)["state"], "RUNNING");
    assert_eq!(
        s.api("GET", "/jobs?limit=1", None).0,
        200,
        "the server lives"
    );
    // Each user's tasks are their own uid, and not alice's.
    let bob_uid = std::fs::read_to_string(format!("/proc/{victim}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    assert!(!bob_uid.is_empty() && bob_uid != "0" && bob_uid != uid.to_string());
    s.ok(&["stop", &bobs]);
}

/// The host pid of the task whose environment holds `marker`.
fn host_pid_of(marker: &str) -> u32 {
    until(10, "the victim's pid", || {
        for e in std::fs::read_dir("/proc")
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if env.windows(marker.len()).any(|w| w == marker.as_bytes())
                && cmd.starts_with(b"sleep")
            {
                return Ok(pid);
            }
        }
        Err("not yet".into())
    })
}

/// Finding 3: a task replaces Output with a link to a host folder; the next
/// job must not make the server create its folders there.
#[test]
fn the_server_creates_nothing_where_an_output_link_points() {
    let Some((s, alice, _bob)) = lab() else {
        return;
    };
    let target = tempfile::Builder::new()
        .prefix("kiln-output-link")
        .tempdir_in("/var/tmp")
        .expect("tmp");
    let first = s.submit_as(
        &alice,
        "plant",
        &format!(
            "name: plant\ncommand: 'cd /; rm -rf /mnt/Output && ln -s {} /mnt/Output'\n",
            target.path().display()
        ),
    );
    s.ended(&first, 30);
    let second = s.submit_as(&alice, "after", "name: after\ncommand: 'echo ok'\n");
    // The job waits, saying why; nothing appears where the link points.
    let j = s.wait_job(&second, 30, "a reason to wait", |j| {
        j["pendingReason"]
            .as_str()
            .is_some_and(|r| r.contains("not followed"))
    });
    assert_eq!(j["state"], "WAITING", "{j}");
    assert_eq!(std::fs::read_dir(target.path()).expect("ls").count(), 0);
    // Once the link is gone the job runs: the user can repair it.
    let space = s.data.path().join("spaces/alice");
    std::fs::remove_file(space.join("Output")).expect("unlink");
    let j = s.wait_state(&second, "SUCCEEDED", 60);
    assert_eq!(s.logs(&second, "main-0"), "ok\n", "{j}");
}

/// Finding 6: a fork bomb is held to the task's pids limit, reported like
/// OOMKilled; the job's own `pids` sets another limit.
#[test]
fn a_task_is_held_to_its_process_limit() {
    let Some((s, alice, _bob)) = lab() else {
        return;
    };
    let bomb = "import os, sys\nn = 0\ntry:\n    for i in range(5000):\n        os.posix_spawn('/bin/sleep', ['sleep', '120'], {})\n        n += 1\nexcept OSError as e:\n    print('refused after', n, e.errno)\n    sys.exit(3)\nprint('started', n)\n";
    put_as(&s, &alice, "bomb.py", bomb);
    let id = s.submit_as(
        &alice,
        "bomb",
        "name: bomb\ncommand: 'python3 /mnt/bomb.py'\n",
    );
    let j = s.ended(&id, 120);
    let log = s.logs(&id, "main-0");
    assert!(log.starts_with("refused after"), "{log}");
    let n: u32 = log
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX);
    assert!((4000..4096).contains(&n), "default limit 4096: {log}");
    assert_eq!(task(&j, "main-0")["reason"], "PidsLimitReached", "{j}");
    // Per job.
    let id = s.submit_as(
        &alice,
        "small",
        "name: small\npids: 50\ncommand: 'python3 /mnt/bomb.py'\n",
    );
    let j = s.ended(&id, 60);
    let log = s.logs(&id, "main-0");
    let n: u32 = log
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX);
    assert!(n < 50, "{log}");
    assert_eq!(task(&j, "main-0")["reason"], "PidsLimitReached", "{j}");
    // `kiln nodes` says so.
    let nodes = s.ok(&["nodes"]);
    assert!(
        nodes.contains("processes: enforced") && nodes.contains("own unprivileged uid"),
        "{nodes}"
    );
}

/// Permissions hold where the sandbox does not: an unsandboxed task of
/// alice reads neither the store, the tokens nor bob's space, and the
/// space she writes is hers on disk.
#[test]
fn without_the_sandbox_permissions_keep_users_apart() {
    if !kiln_engine::local::sandbox::running_as_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let s = Server::start_with(&["--cpus", "8", "--memory", "16Gi", "--no-sandbox"]);
    let alice = token(&s, "alice");
    let bob = token(&s, "bob");
    put_as(&s, &bob, "private/secret.txt", "bob-secret-1234");
    let bobs = s.submit_as(&bob,
        "bobs",
        "name: bobs\ncommand: 'echo bob-log-secret; echo bob-out-secret > out.txt; echo bob-err >&2'\n",
    );
    let bj = s.ended(&bobs, 30);
    assert_eq!(bj["state"], "SUCCEEDED", "{bj}");
    let bkey = bj["tasks"][0]["dir"]
        .as_str()
        .and_then(|d| d.split("/jobs/").nth(1))
        .and_then(|d| d.split('/').next())
        .unwrap_or("1")
        .to_owned();
    let data = s.data.path().display().to_string();
    let id = s.submit_as(&alice,
        "peek",
        &format!(
            "name: peek\ncommand: |\n  id -u\n  cat {data}/admin.token 2>/dev/null || echo no-token\n  cat {data}/kiln.db >/dev/null 2>&1 || echo no-store\n  cat {data}/spaces/bob/private/secret.txt 2>/dev/null || echo no-bob\n  ls {data}/jobs >/dev/null 2>&1 || echo no-jobs-list\n  cat {data}/jobs/{bkey}/attempt-0/main-0/stdout.log {data}/jobs/{bkey}/attempt-0/main-0/output.log {data}/jobs/{bkey}/attempt-0/main-0/stderr.log {data}/jobs/{bkey}/attempt-0/main-0/launch.json 2>/dev/null || echo no-bob-logs\n  cat {data}/jobs/{bkey}/output/out.txt 2>/dev/null || echo no-bob-output\n  ls {data}/jobs/{bkey} >/dev/null 2>&1 || echo no-bob-job-list\n  echo mine > out.txt && echo wrote\n"
        ),
    );
    let j = s.ended(&id, 30);
    let log = s.logs(&id, "main-0");
    assert_eq!(j["state"], "SUCCEEDED", "{j}\n{log}");
    assert!(!log.lines().next().unwrap_or("0").starts_with('0'), "{log}");
    for secret in ["bob-log-secret", "bob-out-secret", "bob-err", "bob-secret"] {
        assert!(!log.contains(secret), "{log}");
    }
    for want in [
        "no-token",
        "no-store",
        "no-bob",
        "no-jobs-list",
        "no-bob-logs",
        "no-bob-output",
        "no-bob-job-list",
        "wrote",
    ] {
        assert!(log.lines().any(|l| l == want), "{want}: {log}");
    }
}

/// The legitimate flows beside the attacks: a file uploaded through the API
/// is the user's on disk, a task writes next to it, the space is closed to
/// others, and the seed's `cd /mnt/<folder>; python3 ...` runs.
#[test]
fn the_space_belongs_to_its_user_and_the_seed_flow_runs() {
    let Some((s, alice, _bob)) = lab() else {
        return;
    };
    put_as(&s, &alice, "mnist/train.py", "print('training')\n");
    let id = s.submit_as(&alice,
        "seed",
        "name: seed\ncommand: 'cd /mnt/mnist; python3 train.py; echo w > /mnt/mnist/written; id -un 2>/dev/null; echo $USER $HOME'\n",
    );
    let j = s.wait_state(&id, "SUCCEEDED", 60);
    let log = s.logs(&id, "main-0");
    assert!(log.starts_with("training\n"), "{log}\n{j}");
    assert!(log.contains("alice /mnt"), "{log}");
    use std::os::unix::fs::MetadataExt;
    let space = s.data.path().join("spaces/alice");
    let owner = std::fs::metadata(&space).expect("space").uid();
    assert!(owner >= 1000);
    assert_eq!(std::fs::metadata(&space).expect("space").mode() & 0o077, 0);
    for f in ["mnist", "mnist/train.py", "mnist/written"] {
        assert_eq!(
            std::fs::metadata(space.join(f)).expect(f).uid(),
            owner,
            "{f}"
        );
    }
    let (status, v) = s.api("GET", "/users", None);
    assert_eq!(status, 200);
    let listed = v
        .as_array()
        .into_iter()
        .flatten()
        .find(|u| u["name"] == "alice")
        .map(|u| u["uid"].as_u64())
        .unwrap_or_default();
    assert_eq!(listed, Some(u64::from(owner)));
}

/// A library of the user's that, loaded by a process running as root,
/// leaves `pwned` beside itself, and otherwise says which uid loaded it.
/// None (and SKIPPED) without a C compiler.
pub fn preload_library(dir: &Path) -> Option<std::path::PathBuf> {
    std::fs::create_dir_all(dir).expect("library folder");
    let mark = dir.join("pwned");
    let src = dir.join("p.c");
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n#include <unistd.h>\n\
             __attribute__((constructor)) static void p(void) {{\n\
               if (geteuid() == 0) {{ FILE *f = fopen(\"{}\", \"a\"); if (f) {{ fprintf(f, \"root %d\\n\", getpid()); fclose(f); }} }}\n\
               else fprintf(stderr, \"preloaded as uid %d\\n\", (int)getuid());\n\
             }}\n",
            mark.display()
        ),
    )
    .expect("source");
    let lib = dir.join("p.so");
    let built = std::process::Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status();
    if !built.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("KILN_REQUIRE_BWRAP").is_none(),
            "KILN_REQUIRE_BWRAP is set: this test needs gcc"
        );
        eprintln!("SKIPPED: no gcc to build the library");
        return None;
    }
    Some(lib)
}

/// A user's environment is the task's alone: what the dynamic loader acts
/// on at a program's start (`LD_PRELOAD`, `GLIBC_TUNABLES`, ...) must never
/// reach the helpers kiln runs as root to set the task up (bwrap, setpriv),
/// where it ran the user's code as root; inside the task it still works.
#[test]
fn loader_variables_reach_the_task_and_never_a_root_helper() {
    let Some((s, alice, _bob)) = lab() else {
        return;
    };
    let dir = s.data.path().join("lib");
    let Some(lib) = preload_library(&dir) else {
        return;
    };
    put_as(&s, &alice, "readme.txt", "space made");
    std::fs::copy(&lib, s.data.path().join("spaces/alice/p.so")).expect("copied into the space");
    let id = s.submit_as(
        &alice,
        "preload",
        &format!(
            "name: preload\nenv:\n  LD_PRELOAD: {} /mnt/p.so\n  GLIBC_TUNABLES: glibc.malloc.check=3\ncommand: 'echo ran'\n",
            lib.display()
        ),
    );
    let j = s.ended(&id, 60);
    let log = s.logs(&id, "main-0");
    let pwned = std::fs::read_to_string(dir.join("pwned")).unwrap_or_default();
    assert!(pwned.is_empty(), "the user's library ran as root: {pwned}");
    assert_eq!(j["state"], "SUCCEEDED", "{j}\n{log}");
    assert!(log.contains("preloaded as uid 15"), "{log}");
    assert!(log.contains("ran"), "{log}");
}
