//! Jobs that name an image, run by a real podman (runc as its runtime: crun
//! refuses this machine's hybrid cgroups) against a real registry
//! (Debian's docker-registry on a free port), with images made here:
//! `kiln-test/busybox` from busybox-static, `kiln-test/python` from
//! debootstrap, both made by `scripts/test`. PyTorch comes from the test
//! venv, given to every container read-only (`--container-mount`).
//!
//! scripts/test runs as root with all of it and sets
//! KILN_REQUIRE_CONTAINERS, so nothing skips there; elsewhere a test that
//! cannot run says SKIPPED.

#[allow(unused_macros)]
mod cases;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use cases::seeds::{allreduce_command, assert_model_in_space, upload_mnist};
use common::{until, Server};
use serde_json::Value;

const BUSYBOX: &str = "localhost/kiln-test/busybox";
const PYTHON: &str = "localhost/kiln-test/python";

/// The registries of this test binary: one open, one that wants a user
/// name and password (`alice`/`REGISTRY_PASSWORD`), and the
/// registries.conf that lets podman reach both over plain HTTP.
struct Registries {
    open: String,
    private: String,
    conf: PathBuf,
    _dir: tempfile::TempDir,
    _children: Vec<Child>,
}

const REGISTRY_PASSWORD: &str = "pw-Zq81-registry";

fn skip(why: &str) -> bool {
    assert!(
        std::env::var_os("KILN_REQUIRE_CONTAINERS").is_none(),
        "KILN_REQUIRE_CONTAINERS is set: {why}"
    );
    eprintln!("SKIPPED: {why}");
    true
}

fn have(program: &str) -> bool {
    kiln_engine::local::sandbox::find_program(program).is_some()
}

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .args(["--runtime", "runc"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("podman ran")
}

/// docker-registry serving from `dir` on a free port; with `htpasswd`, it
/// wants those users.
fn start_registry(dir: &Path, htpasswd: Option<&Path>) -> (String, Child) {
    std::fs::create_dir_all(dir).expect("registry dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let address = format!("127.0.0.1:{port}");
    let auth = htpasswd
        .map(|h| {
            format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                h.display()
            )
        })
        .unwrap_or_default();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n{auth}",
            dir.join("data").display()
        ),
    )
    .expect("config");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry started");
    until(30, "the registry to answer", || {
        std::net::TcpStream::connect(&address)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    (address, child)
}

fn registry() -> &'static Registries {
    static REGISTRIES: OnceLock<Registries> = OnceLock::new();
    REGISTRIES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tmp");
        // docker-registry takes bcrypt only; Python's crypt makes it.
        let hash = Command::new("python3")
            .args([
                "-W",
                "ignore",
                "-c",
                &format!("import crypt; print(crypt.crypt('{REGISTRY_PASSWORD}', crypt.mksalt(crypt.METHOD_BLOWFISH)))"),
            ])
            .output()
            .expect("python3 ran");
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(
            &htpasswd,
            format!("alice:{}", String::from_utf8_lossy(&hash.stdout).trim()),
        )
        .expect("htpasswd");
        let (open, a) = start_registry(&dir.path().join("open"), None);
        let (private, b) = start_registry(&dir.path().join("private"), Some(&htpasswd));
        let conf = dir.path().join("registries.conf");
        std::fs::write(
            &conf,
            format!(
                "[[registry]]\nlocation = \"{open}\"\ninsecure = true\n[[registry]]\nlocation = \"{private}\"\ninsecure = true\n"
            ),
        )
        .expect("registries.conf");
        Registries {
            open,
            private,
            conf,
            _dir: dir,
            _children: vec![a, b],
        }
    })
}

/// `image` pushed to this binary's registry as `name`; returns its
/// reference there (never pulled here before: the registry's port is new).
fn pushed(image: &str, name: &str) -> String {
    let target = format!("{}/kiln/{name}", registry().open);
    let out = podman(&["push", "--tls-verify=false", image, &target]);
    assert!(out.status.success(), "push {image}: {out:?}");
    target
}

/// Root, bubblewrap, podman with runc, the registry and both images; None
/// (SKIPPED) where this machine lacks one.
fn ready() -> Option<()> {
    if !kiln_engine::local::sandbox::running_as_root() {
        skip("needs root");
        return None;
    }
    for p in ["bwrap", "podman", "runc", "docker-registry"] {
        if !have(p) {
            skip(&format!("{p} is not installed (scripts/test installs it)"));
            return None;
        }
    }
    for image in [BUSYBOX, PYTHON] {
        if !podman(&["image", "exists", image]).status.success() {
            skip(&format!("no image {image} (scripts/test makes it)"));
            return None;
        }
    }
    Some(())
}

/// A server that runs images with podman, reaching the test registry, with
/// the venv (when there is one) in every container.
/// What the server's environment holds that no task may see.
const SERVER_SECRET: &str = "server-secret-7f3e";

fn server(venv: Option<&Path>) -> Server {
    let conf = registry().conf.display().to_string();
    let mut args = vec![
        "--sample-every",
        "1",
        "--cpus",
        "8",
        "--memory",
        "32Gi",
        "--stop-grace",
        "2",
        "--containers",
        "podman",
    ];
    let mount;
    if let Some(v) = venv {
        mount = v.display().to_string();
        args.extend(["--container-mount", &mount]);
    }
    Server::start_env(
        &args,
        &[
            ("CONTAINERS_REGISTRIES_CONF", &conf),
            ("KILN_TEST_ADMIN_KEY", SERVER_SECRET),
        ],
    )
}

fn token(s: &Server, name: &str) -> String {
    let v: Value =
        serde_json::from_str(&s.ok(&["user", "add", name, "-o", "json"])).expect("token json");
    v["token"].as_str().expect("token").to_owned()
}

/// The venv's folder (what `--container-mount` binds) and its bin.
fn venv() -> Option<(PathBuf, PathBuf)> {
    let bin = common::torch_bin()?;
    let root = bin.parent().expect("venv").to_owned();
    Some((root, bin))
}

/// Crater's workflow in the image: the code uploaded into the space, `cd
/// /mnt/mnist; python3 train.py` in a container of an image pulled from a
/// registry, and the model back in the space.
#[test]
fn the_crater_mnist_flow_runs_in_a_pulled_image() {
    let Some(()) = ready() else { return };
    let Some((venv, bin)) = venv() else { return };
    let image = pushed(PYTHON, "python:mnist");
    let s = server(Some(&venv));
    let local = upload_mnist(&s, &bin);
    let id = s.submit(
        "crater",
        &format!(
            "name: crater\nimage: {image}\ncpus: 2\nmemory: 4Gi\nshm: 256Mi\nenv:\n  PATH: {}:/usr/bin:/bin\ncommand: |\n  cd /mnt/mnist; python3 train.py --epochs 1\n  python3 -c 'import sys; print(\"python\", sys.version.split()[0], \"from\", sys.base_prefix)'\n",
            bin.display()
        ),
    );
    let j = s.ended(&id, 600);
    let log = s.logs(&id, "main-0");
    assert_eq!(j["state"], "SUCCEEDED", "{j}\n{log}");
    assert!(log.contains("Test set: Average loss"), "{log}");
    // The image's Python (Debian's, under /usr), not the host's.
    assert!(log.contains("from /usr"), "{log}");
    let shown = s.ok(&["show", &id]);
    assert!(
        shown.contains(&format!("main-0: pulled {image}")),
        "{shown}"
    );
    assert_model_in_space(&s, local.path());
    forget(&image);
}

/// A master and a worker in containers of their own join one gloo group
/// over the host's network.
#[test]
fn a_two_task_ddp_job_all_reduces_across_containers() {
    let Some(()) = ready() else { return };
    let Some((venv, bin)) = venv() else { return };
    let s = server(Some(&venv));
    let command = allreduce_command(&format!("{}/python3", bin.display()));
    let role = |name: &str| {
        format!(
            "  - name: {name}\n    memory: 1Gi\n    command: |\n      cat /proc/1/cgroup | grep -c libpod || true\n{command}"
        )
    };
    let id = s.submit(
        "ddp",
        &format!(
            "name: ddp\nimage: {PYTHON}\npytorch: {{}}\nroles:\n{}{}",
            role("master"),
            role("worker")
        ),
    );
    let j = s.ended(&id, 300);
    for t in ["master-0", "worker-0"] {
        let log = s.logs(&id, t);
        assert_eq!(j["state"], "SUCCEEDED", "{j}\n{t}: {log}");
        assert!(log.contains("world=2 sum=3"), "{t}: {log}");
        // In a container of the engine's (its own PID 1 is catatonit's).
        assert!(!log.starts_with("0\n"), "{t}: {log}");
    }
}

/// A stop reaches the task in its container (SIGTERM, then the grace
/// period), and the container is gone afterwards.
#[test]
fn a_stop_reaches_the_task_and_removes_its_container() {
    let Some(()) = ready() else { return };
    let s = server(None);
    let id = s.submit(
        "stopme",
        &format!(
            "name: stopme\nimage: {BUSYBOX}\ncommand: |\n  trap 'echo got TERM; exit 0' TERM\n  echo waiting\n  while true; do sleep 0.1; done\n"
        ),
    );
    until(60, "the task to print", || {
        let log = logs_now(&s, &id);
        log.contains("waiting").then_some(()).ok_or(log)
    });
    let name = container_of(&s, &id);
    assert!(running(&name), "{name} runs");
    s.ok(&["stop", &id]);
    let j = s.wait_state(&id, "STOPPED", 60);
    assert!(s.logs(&id, "main-0").contains("got TERM"), "{j}");
    assert!(!exists(&name), "{name} is removed");
}

/// Over its memory limit the task ends OOMKilled, as outside a container.
#[test]
fn a_task_over_its_memory_ends_oom_killed() {
    let Some(()) = ready() else { return };
    let s = server(None);
    let id = s.submit(
        "hog",
        &format!(
            "name: hog\nimage: {BUSYBOX}\nmemory: 128Mi\ncommand: 'a=x; while true; do a=\"$a$a\"; done'\n"
        ),
    );
    let j = s.wait_state(&id, "FAILED", 120);
    assert_eq!(j["tasks"][0]["reason"], "OOMKilled", "{j}");
    // A worker process killed while the task's main one lives on and
    // fails: still OOMKilled, as outside a container.
    let id = s.submit(
        "worker",
        &format!(
            "name: worker\nimage: {BUSYBOX}\nmemory: 128Mi\ncommand: |\n  sh -c 'a=x; while true; do a=\"$a$a\"; done' &\n  wait\n  sleep 1\n  exit 3\n"
        ),
    );
    let j = s.wait_state(&id, "FAILED", 120);
    assert_eq!(j["tasks"][0]["exitCode"], 3, "{j}");
    assert_eq!(j["tasks"][0]["reason"], "OOMKilled", "{j}");
}

/// An image no registry has fails the job at once, in the registry's
/// words, and is not retried for free.
#[test]
fn a_missing_image_fails_fast_with_the_registrys_words() {
    let Some(()) = ready() else { return };
    let s = server(None);
    let image = format!("{}/kiln/nothing-here:1", registry().open);
    let id = s.submit(
        "missing",
        &format!("name: missing\nimage: {image}\ncommand: echo never\n"),
    );
    let j = s.wait_state(&id, "FAILED", 60);
    let why = j["tasks"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let shown = s.ok(&["show", &id]);
    assert!(
        shown.contains(&format!("cannot pull image {image}")),
        "{shown}"
    );
    assert!(shown.contains("manifest unknown"), "{shown}");
    assert_eq!(j["attempt"], 0, "{j} {why}");
}

/// Another user's space is not in a container, nor reachable from it; the
/// task is its user's uid, with no capabilities, in its own PID namespace.
#[test]
fn another_users_space_is_invisible_inside() {
    let Some(()) = ready() else { return };
    let s = server(None);
    let alice = token(&s, "alice");
    let bob = token(&s, "bob");
    let (status, v) = s.api_as(
        &bob,
        "PUT",
        "/files/private/secret.txt",
        Some("bob-secret-1234"),
    );
    assert_eq!(status, 201, "{v}");
    let (status, v) = s.api_as(&alice, "PUT", "/files/mine.txt", Some("alice-file"));
    assert_eq!(status, 201, "{v}");
    let data = s.data.path().display().to_string();
    let id = s.submit_as(
        &alice,
        "peek",
        &format!(
            "name: peek\nimage: {BUSYBOX}\ncommand: |\n  id -u\n  cat /mnt/mine.txt; echo\n  grep CapEff /proc/self/status\n  ls /proc | grep -c '^[0-9]'\n  cat {data}/spaces/bob/private/secret.txt 2>/dev/null || echo no-bob-by-path\n  ls /mnt/../bob 2>/dev/null || echo no-bob-beside\n  find / -xdev -name secret.txt 2>/dev/null | head -3; echo searched\n  cat {data}/admin.token 2>/dev/null || echo no-token\n"
        ),
    );
    let j = s.ended(&id, 60);
    let log = s.logs(&id, "main-0");
    assert_eq!(j["state"], "SUCCEEDED", "{j}\n{log}");
    let uid: u64 = log.lines().next().and_then(|l| l.parse().ok()).unwrap_or(0);
    assert!(uid >= 1000, "{log}");
    for want in [
        "alice-file",
        "CapEff:\t0000000000000000",
        "no-bob-by-path",
        "no-bob-beside",
        "searched",
        "no-token",
    ] {
        assert!(log.lines().any(|l| l == want), "{want}: {log}");
    }
    assert!(!log.contains("bob-secret"), "{log}");
    assert!(!log.contains("secret.txt"), "{log}");
    // Its own processes only (sh, ls, grep and the init).
    let procs: u32 = log
        .lines()
        .nth(3)
        .and_then(|l| l.parse().ok())
        .unwrap_or(99);
    assert!(procs < 10, "{log}");
}

/// What the engine's client would act on (the loader's variables, the
/// engine's own settings) stays out of its environment: a user's
/// `CONTAINERS_CONF` could otherwise bind the host's /etc into the
/// container, and `LD_PRELOAD` run the user's code as root.
#[test]
fn the_users_environment_never_acts_on_the_engines_client() {
    let Some(()) = ready() else { return };
    let s = server(None);
    let alice = token(&s, "alice");
    let evil = s.data.path().join("evil");
    std::fs::create_dir_all(&evil).expect("dir");
    let conf = evil.join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\nvolumes = [\"/etc:/hostetc:ro\"]\ndefault_capabilities = [\"SYS_ADMIN\"]\n",
    )
    .expect("conf");
    let lib = isolation_library(&evil);
    let id = s.submit_as(
        &alice,
        "env",
        &format!(
            "name: env\nimage: {BUSYBOX}\nenv:\n  CONTAINERS_CONF: {}\n  LD_PRELOAD: {}\n  MULTI: |\n    line one\n    line two\ncommand: |\n  env | grep KILN_TEST_ADMIN_KEY || echo no-server-env\n  ls /hostetc >/dev/null 2>&1 && echo has-host-etc || echo no-host-etc\n  grep CapEff /proc/self/status\n  printf '%s' \"$MULTI\" | wc -l\n  echo \"conf=$CONTAINERS_CONF\"\n",
            conf.display(),
            lib.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
        ),
    );
    let j = s.ended(&id, 60);
    let log = s.logs(&id, "main-0");
    assert_eq!(j["state"], "SUCCEEDED", "{j}\n{log}");
    assert!(log.lines().any(|l| l == "no-host-etc"), "{log}");
    assert!(log.lines().any(|l| l == "no-server-env"), "{log}");
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    // The task itself still gets every variable, line breaks included.
    assert!(log.lines().any(|l| l.trim() == "2"), "{log}");
    assert!(log.contains(&format!("conf={}", conf.display())), "{log}");
    if lib.is_some() {
        let pwned = std::fs::read_to_string(evil.join("pwned")).unwrap_or_default();
        assert!(pwned.is_empty(), "the user's library ran as root: {pwned}");
    }
    // podman's `--env *` would bring the server's whole environment: such a
    // name is refused, and the client has none of it anyway.
    let star = s.submit_as(
        &alice,
        "star",
        &format!("name: star\nimage: {BUSYBOX}\nenv:\n  '*': |\n    a\n    b\ncommand: env | grep KILN_TEST_ADMIN_KEY || echo no-server-env\n"),
    );
    let j = s.ended(&star, 60);
    let log = s.logs(&star, "main-0");
    assert!(!log.contains(SERVER_SECRET), "{log}\n{j}");
    assert_eq!(j["state"], "FAILED", "{j}\n{log}");
    assert!(
        s.ok(&["show", &star]).contains("letters, digits and _"),
        "{j}"
    );
}

/// The library of the isolation tests: loaded as root, it leaves `pwned`.
fn isolation_library(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("p.c");
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n#include <unistd.h>\n__attribute__((constructor)) static void p(void) {{ if (geteuid() == 0) {{ FILE *f = fopen(\"{}\", \"a\"); if (f) {{ fprintf(f, \"root %d\\n\", getpid()); fclose(f); }} }} }}\n",
            dir.join("pwned").display()
        ),
    )
    .ok()?;
    let lib = dir.join("p.so");
    Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .ok()?
        .success()
        .then_some(lib)
}

/// A kill -9 of the server while a container runs: the restarted server
/// finds the same container's task again and records its end, and the
/// task ran once.
#[test]
fn a_server_killed_mid_run_reattaches_to_the_running_container() {
    let Some(()) = ready() else { return };
    let mut s = server(None);
    let id = s.submit(
        "long",
        &format!(
            "name: long\nimage: {BUSYBOX}\ncommand: |\n  echo started once\n  i=0; while [ $i -lt 600 ]; do [ -e /mnt/go ] && break; sleep 0.1; i=$((i+1)); done\n  echo finished\n"
        ),
    );
    until(60, "the task to start", || {
        let log = logs_now(&s, &id);
        log.contains("started once").then_some(()).ok_or(log)
    });
    let name = container_of(&s, &id);
    let before = container_id(&name);
    s.kill9();
    assert!(running(&name), "the container outlives the server");
    s.boot();
    s.wait_state(&id, "RUNNING", 30);
    assert_eq!(
        container_id(&name),
        before,
        "the same container, not a new one"
    );
    // The task's end comes through the restarted server.
    let (status, v) = s.api("PUT", "/files/go", Some("go"));
    assert_eq!(status, 201, "{v}");
    let j = s.wait_state(&id, "SUCCEEDED", 120);
    let log = s.logs(&id, "main-0");
    assert_eq!(log.matches("started once").count(), 1, "{log}\n{j}");
    assert!(log.contains("finished"), "{log}");
    assert_eq!(j["attempt"], 0, "{j}");
    assert!(!exists(&name), "{name} is removed");
}

/// The container of the server's one job's first task (named like its
/// cgroup: kiln-INSTANCE-KEY-a0-main-0-GEN).
fn container_of(s: &Server, _id: &str) -> String {
    let instance = std::fs::read_to_string(s.data.path().join("instance")).expect("instance");
    let prefix = format!("kiln-{}-", instance.trim());
    until(30, "the job's container", || {
        let out = podman(&["ps", "--format", "{{.Names}}"]);
        let names = String::from_utf8_lossy(&out.stdout).into_owned();
        names
            .lines()
            .find(|n| n.starts_with(&prefix) && n.contains("-a0-main-0-"))
            .map(str::to_owned)
            .ok_or(names)
    })
}

/// The first task's log so far; empty while the job waits to start.
fn logs_now(s: &Server, id: &str) -> String {
    let out = s.cli(&["logs", id, "--task", "main-0"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Drops a test registry's name of an image from podman's store (the
/// registry's port is new each run, so its names would pile up).
fn forget(image: &str) {
    let _ = podman(&["rmi", "--force", image]);
}

fn running(name: &str) -> bool {
    String::from_utf8_lossy(&podman(&["inspect", "--format", "{{.State.Running}}", name]).stdout)
        .trim()
        == "true"
}

fn exists(name: &str) -> bool {
    podman(&["container", "exists", name]).status.success()
}

fn container_id(name: &str) -> String {
    String::from_utf8_lossy(&podman(&["inspect", "--format", "{{.Id}}", name]).stdout)
        .trim()
        .to_owned()
}

/// A private registry: a user's stored credential pulls its image (never
/// shown back), another user without one is refused by the registry even
/// though the image is now on the machine, and OpenPAI's authFile in the
/// space works as the credential.
#[test]
fn private_images_pull_with_their_users_own_credentials() {
    let Some(()) = ready() else { return };
    let r = registry();
    let image = format!("{}/kiln/private-busybox:1", r.private);
    let out = podman(&[
        "push",
        "--tls-verify=false",
        "--creds",
        &format!("alice:{REGISTRY_PASSWORD}"),
        BUSYBOX,
        &image,
    ]);
    assert!(out.status.success(), "push: {out:?}");
    let s = server(None);
    let alice = token(&s, "alice");
    let bob = token(&s, "bob");
    let job = |name: &str, extra: &str| {
        format!("name: {name}\nimage: {image}\n{extra}command: echo pulled-and-ran\n")
    };

    // Without a credential: the registry's refusal, at once.
    let refused = s.submit_as(&alice, "before", &job("before", ""));
    let j = s.wait_state(&refused, "FAILED", 60);
    let shown = s.ok(&["show", &refused]);
    assert!(
        shown.contains("unauthorized") || shown.contains("authentication required"),
        "{shown}\n{j}"
    );

    // alice stores hers: the CLI reads it from standard input.
    let mut login = Command::new(common::kiln_exe())
        .args([
            "registry",
            "login",
            &r.private,
            "-u",
            "alice",
            "--password-stdin",
        ])
        .env("KILN_URL", &s.url)
        .env("KILN_TOKEN", &alice)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("login");
    std::io::Write::write_all(
        login.stdin.as_mut().expect("stdin"),
        format!("{REGISTRY_PASSWORD}\n").as_bytes(),
    )
    .expect("password");
    let out = login.wait_with_output().expect("login ran");
    assert!(out.status.success(), "{out:?}");
    let listed = s.cli_as(&alice, &["registry", "ls", "-o", "json"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains(&r.private) && listed.contains("alice"),
        "{listed}"
    );
    let (status, v) = s.api_as(&alice, "GET", "/registries", None);
    assert_eq!(status, 200);
    assert!(
        !v.to_string().contains(REGISTRY_PASSWORD),
        "the secret is never shown: {v}"
    );
    let (_, v) = s.api_as(&bob, "GET", "/registries", None);
    assert_eq!(v, serde_json::json!([]), "bob sees none of alice's");

    let ok = s.submit_as(&alice, "with", &job("with", ""));
    let j = s.wait_state(&ok, "SUCCEEDED", 120);
    assert!(s.logs(&ok, "main-0").contains("pulled-and-ran"), "{j}");
    assert!(podman(&["image", "exists", &image]).status.success());

    // bob names the same image, now on the machine: pulled afresh with his
    // rights (none), refused.
    let theirs = s.submit_as(&bob, "bobs", &job("bobs", ""));
    let j = s.wait_state(&theirs, "FAILED", 60);
    assert!(!s.logs(&theirs, "main-0").contains("pulled-and-ran"), "{j}");

    // Nor by another name that finds it here: the tail of its name, or its
    // id (both would be another registry's image, or refused).
    let id_prefix = String::from_utf8_lossy(
        &podman(&["image", "inspect", "--format", "{{.Id}}", &image]).stdout,
    )
    .trim()
    .chars()
    .take(12)
    .collect::<String>();
    for (n, alias) in ["kiln/private-busybox:1", id_prefix.as_str()]
        .iter()
        .enumerate()
    {
        let name = format!("alias{n}");
        let spec = format!("name: {name}\nimage: {alias}\ncommand: echo pulled-and-ran\n");
        let (status, v) = s.api_as(&bob, "POST", "/jobs", Some(&spec));
        if status != 201 {
            continue; // refused at submit: fine too
        }
        let id = v["id"].as_str().expect("id").to_owned();
        let j = s.ended(&id, 60);
        assert_eq!(j["state"], "FAILED", "{alias}: {j}");
        assert!(
            !s.logs(&id, "main-0").contains("pulled-and-ran"),
            "{alias}: {j}"
        );
    }

    // OpenPAI's authFile, a file of bob's space.
    let (status, v) = s.api_as(
        &bob,
        "PUT",
        "/files/secrets/registry-auth",
        Some(&format!("{}\nalice\n{REGISTRY_PASSWORD}\n", r.private)),
    );
    assert_eq!(status, 201, "{v}");
    let with_file = s.submit_as(
        &bob,
        "file",
        &job("file", "authFile: /mnt/secrets/registry-auth\n"),
    );
    let j = s.wait_state(&with_file, "SUCCEEDED", 120);
    assert!(
        s.logs(&with_file, "main-0").contains("pulled-and-ran"),
        "{j}"
    );

    // An authFile that is a FIFO (read as root, it would hang the start)
    // fails the task at once.
    let fifo = s.data.path().join("spaces/bob/secrets/fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let hang = s.submit_as(&bob, "fifo", &job("fifo", "authFile: /mnt/secrets/fifo\n"));
    let j = s.wait_state(&hang, "FAILED", 60);
    assert!(s.ok(&["show", &hang]).contains("not a plain file"), "{j}");

    // The secret is in no job's events or logs.
    for id in [&refused, &ok, &theirs, &with_file] {
        let shown = s.ok(&["show", id]);
        assert!(!shown.contains(REGISTRY_PASSWORD), "{shown}");
    }
    let (status, _) = s.api_as(
        &alice,
        "DELETE",
        &format!("/registries/{}", r.private),
        None,
    );
    assert_eq!(status, 204);
}

/// The container's processes are the task's in its metrics: one core
/// spinning and ~200 MB held, not only the engine's client.
#[test]
fn a_containers_cpu_and_memory_are_its_tasks() {
    let Some(()) = ready() else { return };
    let s = server(None);
    let id = s.submit(
        "busy",
        &format!(
            "name: busy\nimage: {BUSYBOX}\nmemory: 1Gi\ncommand: |\n  x=$(head -c 200000000 /dev/zero | tr '\\0' a)\n  echo held\n  while :; do :; done\n"
        ),
    );
    let last = |v: &Value, name: &str| {
        v["series"].as_array().and_then(|a| {
            a.iter()
                .find(|s| s["task"] == "main-0" && s["name"] == name)?["points"]
                .as_array()?
                .last()?["value"]
                .as_f64()
        })
    };
    let (cpu, mem) = until(90, "the container's load in the metrics", || {
        let (_, v) = s.api("GET", &format!("/jobs/{id}/metrics?last=true"), None);
        let (cpu, mem) = (
            last(&v, "cpu").unwrap_or(0.0),
            last(&v, "memory").unwrap_or(0.0),
        );
        (cpu > 0.5 && mem > 190e6)
            .then_some((cpu, mem))
            .ok_or(format!("cpu={cpu} memory={mem}"))
    });
    assert!(cpu < 1.6 && mem < 1e9, "cpu={cpu} memory={mem}");
    s.ok(&["stop", &id]);
    s.wait_state(&id, "STOPPED", 60);
}

/// A restart in place runs a fresh container (its own name, /tmp and
/// cgroup) of the same image, after the back-off.
#[test]
fn a_restart_in_place_runs_a_fresh_container() {
    let Some(()) = ready() else { return };
    let s = server(None);
    let id = s.submit(
        "flaky",
        &format!(
            "name: flaky\nimage: {BUSYBOX}\nrestartPolicy: OnFailure\ncommand: |\n  echo run >> /mnt/runs\n  ls /tmp\n  touch /tmp/mine\n  if [ -e /mnt/once ]; then exit 0; fi\n  touch /mnt/once; exit 1\n"
        ),
    );
    let j = s.wait_state(&id, "SUCCEEDED", 120);
    assert_eq!(j["tasks"][0]["restarts"], 1, "{j}");
    let (status, v) = s.api("GET", "/files/runs", None);
    assert_eq!(status, 200, "{v}");
    let log = s.logs(&id, "main-0");
    // The second run's /tmp is its own: the first one's file is not there.
    assert!(!log.contains("mine"), "{log}");
}

/// Datasets and space folders in a container: a dataset at /mnt/NAME
/// read-only (its mount point made by kiln inside the space, not by the
/// runtime by path), a folder of the space at /data.
#[test]
fn datasets_and_space_folders_are_mounted_in_the_container() {
    let Some(()) = ready() else { return };
    let s = server(None);
    s.ok(&["files", "mkdir", "toy"]);
    assert_eq!(
        s.api("PUT", "/files/toy/labels.txt", Some("cat,dog")).0,
        201
    );
    s.ok(&["dataset", "add", "toy", "toy"]);
    let alice = token(&s, "alice");
    let (status, v) = s.api_as(&alice, "PUT", "/files/work/notes.txt", Some("alice-notes"));
    assert_eq!(status, 201, "{v}");
    let id = s.submit_as(
        &alice,
        "mounted",
        &format!(
            "name: mounted\nimage: {BUSYBOX}\nmounts:\n  - dataset:toy\n  - {{space: work, target: /data}}\ncommand: |\n  cat /mnt/toy/labels.txt; echo\n  touch /mnt/toy/x 2>/dev/null || echo dataset-read-only\n  cat /data/notes.txt; echo\n  echo more > /data/written && echo data-writable\n"
        ),
    );
    let j = s.ended(&id, 60);
    let log = s.logs(&id, "main-0");
    assert_eq!(j["state"], "SUCCEEDED", "{j}\n{log}");
    for want in [
        "cat,dog",
        "dataset-read-only",
        "alice-notes",
        "data-writable",
    ] {
        assert!(log.lines().any(|l| l == want), "{want}: {log}");
    }
    let (status, _) = s.api_as(&alice, "GET", "/files/work/written", None);
    assert_eq!(status, 200);
}

/// A supervisor killed with SIGKILL cannot remove its container: kiln
/// does, when it sees the run lost, so nothing runs on unwatched.
#[test]
fn a_container_whose_supervisor_was_killed_is_removed() {
    let Some(()) = ready() else { return };
    let s = server(None);
    let id = s.submit(
        "orphan",
        &format!("name: orphan\nimage: {BUSYBOX}\ncommand: echo up; sleep 600\n"),
    );
    until(60, "the task to print", || {
        let log = logs_now(&s, &id);
        log.contains("up").then_some(()).ok_or(log)
    });
    let name = container_of(&s, &id);
    let started: Value = serde_json::from_str(
        &std::fs::read_to_string(s.data.path().join("jobs/1/attempt-0/main-0/started.json"))
            .expect("started.json"),
    )
    .expect("json");
    let sup = started["supervisorPid"].as_i64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killed");
    until(60, "the orphaned container to be removed", || {
        (!exists(&name))
            .then_some(())
            .ok_or_else(|| format!("{name} still exists"))
    });
    // A platform failure: the job is tried again, in a fresh container.
    let j = s.wait_job(&id, 60, "the next attempt", |j| {
        j["attempt"] == 1 && j["state"] == "RUNNING"
    });
    assert!(
        j["reason"].as_str().unwrap_or_default().contains("Lost"),
        "{j}"
    );
    s.ok(&["stop", &id]);
    s.wait_state(&id, "STOPPED", 60);
}

/// A pull's progress is a job event while it lasts: bytes that arrived (of
/// the layers' total, where the registry says it), then `pulled`. The
/// image is 400 MB of random bytes, so the pull takes seconds here.
#[test]
fn a_pull_shows_its_progress_as_an_event() {
    let Some(()) = ready() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let blob = dir.path().join("blob");
    let made = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 400000000 /dev/urandom > {} && mkdir {d}/bin && cp /bin/busybox {d}/bin/ && ln -s busybox {d}/bin/sh",
            blob.display(),
            d = dir.path().display()
        ))
        .status()
        .expect("head");
    assert!(made.success());
    let local = format!("localhost/kiln-test/random-{}", std::process::id());
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | podman --runtime runc import - {local}",
            dir.path().display()
        ))
        .output()
        .expect("import");
    assert!(out.status.success(), "{out:?}");
    let image = pushed(&local, "random:1");
    forget(&local);
    let s = server(None);
    let id = s.submit(
        "big",
        &format!("name: big\nimage: {image}\ncommand: echo ran\n"),
    );
    let mut seen = Vec::new();
    let j = until(300, "the job to end", || {
        let (_, v) = s.api("GET", &format!("/jobs/{id}/events"), None);
        for e in v.as_array().into_iter().flatten() {
            let m = e["message"].as_str().unwrap_or_default().to_owned();
            if m.contains("pulling") && !seen.contains(&m) {
                seen.push(m);
            }
        }
        let j = s.job(&id);
        matches!(j["state"].as_str(), Some("SUCCEEDED" | "FAILED"))
            .then_some(j.clone())
            .ok_or_else(|| j.to_string())
    });
    assert_eq!(j["state"], "SUCCEEDED", "{j}");
    eprintln!("progress seen: {seen:?}");
    assert!(
        seen.iter()
            .any(|m| m.contains(" MB") && (m.contains(" of ") || m.contains("so far"))),
        "no progress seen: {seen:?}"
    );
    assert!(s
        .ok(&["show", &id])
        .contains(&format!("main-0: pulled {image}")));
    forget(&image);
}
